"""Hostile clients cannot take over the server: property-based rounds of malformed train replies.

Hypothesis builds rounds of 3-7 real Flower reply Messages (partitions 0..6), each well-formed or
broken in one of :data:`MALFORMATIONS` ways, and every registered defense aggregates them: at least
:data:`MALFORMED_PER_DEFENSE` malformed replies each (the hardening issue's acceptance). However
broken the round, ``aggregate_train`` returns; the model it returns has the global model's names,
shapes and dtypes and only finite values; the RoundLog has a row per reply, and a reply broken in a
way the screening must catch is never ``ok``. Replies whose metrics merely lie (``partition_id``,
a NaN or infinite ``train_loss``) are tolerated by the screening: the partition comes from the sending node.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategy_helpers import (
    BASE_METRICS,
    NODE_OFFSET,
    client_weights,
    make_global,
    metadata_from,
    node_map,
    root_training,
    start_round,
)

from fl_poison.apps.algorithms import catalogue, experiment_config
from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.registry import build_strategy
from strategies.sampling import PartitionSampler

NUM_CLIENTS = 7
GLOBAL = make_global()
MALFORMED_PER_DEFENSE = 1000
# Rounds generated per defense: a round has 3-7 replies (4.9 on average), about a third of them
# "fine" (FINE_SHARE; 22 of the 64 entries of REPLY_KINDS), so ~3.2 malformed per round, ~1,290 in all.
ROUNDS_PER_DEFENSE = 400
FINE_SHARE = 1 / 3

# Broken in a way the screening must catch: such a reply is never "ok".
REJECTED_KINDS = (
    "error",
    "no-arrays",
    "no-metrics",
    "extra-arrays",
    "extra-metrics",
    "arrays-as-config",
    "metrics-as-config",
    "array-missing",
    "array-extra",
    "array-renamed",
    "wrong-shape",
    "scalar-array",
    "float64",
    "int32",
    "float16",
    "bool",
    "nan",
    "inf",
    "empty-array",
    "garbage-bytes",
    "unknown-dtype",
    "truncated-bytes",
    "other-stype",
    "metric-key-missing",
    "metric-key-extra",
    "metric-string",
    "metric-bytes",
    "metric-bool",
    "num-examples-zero",
    "num-examples-negative",
    "num-examples-nan",
    "num-examples-inf",
    "num-examples-list",
    "num-examples-missing",
    "num-examples-huge",
    "train-loss-list",
    "flags-list",
)
# Odd but usable: the screening may accept these; aggregation must still stay finite.
TOLERATED_KINDS = (
    "fine",
    "huge-finite",
    "num-examples-tiny",
    "train-loss-nan",
    "train-loss-inf",
    "partition-id-lie",
)
MALFORMATIONS = REJECTED_KINDS + TOLERATED_KINDS
# What a reply is drawn from: every malformation once, and "fine" repeated to make up FINE_SHARE.
REPLY_KINDS = MALFORMATIONS + ("fine",) * round(FINE_SHARE * len(MALFORMATIONS) / (1 - FINE_SHARE))


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Flower stamps instructions with the running task's identity (set once per test, not per example)."""
    saved = {key: getattr(TaskIdentity, key) for key in ("_run_id", "_node_id", "_task_id")}
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 1
    yield
    for key, value in saved.items():
        setattr(TaskIdentity, key, value)


def npy_array(values: np.ndarray) -> Array:
    return Array(np.array(values, copy=True))


def raw_metrics(values: dict[str, object]) -> MetricRecord:
    """A MetricRecord holding values Flower's own constructor would refuse (as a hostile serializer could)."""
    record = MetricRecord({})
    record._data.update(values)
    return record


