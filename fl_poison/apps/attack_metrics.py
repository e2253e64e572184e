"""Attack metrics of the global model on the server's test set, every round.

- ``asr`` (backdoors): share of triggered test samples whose true label is not the target that
  the model classifies as the target; for DBA also ``asr_part_<k>`` for each local trigger.
- ``mta``: main-task accuracy — clean accuracy, or for source-targeted attacks (label-flip, ADA)
  the accuracy on test samples outside the source class (seed 004 eq. 3).
- ``ts_ata``: share of source-class test samples classified as the target (seed 004 eq. 4); for
  ADA the target is the one the attackers last reported choosing.
- ``max_ata``: the largest share of source-class test samples that fall into one class other than
  the source (seed 004 eq. 8).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from clients.triggers import Trigger, attack_trigger, dba_triggers
from fl_poison.core.config import BACKDOOR_ATTACKS, SOURCE_TARGETED_ATTACKS, ConfigError, ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.evaluation import predict_probabilities


def attack_success_rate(predictions: np.ndarray, labels: np.ndarray, target: int) -> float:
    """Share of samples with ``labels != target`` predicted as ``target`` (NaN if there are none)."""
    eligible = labels != target
    return float(np.mean(predictions[eligible] == target)) if eligible.any() else math.nan


def main_task_accuracy(predictions: np.ndarray, labels: np.ndarray, source: int | None = None) -> float:
    """Accuracy on samples outside class ``source`` (all samples when ``source`` is None or -1)."""
    kept = labels != source if source is not None and source >= 0 else np.ones_like(labels, dtype=bool)
    return float(np.mean(predictions[kept] == labels[kept])) if kept.any() else math.nan


def targeted_ata(predictions: np.ndarray, labels: np.ndarray, source: int, target: int) -> float:
    """Share of ``source`` samples predicted as ``target`` (seed 004 eq. 4)."""
    in_source = labels == source
    return float(np.mean(predictions[in_source] == target)) if in_source.any() and target >= 0 else math.nan


def max_ata(predictions: np.ndarray, labels: np.ndarray, source: int, num_classes: int) -> float:
    """Largest share of ``source`` samples predicted as one class other than ``source`` (seed 004 eq. 8)."""
    in_source = labels == source
    if not in_source.any():
        return math.nan
    counts = np.bincount(predictions[in_source], minlength=num_classes).astype(float)
    counts[source] = -1.0
    return float(counts.max() / in_source.sum())


def check_classes(config: ExperimentConfig, num_classes: int) -> None:
    """Fail with a one-line message when ``source-class`` or ``target-class`` is not a class of the data."""
    uses_target = config.attack in BACKDOOR_ATTACKS or config.attack == "label-flip"
    if uses_target and config.target_class >= num_classes:
        raise ConfigError.bad_value("target-class", config.target_class, f"0 .. {num_classes - 1}")
    if config.attack in SOURCE_TARGETED_ATTACKS and config.source_class >= num_classes:
        raise ConfigError.bad_value("source-class", config.source_class, f"0 .. {num_classes - 1} or all")


class AttackEvaluator:
    """Computes the attack metrics that apply to ``config.attack``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (attack, classes, trigger settings).
    test_set : LabeledTensors
        The clean test set.
    num_classes : int
        Number of classes.
    """

    def __init__(self, config: ExperimentConfig, test_set: LabeledTensors, num_classes: int) -> None:
        self.config = config
        self.test_set = test_set
        self.num_classes = num_classes
        self.triggered: dict[str, LabeledTensors] = {}
        shape = tuple(test_set.x.shape[1:])
        if config.attack in ("blend", "badnets"):
            self.triggered["asr"] = stamped(test_set, attack_trigger(config, shape))
        elif config.attack == "dba":
            global_trigger, parts = dba_triggers(config, shape)
            self.triggered["asr"] = stamped(test_set, global_trigger)
            for index, part in enumerate(parts):
                self.triggered[f"asr_part_{index}"] = stamped(test_set, part)

    @property
    def applies(self) -> bool:
        """Whether the run's attack has metrics of its own."""
        return self.config.attack in BACKDOOR_ATTACKS or self.config.attack in SOURCE_TARGETED_ATTACKS

    def metrics(
        self, model: nn.Module, predictions: np.ndarray, device: torch.device, batch_size: int, ada_target: int
    ) -> dict[str, float]:
        """The attack metrics of ``model``, given its clean-test ``predictions``."""
        labels = self.test_set.y.numpy()
        config = self.config
        if config.attack in BACKDOOR_ATTACKS:
            results = {"mta": main_task_accuracy(predictions, labels)}
            for name, data in self.triggered.items():
                triggered_predictions = predict_probabilities(model, data, device, batch_size).argmax(axis=1)
                results[name] = attack_success_rate(triggered_predictions, labels, config.target_class)
            return results
        if config.attack in SOURCE_TARGETED_ATTACKS:
            source = config.source_class
            target = config.target_class if config.attack == "label-flip" else ada_target
            if source < 0:  # all-to-one label flipping: the target class is the attack's goal
                return {
                    "mta": main_task_accuracy(predictions, labels),
                    "asr": attack_success_rate(predictions, labels, config.target_class),
                }
            return {
                "mta": main_task_accuracy(predictions, labels, source),
                "ts_ata": targeted_ata(predictions, labels, source, target),
                "max_ata": max_ata(predictions, labels, source, self.num_classes),
            }
        return {}


def stamped(data: LabeledTensors, trigger: Trigger) -> LabeledTensors:
    """``data`` with every image stamped with ``trigger`` (true labels kept)."""
    return LabeledTensors(trigger.apply(data.x), data.y)
