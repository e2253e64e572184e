"""DBA, the distributed backdoor attack: each attacker stamps only its strip of one global trigger.

Paper: Xie et al., 2020, "DBA: Distributed Backdoor Attacks against Federated Learning" (ICLR);
settings as in seed 001 §2.2. The global trigger is a square in the corner ``trigger-position``
(red on colour images, ``trigger-value`` on grey ones); its columns are cut into vertical strips,
one per attacker of the run config. Attacker k (its rank among the malicious partition ids)
stamps strip k on a share ``poison-rate`` of its samples and labels them ``target-class``; the
backdoor is meant to appear in the global model for the whole trigger.

Metrics: the clean ``mta``, ``asr`` of the global trigger and ``asr_part_<k>`` of every strip.
"""

from __future__ import annotations

import numpy as np
import torch

from clients.backdoors import BackdoorEvaluation, TriggerPoison, image_shape
from clients.spec import AttackContext, AttackSpec
from clients.targeting import POISON_RATE, TARGET_CLASS, check_target_class
from clients.threat_model import ThreatModel
from clients.triggers import (
    PATCH_SETTINGS,
    TRIGGER_POSITION,
    TRIGGER_SIZE,
    TRIGGER_VALUE,
    Trigger,
    default_trigger_size,
    patch_trigger,
)
from fl_poison.core.catalogue import DATA_POISONING, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.settings import ConfigError


def split_vertically(trigger: Trigger, parts: int) -> list[Trigger]:
    """Cut ``trigger``'s mask into ``parts`` vertical strips of its non-zero columns (DBA's local triggers).

    The strips are disjoint and their masks add up to the global mask exactly.

    Parameters
    ----------
    trigger : Trigger
        The global trigger.
    parts : int
        Number of strips; as even as possible, wider ones first.
    """
    columns = torch.nonzero(trigger.mask.sum(dim=(0, 1)) > 0).flatten()
    pieces = np.array_split(columns.numpy(), parts)
    local = []
    for piece in pieces:
        mask = torch.zeros_like(trigger.mask)
        if len(piece):
            mask[:, :, piece] = trigger.mask[:, :, piece]
        local.append(Trigger(mask, trigger.pattern))
    return local


def dba_global_trigger(config: ExperimentConfig, shape: tuple[int, int, int], parts: int) -> Trigger:
    """DBA's global trigger: a red (colour) or ``trigger-value`` (grey) square.

    Its automatic side is the scaled default, widened so each of the ``parts`` strips is about
    two columns wide (seed 001: 6 px with 3 attackers on CIFAR-10; 5 px with 3 on 8x8 digits,
    where 1-column strips are not learned: full-trigger ASR 0.48 at 3 px vs 1.0 at 5 px).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (``trigger-size``, ``trigger-value``, ``trigger-position``).
    shape : tuple[int, int, int]
        Input shape ``(C, H, W)`` (square images).
    parts : int
        Number of strips the trigger will be cut into.
    """
    size = config[TRIGGER_SIZE] or min(shape[1], max(default_trigger_size(shape[1]), 2 * parts - 1))
    return patch_trigger(shape, size, config[TRIGGER_VALUE], config[TRIGGER_POSITION], red=True)


def dba_triggers(config: ExperimentConfig, shape: tuple[int, int, int]) -> tuple[Trigger, list[Trigger]]:
    """DBA's global trigger and its local parts, one per run-config attacker (at least one).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (the threat model and the trigger settings).
    shape : tuple[int, int, int]
        Input shape ``(C, H, W)`` (square images).
    """
    parts = max(1, len(ThreatModel.from_config(config).malicious_ids))
    global_trigger = dba_global_trigger(config, shape, parts)
    return global_trigger, split_vertically(global_trigger, parts)


def trigger(config: ExperimentConfig, shape: tuple[int, int, int]) -> Trigger:
    """The run's global DBA trigger (see :func:`dba_triggers` for the parameters)."""
    return dba_triggers(config, shape)[0]


def dba_poison(context: AttackContext) -> TriggerPoison:
    """The poisoner of an attacker: its strip, by rank among the attackers (see :class:`~clients.spec.AttackContext`)."""
    config = context.config
    _, parts = dba_triggers(config, context.info.input_shape)
    part = parts[context.threat.attacker_rank(context.partition_id) % len(parts)]
    return TriggerPoison(part, config[POISON_RATE], config[TARGET_CLASS])


def check_a_column_per_attacker(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """A fixed ``trigger-size`` must give every attacker at least one column (one-line :class:`ConfigError`).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered algorithms (unused).
    """
    size = config[TRIGGER_SIZE]
    if size is not None and size < config.attackers:
        raise ConfigError.bad_value(
            TRIGGER_SIZE.key,
            size,
            f"auto or at least the number of DBA attackers ({config.attackers}), one column each",
        )


def evaluation(config: ExperimentConfig, test_set: LabeledTensors, num_classes: int) -> BackdoorEvaluation:
    """The server's metrics of the backdoor: ``mta``, ``asr`` of the global trigger, ``asr_part_<k>`` of each strip.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    test_set : LabeledTensors
        The clean test set.
    num_classes : int
        Number of classes of the data (unused).
    """
    global_trigger, parts = dba_triggers(config, image_shape(test_set))
    triggers = {"asr": global_trigger, **{f"asr_part_{index}": part for index, part in enumerate(parts)}}
    return BackdoorEvaluation.of(test_set, triggers, config[TARGET_CLASS])


ATTACK = AttackSpec(
    name="dba",
    kind=DATA_POISONING,
    summary="Distributed backdoor: each attacker stamps its strip of one global trigger (Xie et al., 2020).",
    settings=(TARGET_CLASS, POISON_RATE, *PATCH_SETTINGS),
    check=check_a_column_per_attacker,
    poisoner=dba_poison,
    trigger=trigger,
    evaluation=evaluation,
    check_classes=check_target_class,
)
