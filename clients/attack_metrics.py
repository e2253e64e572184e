"""Attack metrics of the global model on the server's test set, and the interface of an attack's evaluation.

Each attack that has metrics of its own builds an :class:`AttackEvaluation` (its spec's
``evaluation``, see :mod:`clients.spec`); the ServerApp asks it for the metrics every round.

- ``asr`` (backdoors): share of triggered test samples whose true label is not the target that
  the model classifies as the target; for DBA also ``asr_part_<k>`` for each local trigger.
- ``mta``: main-task accuracy — clean accuracy, or for source-targeted attacks (label-flip, ADA)
  the accuracy on test samples outside the source class (seed 004 eq. 3).
- ``ts_ata``: share of source-class test samples classified as the target (seed 004 eq. 4); for
  ADA the target is the one the attackers last reported choosing, recorded as ``ts_ata_target``
  (-1 before any was reported).
- ``max_ata``: the largest share of source-class test samples that fall into one class other than
  the source (seed 004 eq. 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn


def attack_success_rate(predictions: np.ndarray, labels: np.ndarray, target: int) -> float:
    """Share of samples with ``labels != target`` predicted as ``target`` (NaN if there are none).

    Parameters
    ----------
    predictions : np.ndarray
        Predicted classes, one per sample.
    labels : np.ndarray
        True classes, one per sample.
    target : int
        The class the attack pushes towards.
    """
    eligible = labels != target
    return float(np.mean(predictions[eligible] == target)) if eligible.any() else math.nan


def main_task_accuracy(predictions: np.ndarray, labels: np.ndarray, source: int | None = None) -> float:
    """Accuracy on samples outside class ``source`` (all samples when ``source`` is None or -1).

    Parameters
    ----------
    predictions : np.ndarray
        Predicted classes, one per sample.
    labels : np.ndarray
        True classes, one per sample.
    source : int | None
        The attacked source class, left out of the accuracy; None or -1 keeps every sample.
    """
    kept = labels != source if source is not None and source >= 0 else np.ones_like(labels, dtype=bool)
    return float(np.mean(predictions[kept] == labels[kept])) if kept.any() else math.nan


def targeted_ata(predictions: np.ndarray, labels: np.ndarray, source: int, target: int) -> float:
    """Share of ``source`` samples predicted as ``target`` (seed 004 eq. 4); NaN without a target or source samples.

    Parameters
    ----------
    predictions : np.ndarray
        Predicted classes, one per sample.
    labels : np.ndarray
        True classes, one per sample.
    source : int
        The attacked source class.
    target : int
        The class the source is pushed into; negative when no target is known yet.
    """
    in_source = labels == source
    return float(np.mean(predictions[in_source] == target)) if in_source.any() and target >= 0 else math.nan


def max_ata(predictions: np.ndarray, labels: np.ndarray, source: int, num_classes: int) -> float:
    """Largest share of ``source`` samples predicted as one class other than ``source`` (seed 004 eq. 8).

    Parameters
    ----------
    predictions : np.ndarray
        Predicted classes, one per sample.
    labels : np.ndarray
        True classes, one per sample.
    source : int
        The attacked source class.
    num_classes : int
        Number of classes of the data.
    """
    in_source = labels == source
    if not in_source.any():
        return math.nan
    counts = np.bincount(predictions[in_source], minlength=num_classes).astype(float)
    counts[source] = -1.0
    return float(counts.max() / in_source.sum())


class AttackEvaluation(Protocol):
    """An attack's own metrics of the global model, computed by the server every round."""

    def metrics(
        self, model: nn.Module, predictions: np.ndarray, device: torch.device, batch_size: int, attack_target: int
    ) -> dict[str, float]:
        """The attack metrics of ``model``.

        Parameters
        ----------
        model : nn.Module
            The global model.
        predictions : np.ndarray
            Its predicted classes on the clean test set.
        device : torch.device
            Where to run the model on triggered test sets.
        batch_size : int
            Batch size of those evaluations.
        attack_target : int
            The latest target class the attackers reported (ADA's choice), or -1 if none.

        Returns
        -------
        dict[str, float]
            Rates in [0, 1] (NaN where undefined) named in
            :data:`fl_poison.core.results.ATTACK_SUMMARY_METRICS` or ``asr_part_<k>``, and the
            classes named in :data:`fl_poison.core.results.ATTACK_CLASS_COLUMNS` (an integer; -1
            for none).
        """
        ...


@dataclass(frozen=True)
class NoAttackMetrics:
    """The evaluation of a run whose attack has no metrics of its own (or of a run without attack)."""

    def metrics(
        self, model: nn.Module, predictions: np.ndarray, device: torch.device, batch_size: int, attack_target: int
    ) -> dict[str, float]:
        """No metrics (see :meth:`AttackEvaluation.metrics` for the parameters)."""
        return {}
