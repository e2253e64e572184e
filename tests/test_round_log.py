"""The per-client round log: rows by round, the latest attack target, decisions on the same rows."""

from __future__ import annotations

import math

from fl_poison.core.round_log import RoundLog
from fl_poison.core.round_updates import ScreenedReply


def reply(partition_id: int, attack_target: int = -1) -> ScreenedReply:
    metrics = {"num-examples": 10, "train_loss": 0.5, "malicious": int(attack_target >= 0)}
    if attack_target >= 0:
        metrics.update({"attacked": 1, "attack_target": attack_target})
    return ScreenedReply(partition_id, "ok", "", 1.0, metrics)


def test_rows_are_kept_per_round_and_the_latest_attack_target_follows_the_rounds():
    log = RoundLog({})
    assert log.for_round(1) == [] and log.latest_attack_target() == -1
    log.record_screening(1, [0, 1, 2], [reply(2, attack_target=5), reply(1, attack_target=3), reply(0)])
    assert log.latest_attack_target() == 5  # the highest partition of the newest round that attacked
    log.record_screening(2, [0, 1, 2], [reply(1)])
    assert log.latest_attack_target() == 5  # a round without attacks keeps the last target seen
    log.record_screening(3, [0, 1], [reply(0, attack_target=7), reply(1)])
    assert log.latest_attack_target() == 7

    second = log.for_round(2)
    assert [(row.round, row.partition_id, row.status, row.reason) for row in second] == [
        (2, 0, "failed", "no reply"),
        (2, 1, "ok", ""),
        (2, 2, "failed", "no reply"),
    ]
    assert [row.partition_id for row in log.for_round(1)] == [0, 1, 2]
    assert log.for_round(4) == []
    assert len(log.records) == 3 + 3 + 2
    assert [row.round for row in log.records] == [1, 1, 1, 2, 2, 2, 3, 3]


def test_what_is_recorded_for_a_round_lands_on_the_rows_of_records():
    log = RoundLog({})
    log.record_screening(1, [0, 1], [reply(0), reply(1)])
    log.record_screening(2, [0, 1], [reply(0), reply(1)])
    log.record_used_examples(2, {1: 10.0})
    row_of = {(row.round, row.partition_id): row for row in log.records}
    assert row_of[(2, 1)].used_examples == 10.0
    assert math.isnan(row_of[(1, 1)].used_examples) and math.isnan(row_of[(2, 0)].used_examples)
    returned = log.for_round(2)
    returned.clear()  # the caller's list, not the log's
    assert len(log.for_round(2)) == 2
