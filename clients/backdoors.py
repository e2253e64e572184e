"""Backdoor data poisoning: stamp a trigger on a share of the samples and relabel them.

Used by blend, BadNets and DBA (see :mod:`clients.triggers` for the triggers and their papers).
The poisoned samples replace their clean versions; the attacker trains on the mix.
"""

from __future__ import annotations

import torch

from clients.triggers import Trigger
from fl_poison.core.data import LabeledTensors


def poison_with_trigger(data: LabeledTensors, trigger: Trigger, rate: float, target: int, seed: int) -> LabeledTensors:
    """``data`` with ``round(rate * N)`` randomly chosen samples stamped with ``trigger`` and labelled ``target``.

    Parameters
    ----------
    data : LabeledTensors
        The attacker's clean samples (not modified).
    trigger : Trigger
        The stamp to apply.
    rate : float
        Share of samples to poison, in (0, 1].
    target : int
        Label of the poisoned samples.
    seed : int
        Seeds the choice of poisoned samples.
    """
    generator = torch.Generator().manual_seed(seed)
    count = round(rate * len(data))
    chosen = torch.randperm(len(data), generator=generator)[:count]
    images = data.x.clone()
    labels = data.y.clone()
    images[chosen] = trigger.apply(images[chosen])
    labels[chosen] = target
    return LabeledTensors(images, labels)
