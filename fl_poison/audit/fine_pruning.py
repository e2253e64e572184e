"""Fine-pruning: prune the units least active on clean data, then fine-tune on a small clean set.

Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural
Networks", RAID 2018 (LNCS 11050), its pruning defense and the fine-pruning defense it builds on it. A
backdoor tends to live in units that clean inputs leave dormant and the trigger switches on;
removing the units that are least active on clean data removes it at little cost in accuracy,
and brief fine-tuning on clean data repairs the accuracy and erodes what is left of it.

1. Run the defender's clean rows (``clean_train``) through the model and record the mean
   activation of each unit of the penultimate representation, ``model.features(x)``.
2. Order the units by increasing mean activation (ties by unit index).
3. For each fraction ``f`` of ``prune_fractions``: on a copy of the model, prune the first
   ``⌊f · D⌋`` units of that order (their activation is multiplied by 0, so nothing downstream
   sees them, during fine-tuning as well) and measure clean accuracy on ``clean_eval`` and the
   attack success rate on ``triggered_eval`` (stage ``pruned``).
4. Fine-tune that pruned copy for ``fine_tune_epochs`` passes over ``clean_train`` (mini-batch
   SGD with momentum, every remaining weight trainable) and measure again (stage ``fine-tuned``).
   The fraction 0 gives the unpruned model and plain fine-tuning, the paper's baseline.

Adaptations, stated plainly:

- The paper prunes the channels of the *last convolutional layer* (a channel's activation is its
  mean over positions and images), because the later layers' features are the sparse, specialised
  ones a backdoor can hide in. Here the units of the penultimate representation are pruned: it is
  the layer every model of :mod:`fl_poison.core.models` exposes (``SplitClassifier.features``),
  whatever sits below it (small-cnn, ada-cnn and cnn3 end in a fully connected layer after
  their convolutions; ResNet-18 in the average-pooled channels of its last block, which are the
  paper's channels), and it is the latest representation of the network, where the paper's
  argument is strongest.
- The paper prunes one unit at a time until the validation accuracy falls by 4 points and then
  fine-tunes; here a grid of fractions is reported, pruned and fine-tuned, so that the trade-off
  between accuracy and attack success is seen whole and the 4-point rule can be read off it.
- The clean rows are the server's: rows held out of the run's test set (the server holds no
  client data in federated learning). They rank the units and fine-tune; ``clean_eval`` (other
  held-out rows) measures accuracy, so nothing is measured on the rows it was tuned on.

The caller's model is never modified: every fraction starts from a deep copy.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clients.attack_metrics import attack_success_rate
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.settings import ConfigError
from fl_poison.core.training import LocalTraining, train_locally

STAGES = ("pruned", "fine-tuned")
EVALUATION_BATCH = 256


def _is_integer_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class FinePruningSettings:
    """How much is pruned and how the pruned model is fine-tuned.

    Attributes
    ----------
    prune_fractions : tuple[float, ...]
        Shares of the penultimate units pruned, each in [0, 1), reported in this order.
    fine_tune_epochs : int
        Passes over the clean rows when fine-tuning; 0 reports the pruned models only.
    learning_rate : float
        SGD step size of the fine-tuning (0.05, the digits runs' local learning rate).
    momentum : float
        SGD momentum of the fine-tuning.
    batch_size : int
        Mini-batch size of the fine-tuning.
    seed : int
        Seeds the order of the fine-tuning's mini-batches.
    """

    prune_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
    fine_tune_epochs: int = 10
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = tuple(self.prune_fractions)
        if not fractions or not all(isinstance(f, (int, float)) and 0.0 <= f < 1.0 for f in fractions):
            raise ConfigError.bad_value("fine-pruning prune_fractions", fractions, "numbers in [0, 1), at least one")
        if not _is_integer_at_least(self.fine_tune_epochs, 0):
            raise ConfigError.bad_value("fine-pruning fine_tune_epochs", self.fine_tune_epochs, "an integer >= 0")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ConfigError.bad_value("fine-pruning learning_rate", self.learning_rate, "a number > 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError.bad_value("fine-pruning momentum", self.momentum, "a number in [0, 1)")
        if not _is_integer_at_least(self.batch_size, 1):
            raise ConfigError.bad_value("fine-pruning batch_size", self.batch_size, "an integer >= 1")


@dataclass(frozen=True)
class FinePruningRow:
    """The model after pruning a share of its units, before or after fine-tuning.

    Attributes
    ----------
    fraction : float
        Share of the penultimate units asked to be pruned.
    pruned_units : int
        Units pruned, ``⌊fraction · units⌋``.
    units : int
        Units of the penultimate representation.
    stage : str
        ``pruned`` or ``fine-tuned``.
    clean_accuracy : float
        Accuracy on ``clean_eval``.
    attack_success_rate : float
        Share of the triggered rows whose true class is not the target that are classified as
        the target (NaN without triggered rows or target).
    clean_rows : int
        Rows of ``clean_eval``.
    attack_rows : int
        Triggered rows whose true class is not the target (the rate's denominator).
    seconds : float
        Seconds of this stage (pruning and measuring, or fine-tuning and measuring).
    """

    fraction: float
    pruned_units: int
    units: int
    stage: str
    clean_accuracy: float
    attack_success_rate: float
    clean_rows: int
    attack_rows: int
    seconds: float


class PrunedClassifier(nn.Module):
    """``classifier(features(x) · keep)``: a split classifier with some penultimate units switched off.

    Parameters
    ----------
    model : SplitClassifier
        The classifier (used as it is, not copied).
    keep : torch.Tensor
        ``(D,)`` 1 for a kept unit, 0 for a pruned one.
    """

    def __init__(self, model: SplitClassifier, keep: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("keep", keep.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch ``x``, the pruned units' activations set to 0."""
        return self.model.classifier(self.model.features(x) * self.keep)


def _device_of(model: nn.Module) -> torch.device:
    parameters = list(model.parameters())
    return parameters[0].device if parameters else torch.device("cpu")


@torch.no_grad()
def mean_activations(model: SplitClassifier, data: LabeledTensors, batch_size: int = EVALUATION_BATCH) -> np.ndarray:
    """The mean over ``data`` of each unit of ``model.features`` (step 1), in evaluation mode.

    Parameters
    ----------
    model : SplitClassifier
        The classifier; its train/eval mode is restored afterwards.
    data : LabeledTensors
        Clean rows (at least one).
    batch_size : int
        Rows per forward pass.
    """
    if len(data) == 0:
        raise ConfigError.bad_value("clean_train", "0 rows", "at least one clean row")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        total: torch.Tensor | None = None
        for start in range(0, len(data), batch_size):
            batch = model.features(data.x[start : start + batch_size].to(device)).double().sum(dim=0)
            total = batch if total is None else total + batch
    finally:
        model.train(was_training)
    assert total is not None
    return (total / len(data)).cpu().numpy()


def pruning_order(activations: np.ndarray) -> np.ndarray:
    """Unit indices by increasing mean activation, ties by index (step 2).

    Parameters
    ----------
    activations : np.ndarray
        ``(D,)`` mean activation of each unit.
    """
    return np.argsort(np.asarray(activations), kind="stable")


def pruned_copy(model: SplitClassifier, order: np.ndarray, count: int) -> PrunedClassifier:
    """A deep copy of ``model`` with the first ``count`` units of ``order`` pruned.

    Parameters
    ----------
    model : SplitClassifier
        The classifier (not modified).
    order : np.ndarray
        Units in pruning order.
    count : int
        Units to prune.
    """
    keep = torch.ones(len(order))
    keep[torch.as_tensor(order[:count], dtype=torch.long)] = 0.0
    return PrunedClassifier(copy.deepcopy(model), keep.to(_device_of(model)))


@torch.no_grad()
def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = EVALUATION_BATCH) -> np.ndarray:
    """The model's class of each image (evaluation mode, in batches).

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits (on the CPU or wherever its parameters are).
    images : torch.Tensor
        ``(N, C, H, W)`` inputs.
    batch_size : int
        Images per forward pass.
    """
    device = _device_of(model)
    model.eval()
    chunks = [
        model(images[start : start + batch_size].to(device)).argmax(dim=1).cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).numpy() if chunks else np.zeros(0, dtype=np.int64)


def _measure(
    model: nn.Module, clean_eval: LabeledTensors, triggered_eval: LabeledTensors | None, target: int | None
) -> tuple[float, float, int, int]:
    labels = clean_eval.y.numpy()
    clean = predicted_classes(model, clean_eval.x)
    accuracy = float(np.mean(clean == labels)) if len(labels) else math.nan
    if triggered_eval is None or target is None:
        return accuracy, math.nan, len(labels), 0
    true_classes = triggered_eval.y.numpy()
    success = attack_success_rate(predicted_classes(model, triggered_eval.x), true_classes, target)
    return accuracy, success, len(labels), int((true_classes != target).sum())


def fine_prune(
    model: SplitClassifier,
    clean_train: LabeledTensors,
    clean_eval: LabeledTensors,
    triggered_eval: LabeledTensors | None,
    target: int | None,
    settings: FinePruningSettings,
    progress: Callable[[Iterable[float]], Iterable[float]] | None = None,
) -> list[FinePruningRow]:
    """Prune and fine-tune copies of ``model`` (the module docstring's steps); one row per fraction and stage.

    Parameters
    ----------
    model : SplitClassifier
        The audited model (never modified: each fraction works on a deep copy).
    clean_train : LabeledTensors
        The server's clean rows: they rank the units and fine-tune.
    clean_eval : LabeledTensors
        Other clean rows, for the clean accuracy.
    triggered_eval : LabeledTensors | None
        Rows stamped with the run's trigger, labelled with their true classes; None for no
        attack success rate (a run without a trigger).
    target : int | None
        The backdoor's target class; None as for ``triggered_eval``.
    settings : FinePruningSettings
        Fractions and fine-tuning settings.
    progress : Callable[[Iterable[float]], Iterable[float]] | None
        Wraps the iterable of fractions (a progress bar), or None.
    """
    order = pruning_order(mean_activations(model, clean_train))
    units = len(order)
    device = _device_of(model)
    training = LocalTraining(
        epochs=settings.fine_tune_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        optimizer="sgd",
        momentum=settings.momentum,
    )
    rows: list[FinePruningRow] = []
    fractions: Iterable[float] = settings.prune_fractions
    for fraction in progress(fractions) if progress is not None else fractions:
        count = math.floor(fraction * units + 1e-9)
        started = time.perf_counter()
        pruned = pruned_copy(model, order, count)
        measured = _measure(pruned, clean_eval, triggered_eval, target)
        rows.append(FinePruningRow(float(fraction), count, units, "pruned", *measured, time.perf_counter() - started))
        if settings.fine_tune_epochs == 0:
            continue
        started = time.perf_counter()
        train_locally(pruned, clean_train, training, device, settings.seed)
        measured = _measure(pruned, clean_eval, triggered_eval, target)
        rows.append(
            FinePruningRow(float(fraction), count, units, "fine-tuned", *measured, time.perf_counter() - started)
        )
    return rows
