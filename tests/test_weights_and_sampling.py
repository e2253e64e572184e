"""Update norms, seeded partition sampling, the grid view, per-client round records, result files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from strategy_helpers import metadata_from

from fl_poison.core import results
from fl_poison.core.results import GrowingCsv, ResultFolder, ordered_columns, read_csv, write_csv, write_json
from fl_poison.core.round_log import CLIENT_COLUMNS, RoundLog
from fl_poison.core.round_updates import decode_round
from fl_poison.core.weights import flat_update, update_norm
from strategies.sampling import PartitionSampler, SubsetGrid

# ---------------------------------------------------------------- update norms


def test_flat_update_and_norm_by_hand():
    client = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([[3.0]], np.float32), "only-client": np.ones(5)}
    reference = {"b": np.array([[-1.0]], np.float32), "a": np.array([0.5, 0.0], np.float32)}
    update = flat_update(client, reference)
    # reference order: b then a -> [3 - (-1), 1 - 0.5, 2 - 0] = [4, 0.5, 2]; client-only names are ignored.
    assert update.dtype == np.float64
    assert update.tolist() == [4.0, 0.5, 2.0]
    assert update_norm(client, reference) == pytest.approx(math.sqrt(16 + 0.25 + 4))


def test_update_norm_is_computed_in_float64():
    # In float32, 1e20**2 overflows to inf; in float64 the norm is sqrt(2) * 1e20.
    client = {"w": np.array([1e20, -1e20], np.float32)}
    reference = {"w": np.zeros(2, np.float32)}
    assert np.isinf(np.linalg.norm(np.array([1e20, -1e20], np.float32)))
    expected = math.sqrt(2) * float(np.float32(1e20))
    assert update_norm(client, reference) == pytest.approx(expected, rel=1e-12)
    # Small differences of large float32 values are exact in float64.
    client = {"w": np.array([16777216.0], np.float32)}  # 2**24
    reference = {"w": np.array([16777214.0], np.float32)}
    assert update_norm(client, reference) == 2.0


def test_update_norm_of_identical_weights_and_empty_reference():
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert update_norm(weights, weights) == 0.0
    assert update_norm(weights, {}) == 0.0


def test_missing_name_in_client_raises_key_error():
    with pytest.raises(KeyError):
        flat_update({"a": np.zeros(1)}, {"a": np.zeros(1), "b": np.zeros(1)})


# ---------------------------------------------------------------- partition sampling

NODES = {pid: 1000 + 7 * pid for pid in range(10)}  # partition id -> Flower node id


def test_sampler_draws_distinct_sorted_partition_ids():
    sampler = PartitionSampler(NODES, per_round=4, seed=3)
    for server_round in range(1, 21):
        drawn = sampler.partitions_for_round(server_round)
        assert len(drawn) == 4
        assert len(set(drawn)) == 4
        assert drawn == sorted(drawn)
        assert set(drawn) <= set(NODES)
        assert sampler.nodes_for_round(server_round) == [NODES[pid] for pid in drawn]


def test_sampler_is_deterministic_per_seed_and_round_and_independent_of_call_order():
    forward = PartitionSampler(NODES, per_round=3, seed=5)
    backward = PartitionSampler(NODES, per_round=3, seed=5)
    rounds = list(range(1, 11))
    in_order = {r: forward.partitions_for_round(r) for r in rounds}
    reversed_order = {r: backward.partitions_for_round(r) for r in reversed(rounds)}
    assert in_order == reversed_order
    assert forward.partitions_for_round(4) == in_order[4]  # asking again changes nothing
    # Rounds differ from each other, and another seed draws differently.
    assert len({tuple(drawn) for drawn in in_order.values()}) > 1
    other = PartitionSampler(NODES, per_round=3, seed=6)
    assert [other.partitions_for_round(r) for r in rounds] != [in_order[r] for r in rounds]


def test_sampler_with_per_round_equal_to_all_returns_everyone():
    sampler = PartitionSampler(NODES, per_round=10, seed=0)
    for server_round in (1, 2, 3):
        assert sampler.partitions_for_round(server_round) == list(range(10))


def test_sampler_covers_every_partition_over_many_rounds():
    sampler = PartitionSampler(NODES, per_round=2, seed=0)
    seen = {pid for r in range(1, 51) for pid in sampler.partitions_for_round(r)}
    assert seen == set(NODES)


@pytest.mark.parametrize("per_round", [0, 11])
def test_sampler_rejects_impossible_per_round(per_round):
    with pytest.raises(ValueError):
        PartitionSampler(NODES, per_round=per_round, seed=0)


class FakeGrid(Grid):
    """A grid that records what passes through it."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)
        self.calls = []
        self._run = "the-run"

    def set_run(self, run):
        self.calls.append(("set_run", run))

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        self.calls.append(("create_message", message_type, dst_node_id, group_id, ttl))
        return ("message", dst_node_id)

    def get_node_ids(self):
        return list(self.node_ids)

    def push_messages(self, messages):
        self.calls.append(("push_messages", list(messages)))
        return ["id-1"]

    def pull_messages(self, message_ids):
        self.calls.append(("pull_messages", list(message_ids)))
        return ["reply"]

    def send_and_receive(self, messages, *, timeout=None):
        self.calls.append(("send_and_receive", list(messages), timeout))
        return ["reply"]