def build_reply(kind: str, partition_id: int, seed: int) -> Message:
    """A train reply of ``partition_id``, broken as ``kind`` says."""
    rng = np.random.default_rng(seed)
    weights = client_weights(GLOBAL, rng.normal(0.0, 0.01, 15))
    metrics: dict[str, object] = {
        **BASE_METRICS,
        "num-examples": int(rng.integers(1, 50)),
        "train_loss": float(rng.uniform(0.1, 2.0)),
        "partition_id": partition_id,
    }
    arrays: dict[str, Array] = {name: npy_array(value) for name, value in weights.items()}
    name = ("w", "b")[int(rng.integers(2))]
    shape = GLOBAL[name].shape
    if kind == "error":
        return Message(metadata=metadata_from(NODE_OFFSET + partition_id), error=Error(code=0, reason="client crashed"))
    if kind == "huge-finite":
        arrays[name] = npy_array(np.full(shape, 1e38, dtype=np.float32))
    elif kind == "array-missing":
        del arrays[name]
    elif kind == "array-extra":
        arrays["extra"] = npy_array(np.zeros(3, dtype=np.float32))
    elif kind == "array-renamed":
        arrays[name + "_renamed"] = arrays.pop(name)
    elif kind == "wrong-shape":
        arrays[name] = npy_array(np.zeros((shape[0] + 1, *shape[1:]), dtype=np.float32))
    elif kind == "scalar-array":
        arrays[name] = npy_array(np.array(1.0, dtype=np.float32))
    elif kind in ("float64", "int32", "float16", "bool"):
        arrays[name] = npy_array(weights[name].astype(kind))
    elif kind in ("nan", "inf"):
        broken = weights[name].copy()
        broken.flat[int(rng.integers(broken.size))] = np.nan if kind == "nan" else -np.inf
        arrays[name] = npy_array(broken)
    elif kind == "empty-array":
        arrays[name] = npy_array(np.zeros((0,), dtype=np.float32))
    elif kind == "garbage-bytes":
        arrays[name] = Array(
            dtype="float32", shape=shape, stype="numpy.ndarray", data=rng.bytes(int(rng.integers(0, 80)))
        )
    elif kind == "unknown-dtype":
        arrays[name] = Array(dtype="complex-ish", shape=shape, stype="numpy.ndarray", data=b"\x00" * 48)
    elif kind == "truncated-bytes":
        whole = arrays[name].data
        arrays[name] = Array(dtype="float32", shape=shape, stype="numpy.ndarray", data=whole[: len(whole) - 8])
    elif kind == "other-stype":
        arrays[name] = Array(dtype="float32", shape=shape, stype="torch.Tensor", data=arrays[name].data)
    elif kind == "metric-key-missing":
        del metrics[("malicious", "attack_target", "train_loss")[int(rng.integers(3))]]
    elif kind == "metric-key-extra":
        metrics["accuracy"] = 0.9
    elif kind == "num-examples-missing":
        del metrics["num-examples"]
    elif kind.startswith("num-examples-"):
        metrics["num-examples"] = {
            "num-examples-zero": 0,
            "num-examples-negative": -int(rng.integers(1, 100)),
            "num-examples-nan": float("nan"),
            "num-examples-inf": float("inf"),
            "num-examples-list": [10, 10],
            "num-examples-huge": 1e308,
            "num-examples-tiny": 5e-324,
        }[kind]
    elif kind.startswith("train-loss-"):
        metrics["train_loss"] = {"train-loss-nan": float("nan"), "train-loss-inf": float("inf")}.get(kind, [0.5, 0.1])
    elif kind == "partition-id-lie":
        metrics["partition_id"] = (partition_id + 1 + int(rng.integers(NUM_CLIENTS - 1))) % NUM_CLIENTS
    elif kind == "flags-list":
        metrics["malicious"] = [1, 0]
        metrics["attack_target"] = [3.0]
    metric_record = MetricRecord(metrics)
    if kind in ("metric-string", "metric-bytes", "metric-bool"):
        key = ("train_loss", "num-examples", "attacked")[int(rng.integers(3))]
        value = {"metric-string": "10", "metric-bytes": b"\x00\x01", "metric-bool": True}[kind]
        metric_record = raw_metrics({**metrics, key: value})
    records: dict[str, object] = {"arrays": ArrayRecord(arrays), "metrics": metric_record}
    if kind == "no-arrays":
        del records["arrays"]
    elif kind == "no-metrics":
        del records["metrics"]
    elif kind == "extra-arrays":
        records["more-arrays"] = ArrayRecord({key: npy_array(value) for key, value in weights.items()})
    elif kind == "extra-metrics":
        records["more-metrics"] = MetricRecord(dict(metrics))
    elif kind == "arrays-as-config":
        records["arrays"] = ConfigRecord({key: value.tobytes() for key, value in weights.items()})
    elif kind == "metrics-as-config":
        records["metrics"] = ConfigRecord(dict(metrics))
    elif kind == "fine" and rng.integers(2):
        records = {"model": records["arrays"], "train": records["metrics"]}  # other record names are fine
    return Message(RecordDict(records), metadata=metadata_from(NODE_OFFSET + partition_id))  # type: ignore[arg-type]


@st.composite
def rounds(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """3-7 distinct partitions, each with a kind of reply and a seed for its values."""
    partitions = draw(st.lists(st.integers(0, NUM_CLIENTS - 1), min_size=3, max_size=NUM_CLIENTS, unique=True))
    kinds = st.sampled_from(REPLY_KINDS)
    return [(draw(kinds), pid, draw(st.integers(0, 2**16))) for pid in partitions]


@pytest.mark.parametrize("name", catalogue().defense_names())
def test_malformed_rounds_never_break_aggregation(name):
    config = experiment_config({"num-clients": NUM_CLIENTS, "malicious-ids": "5", "strategy": name})
    sampler = PartitionSampler(node_map(NUM_CLIENTS), NUM_CLIENTS, seed=0)
    round_log = RoundLog(sampler.partition_of_node)
    strategy = build_strategy(config, sampler, round_log, root_training=root_training)
    counter = iter(range(1, 10**6))
    malformed = 0

    @settings(
        max_examples=ROUNDS_PER_DEFENSE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(rounds())
    def check(round_spec: list[tuple[str, int, int]]) -> None:
        nonlocal malformed
        server_round = next(counter)
        malformed += sum(kind != "fine" for kind, _, _ in round_spec)
        start_round(strategy, GLOBAL, NUM_CLIENTS, server_round=server_round)
        replies = [build_reply(kind, pid, seed) for kind, pid, seed in round_spec]

        arrays, _ = strategy.aggregate_train(server_round, replies)

        if arrays is not None:
            result = record_to_numpy(arrays)
            assert set(result) == set(GLOBAL)
            for key, value in GLOBAL.items():
                assert result[key].shape == value.shape and result[key].dtype == value.dtype, key
                assert np.all(np.isfinite(result[key])), (key, round_spec)
        rows = {row.partition_id: row for row in round_log.for_round(server_round)}
        assert sorted(rows) == list(range(NUM_CLIENTS))
        sent = {pid: kind for kind, pid, _ in round_spec}
        for pid, row in rows.items():
            assert row.status in ("ok", "rejected", "failed"), row
            if pid not in sent:
                assert (row.status, row.reason) == ("failed", "no reply")
            elif sent[pid] in REJECTED_KINDS:
                assert row.status != "ok", (sent[pid], row)
        if all(kind in REJECTED_KINDS for kind, _, _ in round_spec):
            assert arrays is None

    check()
    assert malformed >= MALFORMED_PER_DEFENSE, f"only {malformed} malformed replies in {next(counter) - 1} rounds"
