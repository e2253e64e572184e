"""Backdoor data poisoning and its evaluation, shared by blend, BadNets and DBA.

The attacker stamps a trigger (:mod:`clients.triggers`) on a share ``poison-rate`` of its samples
and relabels them ``target-class``; the poisoned samples replace their clean versions and the
attacker trains on the mix. The server measures the backdoor with the attack success rate of
each trigger the attack owns (see :mod:`clients.attack_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clients.attack_metrics import attack_success_rate, main_task_accuracy
from clients.base import TrainingJob
from clients.malicious import Poisoned
from clients.spec import AttackContext, EvaluationBuilder, PoisonerBuilder, TriggerBuilder
from clients.targeting import POISON_RATE, TARGET_CLASS
from clients.triggers import Trigger
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.evaluation import predict_probabilities


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


@dataclass(frozen=True)
class TriggerPoison:
    """Backdoor poisoning with a trigger (blend, BadNets, a DBA part).

    Parameters
    ----------
    trigger : Trigger
        The stamp this attacker uses.
    rate : float
        Share of local samples poisoned.
    target : int
        Backdoor target class.
    """

    trigger: Trigger
    rate: float
    target: int

    def poison(self, job: TrainingJob) -> Poisoned:
        """A share ``rate`` of ``job``'s samples stamped and relabelled ``target`` (drawn with ``job.seed``)."""
        return Poisoned(poison_with_trigger(job.data, self.trigger, self.rate, self.target, job.seed), self.target)


def image_shape(data: LabeledTensors) -> tuple[int, int, int]:
    """The ``(C, H, W)`` shape of the images of ``data``.

    Parameters
    ----------
    data : LabeledTensors
        Samples of shape ``(N, C, H, W)``.
    """
    _, channels, height, width = data.x.shape
    return channels, height, width


def stamped(data: LabeledTensors, trigger: Trigger) -> LabeledTensors:
    """``data`` with every image stamped with ``trigger`` (true labels kept).

    Parameters
    ----------
    data : LabeledTensors
        Clean samples.
    trigger : Trigger
        The stamp.
    """
    return LabeledTensors(trigger.apply(data.x), data.y)


@dataclass(frozen=True)
class BackdoorEvaluation:
    """The clean ``mta`` and the attack success rate of every trigger of a backdoor attack.

    Parameters
    ----------
    test_set : LabeledTensors
        The clean test set.
    triggered : Mapping[str, LabeledTensors]
        Metric name (``asr``, ``asr_part_<k>``) → the test set stamped with that trigger.
    target : int
        The backdoor target class.
    """

    test_set: LabeledTensors
    triggered: Mapping[str, LabeledTensors]
    target: int

    @classmethod
    def of(cls, test_set: LabeledTensors, triggers: Mapping[str, Trigger], target: int) -> BackdoorEvaluation:
        """The evaluation of ``triggers`` (metric name → trigger), stamped once on ``test_set``.

        Parameters
        ----------
        test_set : LabeledTensors
            The clean test set.
        triggers : Mapping[str, Trigger]
            Metric name → trigger, in the order the metrics are reported.
        target : int
            The backdoor target class.
        """
        return cls(test_set, {name: stamped(test_set, trigger) for name, trigger in triggers.items()}, target)

    def metrics(
        self, model: nn.Module, predictions: np.ndarray, device: torch.device, batch_size: int, attack_target: int
    ) -> dict[str, float]:
        """``mta`` of the clean ``predictions``, then each trigger's ASR (see :class:`~clients.attack_metrics.AttackEvaluation`)."""
        labels = self.test_set.y.numpy()
        results = {"mta": main_task_accuracy(predictions, labels)}
        for name, data in self.triggered.items():
            triggered_predictions = predict_probabilities(model, data, device, batch_size).argmax(axis=1)
            results[name] = attack_success_rate(triggered_predictions, labels, self.target)
        return results


def full_trigger_poisoner(trigger_of: TriggerBuilder) -> PoisonerBuilder:
    """The poisoner builder of a backdoor whose every attacker stamps the run's whole trigger (blend, BadNets).

    Parameters
    ----------
    trigger_of : Callable[[ExperimentConfig, tuple[int, int, int]], Trigger]
        The attack's trigger for a run's settings and an input shape.
    """

    def build(context: AttackContext) -> TriggerPoison:
        config = context.config
        return TriggerPoison(trigger_of(config, context.info.input_shape), config[POISON_RATE], config[TARGET_CLASS])

    return build


def full_trigger_evaluation(trigger_of: TriggerBuilder) -> EvaluationBuilder:
    """The server-side evaluation builder of such a backdoor: ``mta`` and ``asr`` of the whole trigger.

    Parameters
    ----------
    trigger_of : Callable[[ExperimentConfig, tuple[int, int, int]], Trigger]
        The attack's trigger for a run's settings and an input shape.
    """

    def build(config: ExperimentConfig, test_set: LabeledTensors, num_classes: int) -> BackdoorEvaluation:
        return BackdoorEvaluation.of(test_set, {"asr": trigger_of(config, image_shape(test_set))}, config[TARGET_CLASS])

    return build
