"""Source→target label flipping at injection rate α (targeted label flipping).

Paper: Tolpegin et al., 2020, "Data Poisoning Attacks Against Federated Learning Systems"
(ESORICS); the injection rate as in seed 004 §III-C1. Every source-class sample of the attacker
is relabelled ``target-class`` and randomly chosen other samples are kept with their true labels
so that the poisoned samples make up ``poison-rate`` of its training set; with
``source-class=all`` (all-to-one) a share ``poison-rate`` of the samples not already in the
target class is relabelled (see :func:`clients.label_flipping.flip_source_to_target`).

Metrics: ``mta`` outside the source class, ``ts_ata`` and ``max_ata`` (seed 004 eqs. 3, 4, 8);
for all-to-one the clean ``mta`` and the ``asr`` of the target class.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.base import TrainingJob
from clients.label_flipping import flip_source_to_target
from clients.malicious import Poisoned
from clients.spec import AttackContext, AttackSpec
from clients.targeting import (
    POISON_RATE,
    SOURCE_CLASS,
    TARGET_CLASS,
    check_source_and_target_classes,
    source_target_evaluation,
)
from fl_poison.core.catalogue import DATA_POISONING, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError


@dataclass(frozen=True)
class SourceTargetFlip:
    """Source→target label flipping at injection rate α.

    Parameters
    ----------
    source : int
        Source class (-1 = all-to-one).
    target : int
        Target class.
    rate : float
        Injection rate α.
    """

    source: int
    target: int
    rate: float

    def poison(self, job: TrainingJob) -> Poisoned:
        """All source samples of ``job`` relabelled, others kept so that poisoned samples are α of the set."""
        return Poisoned(flip_source_to_target(job.data, self.source, self.target, self.rate, job.seed), self.target)


def source_target_flip(context: AttackContext) -> SourceTargetFlip:
    """The poisoner of an attacker (see :class:`~clients.spec.AttackContext` for ``context``)."""
    config = context.config
    return SourceTargetFlip(config[SOURCE_CLASS], config[TARGET_CLASS], config[POISON_RATE])


def check_source_is_not_target(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Refuse ``target-class`` equal to ``source-class`` (one-line :class:`ConfigError`).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered algorithms (unused).
    """
    if config[SOURCE_CLASS] == config[TARGET_CLASS]:
        raise ConfigError.bad_value(TARGET_CLASS.key, config[TARGET_CLASS], "a class other than source-class")


ATTACK = AttackSpec(
    name="label-flip",
    kind=DATA_POISONING,
    summary="Source-class samples relabelled target-class at injection rate poison-rate (Tolpegin et al., 2020).",
    settings=(SOURCE_CLASS, TARGET_CLASS, POISON_RATE),
    check=check_source_is_not_target,
    poisoner=source_target_flip,
    evaluation=source_target_evaluation,
    check_classes=check_source_and_target_classes,
)
