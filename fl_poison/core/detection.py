"""A defense seen as a detector of the attackers, scored against the ground truth.

A client is *positive* when its update this round was poisoned (``attacked``, the threat model's
ground truth, which no defense reads). Two readings of *flagged*:

- detection (``tp`` … ``detection_fpr``): the reply was rejected (by the defense or by the reply
  screening) or clipped, i.e. the defense acted on it;
- rejection (``rejection_precision`` … ``rejection_fpr``): the reply was rejected only, i.e. it
  was left out of the new global model. A rule that clips every update above the round's median
  norm (FLAME, norm clipping) "detects" half of the honest clients on the first reading and may
  leave out none of them on the second.

Clients that never replied, and rounds the rule skipped without judging anyone (``skipped``), are
left out of both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from fl_poison.core.round_log import FLAGGED_DECISIONS, ClientRoundRecord

JUDGEMENTS = ("accepted", *FLAGGED_DECISIONS)
REJECTED_DECISIONS = ("rejected",)

DETECTION_COLUMNS = ("tp", "fp", "fn", "tn", "detection_precision", "detection_recall", "detection_fpr")
REJECTION_COLUMNS = ("rejection_precision", "rejection_recall", "rejection_fpr")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def confusion_counts(
    records: Iterable[ClientRoundRecord], flagged_decisions: tuple[str, ...]
) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN over the judged replies of ``records``.

    Parameters
    ----------
    records : Iterable[ClientRoundRecord]
        Clients of one round or of a whole run.
    flagged_decisions : tuple[str, ...]
        The decisions that count as flagging the client (a subset of :data:`FLAGGED_DECISIONS`).
    """
    tp = fp = fn = tn = 0
    for record in records:
        if record.status == "failed" or record.decision not in JUDGEMENTS:
            continue
        flagged = record.decision in flagged_decisions
        positive = bool(record.attacked)
        tp += flagged and positive
        fp += flagged and not positive
        fn += (not flagged) and positive
        tn += (not flagged) and not positive
    return tp, fp, fn, tn


def _rates(prefix: str, tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    return {
        f"{prefix}_precision": _ratio(tp, tp + fp),
        f"{prefix}_recall": _ratio(tp, tp + fn),
        f"{prefix}_fpr": _ratio(fp, fp + tn),
    }


def detection_scores(records: Iterable[ClientRoundRecord]) -> dict[str, float]:
    """TP, FP, FN, TN and precision, recall (TPR) and false-positive rate over ``records`` (flagged: rejected or clipped).

    Precision is NaN when nobody was flagged, recall when nobody attacked, FPR when everybody did.

    Parameters
    ----------
    records : Iterable[ClientRoundRecord]
        Clients of one round or of a whole run.
    """
    tp, fp, fn, tn = confusion_counts(records, FLAGGED_DECISIONS)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, **_rates("detection", tp, fp, fn, tn)}


def rejection_scores(records: Iterable[ClientRoundRecord]) -> dict[str, float]:
    """Precision, recall and false-positive rate over ``records`` with flagged meaning rejected (a clip is not a flag).

    NaN as in :func:`detection_scores`.

    Parameters
    ----------
    records : Iterable[ClientRoundRecord]
        Clients of one round or of a whole run.
    """
    return _rates("rejection", *confusion_counts(records, REJECTED_DECISIONS))
