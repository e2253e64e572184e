"""The settings several data-poisoning attacks share: the class they attack, the class they push
towards, and the share of the attacker's data they poison; and the checks of those classes
against the data.

Each is one :class:`~fl_poison.core.settings.Setting` object that every attack using it declares
(label-flip and ADA take ``source-class``; label-flip and the backdoors ``target-class``; all of
them but random label flipping ``poison-rate``).
"""

from __future__ import annotations

from clients.label_flipping import SourceTargetedEvaluation
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.settings import ConfigError, Setting, class_or_all, integer, number_in

SOURCE_CLASS = Setting(
    "source-class",
    2,
    "Source class of label-flip and ada (label-flip also takes 'all' for all-to-one).",
    class_or_all,
)
TARGET_CLASS = Setting("target-class", 0, "Target class of label-flip and of the backdoors.", integer(0))
POISON_RATE = Setting(
    "poison-rate",
    0.5,
    "Share of the attacker's training samples that are poisoned (label-flip injection rate alpha; backdoor poisoning rate).",
    number_in(0, 1, False, True),
)


def check_target_class(config: ExperimentConfig, num_classes: int) -> None:
    """Fail with a one-line :class:`ConfigError` when ``target-class`` is not a class of the data.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    num_classes : int
        Number of classes of the run's dataset.
    """
    target = config[TARGET_CLASS]
    if target >= num_classes:
        raise ConfigError.bad_value(TARGET_CLASS.key, target, f"0 .. {num_classes - 1}")


def check_source_class(config: ExperimentConfig, num_classes: int) -> None:
    """Fail with a one-line :class:`ConfigError` when ``source-class`` is not a class of the data (``all`` passes).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    num_classes : int
        Number of classes of the run's dataset.
    """
    source = config[SOURCE_CLASS]
    if source >= num_classes:
        raise ConfigError.bad_value(SOURCE_CLASS.key, source, f"0 .. {num_classes - 1} or all")


def check_source_and_target_classes(config: ExperimentConfig, num_classes: int) -> None:
    """``target-class`` and ``source-class`` must be classes of the data (``all`` passes for the source).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    num_classes : int
        Number of classes of the run's dataset.
    """
    check_target_class(config, num_classes)
    check_source_class(config, num_classes)


def source_target_evaluation(
    config: ExperimentConfig, test_set: LabeledTensors, num_classes: int
) -> SourceTargetedEvaluation:
    """The server's metrics of a source→target attack: ``mta`` outside the source class, ``ts_ata`` and ``max_ata``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (``source-class``, ``target-class``).
    test_set : LabeledTensors
        The clean test set.
    num_classes : int
        Number of classes of the data.
    """
    return SourceTargetedEvaluation(test_set.y.numpy(), config[SOURCE_CLASS], config[TARGET_CLASS], num_classes)