def test_subset_grid_shows_only_the_subset_and_forwards_the_rest():
    grid = FakeGrid([11, 12, 13, 14, 15])
    view = SubsetGrid(grid, [12, 14])
    assert list(view.get_node_ids()) == [12, 14]
    assert list(grid.get_node_ids()) == [11, 12, 13, 14, 15]
    assert view.run == "the-run"
    content = RecordDict()
    assert view.create_message(content, "train", 12, "1", 30.0) == ("message", 12)
    assert view.push_messages(["m"]) == ["id-1"]
    assert view.pull_messages(["id-1"]) == ["reply"]
    view.set_run("other")
    assert grid.calls == [
        ("create_message", "train", 12, "1", 30.0),
        ("push_messages", ["m"]),
        ("pull_messages", ["id-1"]),
        ("set_run", "other"),
    ]


# ---------------------------------------------------------------- round log


COMPLETE = {"train_loss": 0.0, "num-examples": 1, "partition_id": 0, "malicious": 0, "attacked": 0, "attack_target": -1}


def reply(node_id: int, arrays: dict[str, np.ndarray], metrics: dict) -> Message:
    """A train reply with every metric key a client sends (values in ``metrics`` win)."""
    record = ArrayRecord({name: Array(value) for name, value in arrays.items()})
    content = RecordDict({"arrays": record, "metrics": MetricRecord({**COMPLETE, **metrics})})
    return Message(content, metadata=metadata_from(node_id))


def error_reply(node_id: int) -> Message:
    return Message(Error(code=0, reason="client crashed"), metadata=metadata_from(node_id))


GLOBAL = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([0.5], np.float32)}
NODE_OF = {0: 100, 1: 101, 2: 102, 3: 103}


def record(log: RoundLog, server_round: int, sampled: list[int], replies: list[Message]):
    """Screen ``replies`` (decoding them) and record the round's rows, as the strategy does."""
    _, screened = decode_round(replies, GLOBAL, log.partition_of)
    return log.record_screening(server_round, sampled, screened)


def test_round_log_records_replies_errors_and_missing_clients():
    log = RoundLog({node: pid for pid, node in NODE_OF.items()})
    replies = [
        # partition 2: update [0, -2, 1, 1.5] -> norm sqrt(0 + 4 + 1 + 2.25)
        reply(
            102,
            {"w": np.array([1.0, 0.0, 4.0], np.float32), "b": np.array([2.0], np.float32)},
            {"train_loss": 0.25, "num-examples": 40, "malicious": 1},
        ),
        # partition 0: update [1, 1, 1, 0] -> norm sqrt(3)
        reply(
            100,
            {"w": np.array([2.0, 3.0, 4.0], np.float32), "b": np.array([0.5], np.float32)},
            {"train_loss": 0.75, "num-examples": 30, "malicious": 0},
        ),
        error_reply(101),
    ]
    rows = record(log, 4, [0, 1, 2, 3], replies)

    assert [row.partition_id for row in rows] == [0, 1, 2, 3]
    by_pid = {row.partition_id: row for row in rows}
    assert by_pid[0].status == "ok" and by_pid[2].status == "ok"
    assert by_pid[0].norm_before == pytest.approx(math.sqrt(3))
    assert by_pid[2].norm_before == pytest.approx(math.sqrt(4 + 1 + 2.25))
    assert (by_pid[2].malicious, by_pid[2].num_examples, by_pid[2].loss) == (1, 40, 0.25)
    assert (by_pid[0].malicious, by_pid[0].num_examples, by_pid[0].loss) == (0, 30, 0.75)
    for failed in (1, 3):  # 1 answered with an error, 3 never answered
        assert by_pid[failed].status == "failed"
        assert math.isnan(by_pid[failed].norm_before) and math.isnan(by_pid[failed].loss)
        assert by_pid[failed].num_examples == 0
    assert all(row.round == 4 for row in rows)

    as_dicts = log.rows()
    assert len(as_dicts) == 4 and set(as_dicts[0]) == set(CLIENT_COLUMNS)
    assert log.for_round(4) == rows and log.for_round(5) == []


