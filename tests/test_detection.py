"""Detection scores of a defense (flagged = rejected or clipped) and rejection scores (flagged = rejected) against hand counts."""

from __future__ import annotations

import math

import pytest

from fl_poison.core.detection import DETECTION_COLUMNS, REJECTION_COLUMNS, detection_scores, rejection_scores
from fl_poison.core.round_log import ClientRoundRecord


def row(pid: int, attacked: int, decision: str, status: str = "ok") -> ClientRoundRecord:
    return ClientRoundRecord(
        round=1,
        partition_id=pid,
        malicious=attacked,
        attacked=attacked,
        attack_target=-1,
        status=status,
        reason="",
        num_examples=10,
        loss=0.5,
        norm_before=1.0,
        decision=decision,
    )


ROUND = [
    row(0, 1, "rejected"),  # TP
    row(1, 1, "clipped"),  # TP
    row(2, 1, "accepted"),  # FN
    row(3, 0, "rejected"),  # FP
    row(4, 0, "accepted"),  # TN
    row(5, 0, "accepted"),  # TN
    row(6, 0, "clipped"),  # FP
    row(7, 1, "rejected", status="rejected"),  # TP: dropped by the reply screening
    row(8, 1, "", status="failed"),  # ignored: no reply
    row(9, 1, "rejected", status="failed"),  # ignored: failed, whatever the decision says
    row(10, 1, ""),  # ignored: the defense recorded no decision
    row(11, 0, ""),  # ignored
    row(12, 1, "skipped"),  # ignored: the rule aggregated nothing this round (Bulyan, too few replies)
    row(13, 0, "skipped"),  # ignored
]


def test_counts_and_rates_by_hand():
    scores = detection_scores(ROUND)
    assert set(scores) == set(DETECTION_COLUMNS)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (3, 2, 1, 2)
    assert scores["detection_precision"] == pytest.approx(3 / 5)
    assert scores["detection_recall"] == pytest.approx(3 / 4)
    assert scores["detection_fpr"] == pytest.approx(2 / 4)


def test_generator_input_is_accepted():
    assert detection_scores(r for r in ROUND)["tp"] == 3


def test_nobody_flagged_gives_nan_precision():
    scores = detection_scores([row(0, 1, "accepted"), row(1, 0, "accepted")])
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (0, 0, 1, 1)
    assert math.isnan(scores["detection_precision"])
    assert scores["detection_recall"] == 0.0
    assert scores["detection_fpr"] == 0.0


def test_nobody_attacked_gives_nan_recall():
    scores = detection_scores([row(0, 0, "rejected"), row(1, 0, "accepted"), row(2, 0, "clipped")])
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (0, 2, 0, 1)
    assert scores["detection_precision"] == 0.0
    assert math.isnan(scores["detection_recall"])
    assert scores["detection_fpr"] == pytest.approx(2 / 3)


def test_everybody_attacked_gives_nan_fpr():
    scores = detection_scores([row(0, 1, "rejected"), row(1, 1, "accepted")])
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (1, 0, 1, 0)
    assert scores["detection_precision"] == 1.0
    assert scores["detection_recall"] == 0.5
    assert math.isnan(scores["detection_fpr"])


def test_no_usable_rows_gives_zero_counts_and_nan_rates():
    for records in ([], [row(0, 1, "", status="failed"), row(1, 0, "")]):
        scores = detection_scores(records)
        assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (0, 0, 0, 0)
        assert all(math.isnan(scores[key]) for key in ("detection_precision", "detection_recall", "detection_fpr"))


def test_counts_are_plain_integers():
    scores = detection_scores(ROUND)
    assert all(type(scores[key]) is int for key in ("tp", "fp", "fn", "tn"))


def test_rejection_scores_do_not_count_a_clip_by_hand():
    scores = rejection_scores(ROUND)
    assert set(scores) == set(REJECTION_COLUMNS)
    # judged rows 0-7; flagged = rejected: 0 (TP), 3 (FP), 7 (TP, the screening); clipped 1 is now FN, clipped 6 TN
    # TP 2, FP 1, FN 2 (rows 1, 2), TN 3 (rows 4, 5, 6)
    assert scores["rejection_precision"] == pytest.approx(2 / 3)
    assert scores["rejection_recall"] == pytest.approx(2 / 4)
    assert scores["rejection_fpr"] == pytest.approx(1 / 4)


def test_a_rule_that_only_clips_rejects_nobody():
    clipped = [row(0, 1, "clipped"), row(1, 0, "clipped"), row(2, 0, "accepted")]
    assert detection_scores(clipped)["detection_fpr"] == pytest.approx(1 / 2)
    scores = rejection_scores(clipped)
    assert math.isnan(scores["rejection_precision"])
    assert scores["rejection_recall"] == 0.0
    assert scores["rejection_fpr"] == 0.0
