"""Screening of client replies before aggregation: malformed or non-finite updates are rejected.

A reply is rejected when it carries an error, lacks exactly one ArrayRecord and one MetricRecord,
has array names, shapes or dtypes other than the global model's, holds NaN/Inf, or has metric keys
other than :data:`REPLY_METRIC_KEYS` (Flower refuses to aggregate replies whose keys differ). The round goes
on with the remaining replies; with none left the global model stays as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Message

from fl_poison.core.weights import record_to_numpy


REPLY_METRIC_KEYS = ("train_loss", "num-examples", "partition_id", "malicious", "attacked", "attack_target")


def reply_problem(message: Message, global_arrays: Mapping[str, np.ndarray]) -> str | None:
    """Why ``message`` cannot be aggregated with ``global_arrays`` (None when it can)."""
    if message.has_error():
        return f"error reply: {message.error.reason}"
    content = message.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "expected one ArrayRecord and one MetricRecord"
    arrays = record_to_numpy(next(iter(content.array_records.values())))
    if set(arrays) != set(global_arrays):
        return "array names differ from the global model's"
    for name, reference in global_arrays.items():
        array = arrays[name]
        if array.shape != reference.shape:
            return f"{name}: shape {array.shape} instead of {reference.shape}"
        if array.dtype != reference.dtype:
            return f"{name}: dtype {array.dtype} instead of {reference.dtype}"
        if not np.all(np.isfinite(array)):
            return f"{name}: non-finite values"
    metrics = next(iter(content.metric_records.values()))
    if set(metrics.keys()) != set(REPLY_METRIC_KEYS):
        return f"metric keys {sorted(metrics.keys())} instead of {sorted(REPLY_METRIC_KEYS)}"
    count = metrics.get("num-examples")
    if not isinstance(count, (int, float)) or not 0 < count < math.inf:  # a MetricRecord value may also be a list
        return "num-examples missing or not positive"
    return None
