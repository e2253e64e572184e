"""Label-flipping data poisoning.

- Random label flipping (seed 000 §2.1.2): every label of the attacker is replaced by a label
  drawn uniformly from all classes.
- Source→target flipping with injection rate α (Tolpegin et al., 2020, "Data Poisoning Attacks
  Against Federated Learning Systems"; seed 004 §III-C1): all source-class samples are relabelled
  to the target class, and randomly chosen other samples are kept with their true labels so that
  the poisoned samples make up α of the attacker's training set. With source ``all`` (all-to-one)
  a share α of the samples not already in the target class is relabelled and every sample kept.
"""

from __future__ import annotations

import torch

from fl_poison.core.data import LabeledTensors

ALL_CLASSES = -1


def random_labels(data: LabeledTensors, num_classes: int, seed: int) -> LabeledTensors:
    """``data`` with every label replaced by a uniform draw from ``0 .. num_classes - 1``."""
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