def test_round_log_accumulates_rounds():
    log = RoundLog({node: pid for pid, node in NODE_OF.items()})
    same = {"train_loss": 0.1, "num-examples": 5}
    record(log, 1, [0], [reply(100, GLOBAL, same)])
    record(log, 2, [1, 3], [reply(103, GLOBAL, same)])
    assert [(r["round"], r["partition_id"], r["status"]) for r in log.rows()] == [
        (1, 0, "ok"),
        (2, 1, "failed"),
        (2, 3, "ok"),
    ]
    assert log.rows()[0]["norm_before"] == 0.0


# ---------------------------------------------------------------- result files


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name not in keep)


def test_write_csv_is_atomic_and_blanks_nan(tmp_path):
    path = tmp_path / "rows.csv"
    write_csv(path, [{"a": 1, "b": math.nan, "c": 0.1}, {"a": 2, "b": None, "c": "x"}], ["a", "b", "c"])
    assert leftovers(tmp_path, {"rows.csv"}) == []
    assert path.read_text() == "a,b,c\n1,,0.1\n2,,x\n"


def test_write_json_turns_non_finite_into_null(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"acc": 0.5, "auc": math.nan, "nested": {"loss": math.inf}, "list": [1.0, -math.inf]})
    assert leftovers(tmp_path, {"summary.json"}) == []
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"acc": 0.5, "auc": None, "nested": {"loss": None}, "list": [1.0, None]}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"version": 1})

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert leftovers(tmp_path, {"summary.json"}) == []


def test_result_folder_rewrites_rounds_csv_with_every_row(tmp_path):
    folder = ResultFolder(tmp_path / "run")
    folder.add_round({"round": 0, "accuracy": 0.1, "loss": 2.3})
    assert [row["round"] for row in read_csv(tmp_path / "run" / "rounds.csv")] == ["0"]
    folder.add_round({"round": 1, "accuracy": 0.5, "loss": 1.2, "macro_f1": math.nan, "extra": 7})
    rows = read_csv(tmp_path / "run" / "rounds.csv")
    assert [row["round"] for row in rows] == ["0", "1"]
    assert list(rows[0]) == ["round", "accuracy", "macro_f1", "kappa", "roc_auc", "loss", "extra"]
    assert rows[0]["accuracy"] == "0.1" and rows[0]["extra"] == ""
    assert rows[1]["macro_f1"] == "" and rows[1]["extra"] == "7"
    assert float(rows[1]["loss"]) == 1.2
    assert leftovers(tmp_path / "run", {"rounds.csv"}) == []


def test_a_growing_csv_is_the_file_rewritten_with_every_row(tmp_path):
    batches = [
        [{"round": 0, "accuracy": 0.5}],
        [{"round": 1, "accuracy": 0.25, "tp": 1}, {"round": 1, "accuracy": 0.75}],
        [{"round": 2, "accuracy": 1.0, "tp": 0}],
        [],
        [{"round": 3, "tp": 2, "accuracy": math.nan, "late": "x"}],
        [{"round": 4, "accuracy": 0.125}],
    ]
    growing = GrowingCsv(tmp_path / "grown.csv", ["round"])
    seen: list[dict[str, object]] = []
    for batch in batches:
        growing.extend(batch)
        seen.extend(batch)
        write_csv(tmp_path / "rewritten.csv", seen, ordered_columns(seen, ["round"]))
        assert (tmp_path / "grown.csv").read_bytes() == (tmp_path / "rewritten.csv").read_bytes()
    assert list(read_csv(tmp_path / "grown.csv")[0]) == ["round", "accuracy", "tp", "late"]


def test_result_folder_clients_and_config(tmp_path):
    folder = ResultFolder(tmp_path / "run")
    folder.add_clients([{"round": 1, "partition_id": 0, "norm_before": math.nan, "x": 1}], CLIENT_COLUMNS)
    rows = read_csv(tmp_path / "run" / "clients.csv")
    assert list(rows[0])[: len(CLIENT_COLUMNS)] == list(CLIENT_COLUMNS)
    assert rows[0]["norm_before"] == "" and rows[0]["x"] == "1"
    folder.write_config({"seed": 1}, {"versions": {"torch": "x"}})
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {
        "settings": {"seed": 1},
        "versions": {"torch": "x"},
    }


def test_result_files_are_readable_by_everyone(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"accuracy": 0.9})
    assert path.stat().st_mode & 0o777 == 0o644
