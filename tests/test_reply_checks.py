"""Screening of client replies on real Flower messages (while they are decoded), the round log's rows, and
the strategy dropping bad replies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from strategy_helpers import FakeGrid, metadata_from

from fl_poison.core.round_log import RoundLog
from fl_poison.core.round_updates import decode_round
from fl_poison.core.weights import record_to_numpy
from strategies.fedavg import FedAvg
from strategies.lab import LabStrategy
from strategies.sampling import PartitionSampler

GLOBAL = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([[0.5, -0.5]], np.float32)}
METRICS = {"train_loss": 0.5, "num-examples": 10, "partition_id": 0, "malicious": 0, "attacked": 0, "attack_target": -1}


def reply(arrays: dict[str, np.ndarray], metrics: dict | None = None, node_id: int = 100, **extra_records) -> Message:
    records = {"arrays": ArrayRecord({name: Array(value) for name, value in arrays.items()})}
    records["metrics"] = MetricRecord(METRICS if metrics is None else metrics)
    records.update(extra_records)
    return Message(RecordDict(records), metadata=metadata_from(node_id))


def screen(messages, global_arrays=GLOBAL, log: RoundLog | None = None):
    """Decode ``messages`` as a round; the screening records and the usable updates."""
    partition_of = (log or RoundLog({node: node - 100 for node in range(100, 110)})).partition_of
    updates, screened = decode_round(messages, global_arrays, partition_of)
    return screened, updates


def reply_problem(message: Message, global_arrays=GLOBAL) -> str | None:
    """The screening's verdict on one reply: None when usable, else the reason."""
    (screened,), _ = screen([message], global_arrays)
    return None if screened.status == "ok" else screened.reason


