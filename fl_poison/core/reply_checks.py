"""The contract every train reply must meet before aggregation, one check per part of a reply.

A reply is rejected when it carries an error, lacks exactly one ArrayRecord and one MetricRecord,
has array names, shapes or dtypes other than the global model's, holds NaN/Inf, or has metric keys
other than :data:`REPLY_METRIC_KEYS` (Flower refuses to aggregate replies whose keys differ) or values
other than numbers (lists, which Flower cannot average with other replies' numbers, strings, bytes, bools), or no
positive ``num-examples`` of at most 2**53. The round goes on with the remaining replies; with none left the
global model stays as it was. :func:`fl_poison.core.round_updates.decode_round` applies the checks
in that order while it decodes each reply (once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Message

MAX_NUM_EXAMPLES = 2**53  # exact in float64; a round's total stays finite (1e308 each overflows the sum)
REPLY_METRIC_KEYS = ("train_loss", "num-examples", "partition_id", "malicious", "attacked", "attack_target")


def envelope_problem(message: Message) -> str | None:
    """An error reply, or not exactly one ArrayRecord and one MetricRecord (None when fine)."""
    if message.has_error():
        return f"error reply: {message.error.reason}"
    content = message.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "expected one ArrayRecord and one MetricRecord"
    return None


def array_problem(name: str, array: np.ndarray, reference: np.ndarray) -> str | None:
    """``array`` has another shape or dtype than the global model's ``reference`` (None when not)."""
    if array.shape != reference.shape:
        return f"{name}: shape {array.shape} instead of {reference.shape}"
    if array.dtype != reference.dtype:
        return f"{name}: dtype {array.dtype} instead of {reference.dtype}"
    return None


def non_finite_problem(name: str) -> str:
    """The problem of an array holding NaN or Inf."""
    return f"{name}: non-finite values"


def unreadable_problem(name: str, error: Exception) -> str:
    """The problem of an array whose bytes are not a numpy payload."""
    return f"{name}: unreadable array ({error})"


def _metric_value(value: object) -> bool:
    """A number, not a bool: every reply metric is a scalar (Flower cannot average a list with numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_problem(metrics: Mapping[str, object]) -> str | None:
    """Other metric keys than :data:`REPLY_METRIC_KEYS`, values other than numbers, or no positive
    ``num-examples`` of at most :data:`MAX_NUM_EXAMPLES` (None when fine)."""
    if set(metrics) != set(REPLY_METRIC_KEYS):
        return f"metric keys {sorted(metrics)} instead of {sorted(REPLY_METRIC_KEYS)}"
    for key, value in metrics.items():
        # a hostile serializer can send strings, bytes or bools; num-examples has its own check below
        if key != "num-examples" and not _metric_value(value):
            return f"metric {key}: {type(value).__name__} instead of a number"
    count = metrics.get("num-examples")
    if isinstance(count, (int, float)) and MAX_NUM_EXAMPLES < count < math.inf:
        return f"num-examples above {MAX_NUM_EXAMPLES}"
    if isinstance(count, bool) or not isinstance(count, (int, float)) or not 0 < count < math.inf:
        return "num-examples missing or not positive"  # a MetricRecord value may also be a list
    return None
