"""A defense seen as a detector of the attackers, scored against the ground truth.

A client is *flagged* when its reply was rejected (by the defense or by the reply screening) or
clipped; it is *positive* when its update this round was poisoned (``attacked``, the threat
model's ground truth, which no defense reads). Clients that never replied, and rounds the rule
skipped without judging anyone (``skipped``), are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from fl_poison.core.round_log import FLAGGED_DECISIONS, ClientRoundRecord

JUDGEMENTS = ("accepted", *FLAGGED_DECISIONS)

DETECTION_COLUMNS = ("tp", "fp", "fn", "tn", "detection_precision", "detection_recall", "detection_fpr")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def detection_scores(records: Iterable[ClientRoundRecord]) -> dict[str, float]:
    """TP, FP, FN, TN and precision, recall (TPR) and false-positive rate over ``records``.

    Precision is NaN when nobody was flagged, recall when nobody attacked, FPR when everybody did.
    """
    tp = fp = fn = tn = 0
    for record in records:
        if record.status == "failed" or record.decision not in JUDGEMENTS:
            continue
        flagged = record.decision in FLAGGED_DECISIONS
        positive = bool(record.attacked)
        tp += flagged and positive
        fp += flagged and not positive
        fn += (not flagged) and positive
        tn += (not flagged) and not positive
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "detection_precision": _ratio(tp, tp + fp),
        "detection_recall": _ratio(tp, tp + fn),
        "detection_fpr": _ratio(fp, fp + tn),
    }
