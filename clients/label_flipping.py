"""Label-flipping data poisoning and the metrics of source-targeted attacks.

- Random label flipping (seed 000 §2.1.2): every label of the attacker is replaced by a label
  drawn uniformly from all classes.
- Source→target flipping with injection rate α (Tolpegin et al., 2020, "Data Poisoning Attacks
  Against Federated Learning Systems"; seed 004 §III-C1): all source-class samples are relabelled
  to the target class, and randomly chosen other samples are kept with their true labels so that
  the poisoned samples make up α of the attacker's training set. With source ``all`` (all-to-one)
  a share α of the samples not already in the target class is relabelled and every sample kept.

Used by the attacks ``label-flip-random``, ``label-flip`` and ``ada`` (:mod:`clients.attacks`);
:class:`SourceTargetedEvaluation` measures label-flip and ADA on the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clients.attack_metrics import attack_success_rate, main_task_accuracy, max_ata, targeted_ata
from fl_poison.core.data import LabeledTensors

ALL_CLASSES = -1


def random_labels(data: LabeledTensors, num_classes: int, seed: int) -> LabeledTensors:
    """``data`` with every label replaced by a uniform draw from ``0 .. num_classes - 1``.

    Parameters
    ----------
    data : LabeledTensors
        The attacker's clean data (not modified; the images are shared).
    num_classes : int
        Number of classes to draw from.
    seed : int
        Seeds the draws.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, data.y.shape, generator=generator, dtype=data.y.dtype)
    return LabeledTensors(data.x, labels)


def flip_source_to_target(data: LabeledTensors, source: int, target: int, rate: float, seed: int) -> LabeledTensors:
    """The attacker's poisoned training set for source→target flipping at injection rate ``rate``.

    Parameters
    ----------
    data : LabeledTensors
        The attacker's clean data.
    source : int
        The source class, or :data:`ALL_CLASSES` for all-to-one.
    target : int
        The class the poisoned samples are labelled with.
    rate : float
        Injection rate α in (0, 1]: the share of poisoned samples in the returned set.
    seed : int
        Seeds the choice of the kept (or, for all-to-one, the flipped) samples.

    An attacker without source-class samples has nothing to flip and gets ``data`` back.
    """
    generator = torch.Generator().manual_seed(seed)
    if source == ALL_CLASSES:
        candidates = torch.nonzero(data.y != target).flatten()
        count = min(len(candidates), round(rate * len(data)))
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
        labels = data.y.clone()
        labels[chosen] = target
        return LabeledTensors(data.x, labels)
    source_rows = torch.nonzero(data.y == source).flatten()
    if len(source_rows) == 0:
        return data  # nothing of the source class to flip
    other_rows = torch.nonzero(data.y != source).flatten()
    keep = min(len(other_rows), round(len(source_rows) * (1.0 - rate) / rate))
    kept_rows = other_rows[torch.randperm(len(other_rows), generator=generator)[:keep]]
    rows = torch.cat([source_rows, kept_rows])
    labels = data.y[rows].clone()
    labels[: len(source_rows)] = target
    return LabeledTensors(data.x[rows], labels)


@dataclass(frozen=True)
class SourceTargetedEvaluation:
    """The metrics of a source→target attack: ``mta`` outside the source class, ``ts_ata`` and ``max_ata``.

    With source :data:`ALL_CLASSES` (all-to-one flipping) there is no source class to measure:
    the metrics are the clean ``mta`` and the ``asr`` of the target class.

    Parameters
    ----------
    labels : np.ndarray
        True classes of the clean test set.
    source : int
        The attacked source class, or :data:`ALL_CLASSES`.
    target : int | None
        The target class; None for an attack that chooses its own (ADA): the target the
        attackers last reported is measured, and named by the metric ``ts_ata_target`` (-1 while
        none was reported), so that ``rounds.csv`` keeps which class each round's ``ts_ata`` is of.
    num_classes : int
        Number of classes of the data.
    """

    labels: np.ndarray
    source: int
    target: int | None
    num_classes: int

    def metrics(
        self, model: nn.Module, predictions: np.ndarray, device: torch.device, batch_size: int, attack_target: int
    ) -> dict[str, float]:
        """The metrics of the global model's clean ``predictions`` (see :class:`~clients.attack_metrics.AttackEvaluation`)."""
        target = self.target if self.target is not None else attack_target
        if self.source == ALL_CLASSES:
            return {
                "mta": main_task_accuracy(predictions, self.labels),
                "asr": attack_success_rate(predictions, self.labels, target),
            }
        metrics = {
            "mta": main_task_accuracy(predictions, self.labels, self.source),
            "ts_ata": targeted_ata(predictions, self.labels, self.source, target),
            "max_ata": max_ata(predictions, self.labels, self.source, self.num_classes),
        }
        if self.target is None:
            metrics["ts_ata_target"] = target
        return metrics
