"""BadNets backdoor: a square patch stamped on a share of the attacker's samples, relabelled to the target.

Paper: Gu et al., 2017, "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply
Chain" (arXiv:1708.06733); in federated learning as in seed 001 §2.1. A share ``poison-rate`` of
the attacker's samples gets a ``trigger-size`` square of value ``trigger-value`` in the corner
``trigger-position`` and the label ``target-class``. The automatic size scales seed 001's 6 px on
32 px images to the input (3 px on 8x8 digits, see :func:`clients.triggers.default_trigger_size`).

Metrics: the clean ``mta`` and ``asr`` on the patched test set.
"""

from __future__ import annotations

from clients.backdoors import full_trigger_evaluation, full_trigger_poisoner
from clients.spec import AttackSpec
from clients.targeting import POISON_RATE, TARGET_CLASS, check_target_class
from clients.triggers import (
    PATCH_SETTINGS,
    TRIGGER_POSITION,
    TRIGGER_SIZE,
    TRIGGER_VALUE,
    Trigger,
    default_trigger_size,
    patch_trigger,
)
from fl_poison.core.catalogue import DATA_POISONING
from fl_poison.core.config import ExperimentConfig


def trigger(config: ExperimentConfig, shape: tuple[int, int, int]) -> Trigger:
    """The run's BadNets patch.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (``trigger-size``, ``trigger-value``, ``trigger-position``).
    shape : tuple[int, int, int]
        Input shape ``(C, H, W)`` (square images).
    """
    size = config[TRIGGER_SIZE] or default_trigger_size(shape[1])
    return patch_trigger(shape, size, config[TRIGGER_VALUE], config[TRIGGER_POSITION])


ATTACK = AttackSpec(
    name="badnets",
    kind=DATA_POISONING,
    summary="Backdoor: a square patch stamped on poison-rate of the samples, relabelled target-class (Gu et al., 2017).",
    settings=(TARGET_CLASS, POISON_RATE, *PATCH_SETTINGS),
    poisoner=full_trigger_poisoner(trigger),
    trigger=trigger,
    evaluation=full_trigger_evaluation(trigger),
    check_classes=check_target_class,
)