def shifted(delta: float, **overrides: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {name: (value + np.float32(delta)).astype(np.float32) for name, value in GLOBAL.items()}
    arrays.update(overrides)
    return arrays


# ---------------------------------------------------------------- reply_problem


def test_a_well_formed_reply_has_no_problem():
    assert reply_problem(reply(shifted(0.25)), GLOBAL) is None
    assert reply_problem(reply(GLOBAL), GLOBAL) is None


BAD_REPLIES = {
    "nan": (lambda: reply(shifted(0.0, w=np.array([1.0, np.nan, 3.0], np.float32))), "w: non-finite values"),
    "inf": (lambda: reply(shifted(0.0, b=np.array([[np.inf, 0.0]], np.float32))), "b: non-finite values"),
    "minus-inf": (lambda: reply(shifted(0.0, w=np.array([-np.inf, 0.0, 0.0], np.float32))), "w: non-finite values"),
    "shape": (lambda: reply(shifted(0.0, w=np.zeros(4, np.float32))), "w: shape (4,) instead of (3,)"),
    "transposed": (lambda: reply(shifted(0.0, b=np.zeros((2, 1), np.float32))), "b: shape (2, 1) instead of (1, 2)"),
    "dtype": (
        lambda: reply(shifted(0.0, w=np.array([1.0, 2.0, 3.0], np.float64))),
        "w: dtype float64 instead of float32",
    ),
    "missing-key": (lambda: reply({"w": GLOBAL["w"]}), "array names differ from the global model's"),
    "extra-key": (
        lambda: reply(shifted(0.0, extra=np.zeros(1, np.float32))),
        "array names differ from the global model's",
    ),
    "renamed-key": (
        lambda: reply({"w": GLOBAL["w"], "bias": GLOBAL["b"]}),
        "array names differ from the global model's",
    ),
    "zero-examples": (lambda: reply(GLOBAL, {**METRICS, "num-examples": 0}), "num-examples missing or not positive"),
    "negative-examples": (
        lambda: reply(GLOBAL, {**METRICS, "num-examples": -3}),
        "num-examples missing or not positive",
    ),
    "no-examples": (
        lambda: reply(GLOBAL, {k: v for k, v in METRICS.items() if k != "num-examples"}),
        "metric keys ['attack_target', 'attacked', 'malicious', 'partition_id', 'train_loss'] instead of "
        "['attack_target', 'attacked', 'malicious', 'num-examples', 'partition_id', 'train_loss']",
    ),
    "extra-metric": (
        lambda: reply(GLOBAL, {**METRICS, "bonus": 1.0}),
        "metric keys ['attack_target', 'attacked', 'bonus', 'malicious', 'num-examples', 'partition_id', 'train_loss'] "
        "instead of ['attack_target', 'attacked', 'malicious', 'num-examples', 'partition_id', 'train_loss']",
    ),
    "list-examples": (
        lambda: reply(GLOBAL, {**METRICS, "num-examples": [5, 5]}),
        "num-examples missing or not positive",
    ),
    "nan-examples": (
        lambda: reply(GLOBAL, {**METRICS, "num-examples": math.nan}),
        "num-examples missing or not positive",
    ),
    "inf-examples": (
        lambda: reply(GLOBAL, {**METRICS, "num-examples": math.inf}),
        "num-examples missing or not positive",
    ),
    "two-array-records": (
        lambda: reply(GLOBAL, more=ArrayRecord({"w": Array(GLOBAL["w"])})),
        "expected one ArrayRecord and one MetricRecord",
    ),
    "two-metric-records": (
        lambda: reply(GLOBAL, more=MetricRecord({"x": 1})),
        "expected one ArrayRecord and one MetricRecord",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_bad_replies_are_named(case):
    build, expected = BAD_REPLIES[case]
    assert reply_problem(build(), GLOBAL) == expected


def test_a_fractional_example_count_is_accepted():
    assert reply_problem(reply(GLOBAL, {**METRICS, "num-examples": 2.5}), GLOBAL) is None


def test_a_reply_without_metrics_is_a_problem():
    message = Message(
        RecordDict({"arrays": ArrayRecord({n: Array(v) for n, v in GLOBAL.items()})}), metadata=metadata_from(1)
    )
    assert reply_problem(message, GLOBAL) == "expected one ArrayRecord and one MetricRecord"


def test_an_error_reply_has_failed():
    message = Message(Error(code=3, reason="client crashed"), metadata=metadata_from(101))
    (screened,), updates = screen([message])
    assert (screened.status, screened.reason, screened.partition_id) == ("failed", "client crashed", 1)
    assert math.isnan(screened.norm) and updates.count == 0


def test_a_non_numpy_payload_is_unreadable():
    bad = Array(dtype="float32", shape=(3,), stype="other", data=b"123")
    message = reply(shifted(0.0, w=np.zeros(3, np.float32)))
    message.content["arrays"]["w"] = bad
    assert reply_problem(message).startswith("w: unreadable array (")


def test_only_usable_replies_become_rows_in_order():
    messages = [
        reply(shifted(1.0), node_id=100),
        reply(shifted(0.0, w=np.array([np.nan, 0.0, 0.0], np.float32)), node_id=101),
        reply(shifted(-2.0), node_id=102),
    ]
    screened, updates = screen(messages)
    assert [r.status for r in screened] == ["ok", "rejected", "ok"]
    assert updates.partition_ids == (0, 2)
    np.testing.assert_array_equal(updates.matrix.numpy(), [[1.0] * 5, [-2.0] * 5])


# ---------------------------------------------------------------- the round log


NODES = {0: 100, 1: 101, 2: 102, 3: 103, 4: 104}  # partition id -> node id


def test_round_log_marks_bad_replies_rejected_with_their_reason():
    log = RoundLog({node: pid for pid, node in NODES.items()})
    replies = [
        reply(shifted(1.0), node_id=100),  # update of 1.0 in each of 5 entries -> norm sqrt(5)
        reply(
            shifted(0.0, w=np.array([1.0, np.nan, 3.0], np.float32)),
            {**METRICS, "malicious": 1, "attacked": 1},
            node_id=101,
        ),
        reply(shifted(0.0, b=np.array([[np.inf, -0.5]], np.float32)), node_id=102),
        reply(shifted(0.0, w=np.zeros(4, np.float32)), node_id=103),
        reply(GLOBAL, {**METRICS, "num-examples": 0}, node_id=104),
    ]
    screened, _ = screen(replies, log=log)
    rows = {row.partition_id: row for row in log.record_screening(2, [0, 1, 2, 3, 4], screened)}

    assert rows[0].status == "ok" and rows[0].reason == ""
    assert rows[0].norm_before == pytest.approx(math.sqrt(5))

    assert (rows[1].status, rows[1].reason) == ("rejected", "w: non-finite values")
    assert math.isnan(rows[1].norm_before)
    assert (rows[1].malicious, rows[1].attacked, rows[1].num_examples) == (1, 1, 10)

    assert (rows[2].status, rows[2].reason) == ("rejected", "b: non-finite values")
    assert math.isinf(rows[2].norm_before) and rows[2].norm_before > 0

    assert (rows[3].status, rows[3].reason) == ("rejected", "w: shape (4,) instead of (3,)")
    assert math.isnan(rows[3].norm_before)  # no norm across mismatched shapes

    assert (rows[4].status, rows[4].reason) == ("rejected", "num-examples missing or not positive")
    assert math.isnan(rows[4].norm_before)
    assert rows[4].num_examples == 0


def test_round_log_survives_a_reply_missing_an_array():
    log = RoundLog({100: 0})
    screened, _ = screen([reply({"w": GLOBAL["w"]}, node_id=100)], log=log)
    (row,) = log.record_screening(1, [0], screened)
    assert row.status == "rejected" and row.reason == "array names differ from the global model's"
    assert math.isnan(row.norm_before)


# ---------------------------------------------------------------- the strategy drops rejected replies


def configured_strategy(server_round: int = 1) -> tuple[LabStrategy, RoundLog]:
    sampler = PartitionSampler({0: 100, 1: 101, 2: 102}, per_round=3, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = LabStrategy(sampler=sampler, round_log=log, defense=FedAvg())
    arrays = ArrayRecord({name: Array(value) for name, value in GLOBAL.items()})
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), FakeGrid([100, 101, 102])))
    assert sorted(message.metadata.dst_node_id for message in messages) == [100, 101, 102]
    return strategy, log


def test_aggregate_train_drops_a_nan_reply(server_task_identity):
    strategy, log = configured_strategy()
    good = shifted(0.75)
    bad = shifted(0.0, w=np.array([np.nan, 0.0, 0.0], np.float32))
    arrays, metrics = strategy.aggregate_train(1, [reply(bad, node_id=101), reply(good, node_id=100)])
    assert arrays is not None
    result = record_to_numpy(arrays)
    assert set(result) == set(good)
    for name in good:
        np.testing.assert_array_equal(result[name], good[name])
    assert metrics["train_loss"] == pytest.approx(0.5)
    statuses = {row.partition_id: row.status for row in log.for_round(1)}
    assert statuses == {0: "ok", 1: "rejected", 2: "failed"}


def test_aggregate_train_averages_the_accepted_replies_by_examples(server_task_identity):
    strategy, _ = configured_strategy()
    first, second = shifted(1.0), shifted(-1.0)
    replies = [
        reply(first, {**METRICS, "num-examples": 30}, node_id=102),
        reply(shifted(0.0, b=np.zeros((2, 1), np.float32)), {**METRICS, "num-examples": 1000}, node_id=101),
        reply(second, {**METRICS, "num-examples": 10}, node_id=100),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    result = record_to_numpy(arrays)
    for name, value in GLOBAL.items():
        # (30 * (g + 1) + 10 * (g - 1)) / 40 = g + 0.5; the 1000-example malformed reply is ignored
        np.testing.assert_allclose(result[name], value.astype(np.float64) + 0.5, rtol=0, atol=1e-6)


def test_aggregate_train_with_only_bad_replies_keeps_the_global_model(server_task_identity):
    strategy, log = configured_strategy()
    replies = [
        reply(shifted(0.0, w=np.array([np.nan, 0.0, 0.0], np.float32)), node_id=100),
        reply(shifted(0.0, b=np.array([[np.inf, 0.0]], np.float32)), node_id=101),
        reply(GLOBAL, {**METRICS, "num-examples": 0}, node_id=102),
    ]
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert [row.status for row in log.for_round(1)] == ["rejected", "rejected", "rejected"]


def test_aggregate_train_with_no_replies_keeps_the_global_model(server_task_identity):
    strategy, log = configured_strategy()
    assert strategy.aggregate_train(1, []) == (None, None)
    assert [row.status for row in log.for_round(1)] == ["failed", "failed", "failed"]


def test_aggregate_train_drops_replies_with_unusable_example_counts(server_task_identity):
    strategy, log = configured_strategy()
    good = shifted(-0.25)
    replies = [
        reply(good, node_id=101),
        reply(shifted(5.0), {**METRICS, "num-examples": [10, 10]}, node_id=100),  # a list: no weight
        reply(shifted(9.0), {**METRICS, "num-examples": math.inf}, node_id=102),  # would make every weight NaN
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    result = record_to_numpy(arrays)
    for name in good:
        np.testing.assert_array_equal(result[name], good[name])
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert {pid: row.status for pid, row in rows.items()} == {0: "rejected", 1: "ok", 2: "rejected"}
    assert rows[0].num_examples == 0 and rows[2].num_examples == 0  # not a usable count
    assert rows[1].num_examples == 10
