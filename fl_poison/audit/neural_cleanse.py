"""Neural Cleanse: reverse-engineer a trigger for every class and flag the class whose trigger is unusually small.

Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, "Neural Cleanse: Identifying and Mitigating
Backdoor Attacks in Neural Networks", IEEE Symposium on Security and Privacy 2019, Section IV
(detecting backdoors: reverse-engineering triggers, then the outlier test on their norms). ART's ``NeuralCleanse`` wraps Keras models only, so this is an implementation of its
own, in torch, following the paper and its reference implementation (``visualizer.py`` of the
authors' repository: the tanh parametrisation, Adam's betas and the dynamic cost schedule).

A backdoored model sends any input carrying a small trigger to the target class, so the smallest
change that sends every clean input to that class is much smaller than for the other classes.
For each class ``t``:

1. Parametrise a trigger as a mask ``m`` (H, W) in [0, 1], shared by the channels, and a pattern
   ``Δ`` (C, H, W) in [0, 1]: ``A(x, m, Δ) = (1 − m) ⊙ x + m ⊙ Δ``. Both are kept in range through
   ``m = tanh(w_m) / (2 − ε) + 0.5`` (likewise ``Δ``), starting from uniform random values.
2. Minimise ``CE(f(A(x, m, Δ)), t) + λ · |m|₁`` over the clean images in shuffled mini-batches
   with Adam (β = (0.5, 0.9)); one *step* is one pass over the images (the reference's ``steps``).
3. λ follows the reference implementation's dynamic schedule (``cost-schedule = dynamic``, the
   default; the paper adjusts λ during the optimisation so that more than 99 % of the clean
   images are sent to the class): λ starts at 0; once the step's attack success reaches
   ``attack_success_threshold`` for ``patience`` steps in a row, λ becomes ``init_cost``; from then
   on it is multiplied by ``cost_multiplier`` after ``patience`` steps in a row at or above the
   threshold and divided by ``cost_multiplier ** 1.5`` after ``patience`` steps in a row below it.
   The optimisation stops early once λ has gone both up and down and the best L1 norm has not
   fallen below ``early_stop_threshold`` times its previous best for ``early_stop_patience``
   steps. ``cost-schedule = fixed`` keeps λ = ``init_cost`` for every step, without early stop.
4. Keep the mask and pattern of the step with the smallest ``|m|₁`` (the mask at the step's end)
   among the steps whose attack success during the step reached the threshold; when none did, the
   last ones. The class's reversed trigger is that pair; its attack success is measured again on
   all the images (those of class ``t`` included, as in the optimisation).

Then the L1 norms ``l₁, …, l_K`` of the reversed masks are compared by the median
absolute deviation: with ``m̃ = median(l)`` and ``MAD = median(|l_k − m̃|)``, the anomaly index of
class ``k`` is ``(m̃ − l_k) / (1.4826 · MAD)`` (1.4826 makes the MAD a consistent estimator of the
standard deviation of normal data). The sign keeps the paper's one-sided rule: only classes
*below* the median are candidates, so a positive index means a small trigger; a class whose index
exceeds 2 (an outlier with more than 95 % probability under normality) is flagged as infected.
With a MAD of 0 (half the norms or more tie at the median), a class above or below the median gets
an index of −∞ or +∞, a class at the median 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fl_poison.core.settings import ConfigError

CONSISTENCY_CONSTANT = 1.4826
TANH_EPSILON = 1e-7
ADAM_BETAS = (0.5, 0.9)
COST_SCHEDULES = ("dynamic", "fixed")


@dataclass(frozen=True)
class NeuralCleanseSettings:
    """How triggers are reverse-engineered (see the module docstring for each step).

    Attributes
    ----------
    steps : int
        Passes over the images per class (the reference's ``steps``; ART's Keras version defaults
        to 1000). 60 keep a digits audit (10 classes, 360 rows, small-cnn) near 10 s on one busy
        CPU thread; early stopping (dynamic schedule) may end a class sooner.
    learning_rate : float
        Adam's step size on the tanh-space mask and pattern (0.1, the reference's value).
    init_cost : float
        λ, the weight of the mask's L1 norm: the value the dynamic schedule starts from once the
        attack succeeds, or the fixed weight (1e-3, the reference's value).
    cost_schedule : str
        ``dynamic`` (the reference's schedule) or ``fixed`` (λ = ``init_cost`` throughout).
    attack_success_threshold : float
        Share of images sent to the class for a trigger to count (0.99, the paper's value).
    patience : int
        Steps in a row above or below the threshold before λ changes (ART's default 5; 4 here,
        for the shorter optimisation).
    cost_multiplier : float
        λ's factor up; the factor down is its power 1.5 (1.5, the reference's value).
    early_stop_patience : int
        Steps without a relative improvement of the best L1 norm before stopping (twice ``patience``,
        as in the reference).
    early_stop_threshold : float
        An improvement counts when the best L1 norm falls below this share of its previous best (0.99).
    batch_size : int
        Images per mini-batch (64: fewer steps of a larger batch converged worse in the same time).
    anomaly_threshold : float
        Anomaly index above which a class is flagged (2, the paper's value).
    seed : int
        Seeds the initial masks and patterns and the order of the mini-batches.
    """

    steps: int = 60
    learning_rate: float = 0.1
    init_cost: float = 1e-3
    cost_schedule: str = "dynamic"
    attack_success_threshold: float = 0.99
    patience: int = 4
    cost_multiplier: float = 1.5
    early_stop_patience: int = 8
    early_stop_threshold: float = 0.99
    batch_size: int = 64
    anomaly_threshold: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "patience", "early_stop_patience", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError.bad_value(f"neural-cleanse {name}", value, "an integer >= 1")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ConfigError.bad_value("neural-cleanse learning_rate", self.learning_rate, "a number > 0")
        if not self.init_cost >= 0 or not math.isfinite(self.init_cost):
            raise ConfigError.bad_value("neural-cleanse init_cost", self.init_cost, "a number >= 0")
        if self.cost_schedule not in COST_SCHEDULES:
            raise ConfigError.bad_value("neural-cleanse cost_schedule", self.cost_schedule, " | ".join(COST_SCHEDULES))
        for name in ("attack_success_threshold", "early_stop_threshold"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError.bad_value(f"neural-cleanse {name}", value, "a number in (0, 1]")
        if not self.cost_multiplier > 1.0 or not math.isfinite(self.cost_multiplier):
            raise ConfigError.bad_value("neural-cleanse cost_multiplier", self.cost_multiplier, "a number > 1")
        if not self.anomaly_threshold > 0 or not math.isfinite(self.anomaly_threshold):
            raise ConfigError.bad_value("neural-cleanse anomaly_threshold", self.anomaly_threshold, "a number > 0")


@dataclass(frozen=True)
class NeuralCleanseResult:
    """The reversed trigger of every class and the outlier test on their sizes.

    Attributes
    ----------
    masks : np.ndarray
        ``(K, H, W)`` reversed masks in [0, 1].
    patterns : np.ndarray
        ``(K, C, H, W)`` reversed patterns in [0, 1].
    mask_l1 : np.ndarray
        ``(K,)`` L1 norm of each mask (its sum: pixels covered, fractionally).
    attack_success : np.ndarray
        ``(K,)`` share of the images that the reversed trigger of class ``k`` sends to ``k``.
    anomaly_index : np.ndarray
        ``(K,)`` ``(median − l1_k) / (1.4826 · MAD)``: positive below the median.
    flagged : tuple[int, ...]
        Classes whose anomaly index exceeds the threshold (small-norm side only), increasing.
    median_l1 : float
        Median of ``mask_l1``.
    mad : float
        Median absolute deviation of ``mask_l1`` (without the 1.4826 factor).
    steps_run : np.ndarray
        ``(K,)`` passes over the images each class ran (fewer than ``steps`` after an early stop).
    seconds : np.ndarray
        ``(K,)`` seconds each class took.
    """

    masks: np.ndarray
    patterns: np.ndarray
    mask_l1: np.ndarray
    attack_success: np.ndarray
    anomaly_index: np.ndarray
    flagged: tuple[int, ...]
    median_l1: float
    mad: float
    steps_run: np.ndarray
    seconds: np.ndarray


def anomaly_indices(norms: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The one-sided MAD anomaly index of each norm, the median and the MAD (Section IV-C).

    Parameters
    ----------
    norms : np.ndarray
        ``(K,)`` L1 norms of the reversed masks.

    Returns
    -------
    tuple[np.ndarray, float, float]
        ``(median − l_k) / (1.4826 · MAD)`` per class (±inf, or 0 at the median, when the MAD is
        0), the median and the MAD.
    """
    values = np.asarray(norms, dtype=np.float64)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    below = median - values
    if mad > 0.0:
        return below / (CONSISTENCY_CONSTANT * mad), median, mad
    index = np.zeros_like(values)
    index[below > 0.0], index[below < 0.0] = math.inf, -math.inf
    return index, median, mad


def _to_unit_interval(raw: torch.Tensor) -> torch.Tensor:
    return torch.tanh(raw) / (2.0 - TANH_EPSILON) + 0.5


def _from_unit_interval(values: torch.Tensor) -> torch.Tensor:
    return torch.atanh((values - 0.5) * (2.0 - TANH_EPSILON))


def stamp(images: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``(1 − m) ⊙ x + m ⊙ Δ``: ``images`` (N, C, H, W) with the trigger ``mask`` (H, W), ``pattern`` (C, H, W).

    Parameters
    ----------
    images : torch.Tensor
        Clean inputs in [0, 1].
    mask : torch.Tensor
        Weights in [0, 1], shared by the channels.
    pattern : torch.Tensor
        Pixel values in [0, 1].
    """
    return (1.0 - mask) * images + mask * pattern


@torch.no_grad()
def _success(
    model: nn.Module, images: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, target: int, batch_size: int
) -> float:
    hits = 0
    for start in range(0, len(images), batch_size):
        logits = model(stamp(images[start : start + batch_size], mask, pattern))
        hits += int((logits.argmax(dim=1) == target).sum())
    return hits / len(images)


@dataclass
class CostSchedule:
    """The reference implementation's λ schedule and early stop (step 3), advanced once per step.

    Parameters
    ----------
    settings : NeuralCleanseSettings
        ``cost_schedule``, ``init_cost``, ``attack_success_threshold``, ``patience``,
        ``cost_multiplier``, ``early_stop_patience`` and ``early_stop_threshold`` are read.

    Attributes
    ----------
    cost : float
        λ now (0 at the start of the dynamic schedule, ``init_cost`` for the fixed one).
    """

    settings: NeuralCleanseSettings
    cost: float = field(default=0.0, init=False)
    set_counter: int = field(default=0, init=False)
    up_counter: int = field(default=0, init=False)
    down_counter: int = field(default=0, init=False)
    went_up: bool = field(default=False, init=False)
    went_down: bool = field(default=False, init=False)
    early_stop_counter: int = field(default=0, init=False)
    early_stop_best: float = field(default=math.inf, init=False)

    def __post_init__(self) -> None:
        self.cost = self.settings.init_cost if self.settings.cost_schedule == "fixed" else 0.0

    def should_stop(self, best_norm: float) -> bool:
        """Count a step without improvement of ``best_norm``; True when the optimisation should end."""
        if self.settings.cost_schedule == "fixed":
            return False
        if best_norm < math.inf:
            improved = best_norm < self.settings.early_stop_threshold * self.early_stop_best
            self.early_stop_counter = 0 if improved else self.early_stop_counter + 1
        self.early_stop_best = min(best_norm, self.early_stop_best)
        return self.went_up and self.went_down and self.early_stop_counter >= self.settings.early_stop_patience

    def update(self, success: float) -> None:
        """Move λ after a step whose attack success was ``success``."""
        settings = self.settings
        if settings.cost_schedule == "fixed":
            return
        succeeded = success >= settings.attack_success_threshold
        if self.cost == 0.0 and succeeded:
            self.set_counter += 1
            if self.set_counter >= settings.patience:
                self.cost = settings.init_cost
                self.up_counter = self.down_counter = 0
                self.went_up = self.went_down = False
        else:
            self.set_counter = 0
        self.up_counter, self.down_counter = (self.up_counter + 1, 0) if succeeded else (0, self.down_counter + 1)
        if self.up_counter >= settings.patience:
            self.up_counter = 0
            self.cost *= settings.cost_multiplier
            self.went_up = True
        elif self.down_counter >= settings.patience:
            self.down_counter = 0
            self.cost /= settings.cost_multiplier**1.5
            self.went_down = True


def reverse_class(
    model: nn.Module, images: torch.Tensor, target: int, settings: NeuralCleanseSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The smallest successful trigger towards ``target`` found (steps 1–4), and the steps run.

    Parameters
    ----------
    model : nn.Module
        The classifier, in evaluation mode; its parameters are not changed (gradients are taken
        with respect to the trigger only).
    images : torch.Tensor
        ``(N, C, H, W)`` clean inputs in [0, 1], on the model's device.
    target : int
        The class to reach.
    settings : NeuralCleanseSettings
        The optimisation's settings.
    generator : torch.Generator
        Draws the initial trigger and the order of the mini-batches.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, int]
        The mask ``(H, W)``, the pattern ``(C, H, W)`` and the number of steps run.
    """
    _, channels, height, width = images.shape
    device = images.device
    initial_mask = torch.rand((height, width), generator=generator)
    initial_pattern = torch.rand((channels, height, width), generator=generator)
    mask_raw = _from_unit_interval(initial_mask).to(device).requires_grad_(True)
    pattern_raw = _from_unit_interval(initial_pattern).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=settings.learning_rate, betas=ADAM_BETAS)
    schedule = CostSchedule(settings)
    best_mask, best_pattern, best_norm = None, None, math.inf
    steps_run = 0
    for _ in range(settings.steps):
        steps_run += 1
        order = torch.randperm(len(images), generator=generator).to(device)
        hits = 0
        for start in range(0, len(images), settings.batch_size):
            batch = images[order[start : start + settings.batch_size]]
            mask, pattern = _to_unit_interval(mask_raw), _to_unit_interval(pattern_raw)
            logits = model(stamp(batch, mask, pattern))
            wanted = torch.full((len(batch),), target, dtype=torch.long, device=device)
            loss = nn.functional.cross_entropy(logits, wanted) + schedule.cost * mask.sum()
            mask_gradient, pattern_gradient = torch.autograd.grad(loss, [mask_raw, pattern_raw])
            mask_raw.grad, pattern_raw.grad = mask_gradient, pattern_gradient
            optimizer.step()
            hits += int((logits.detach().argmax(dim=1) == target).sum())
        success = hits / len(images)
        with torch.no_grad():
            mask, pattern = _to_unit_interval(mask_raw), _to_unit_interval(pattern_raw)
            norm = float(mask.sum())
        if success >= settings.attack_success_threshold and norm < best_norm:
            best_mask, best_pattern, best_norm = mask.clone(), pattern.clone(), norm
        if schedule.should_stop(best_norm):
            break
        schedule.update(success)
    if best_mask is None or best_pattern is None:
        with torch.no_grad():
            best_mask, best_pattern = _to_unit_interval(mask_raw), _to_unit_interval(pattern_raw)
    return best_mask.detach(), best_pattern.detach(), steps_run


def reverse_engineer(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    num_classes: int,
    settings: NeuralCleanseSettings,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> NeuralCleanseResult:
    """Reverse-engineer a trigger for every class of ``model`` on clean ``images`` and flag outliers.

    Parameters
    ----------
    model : nn.Module
        The audited classifier; left as it was (its parameters, gradients and train/eval mode).
    images : torch.Tensor | np.ndarray
        ``(N, C, H, W)`` clean inputs in [0, 1] (the server's held-out rows).
    num_classes : int
        Number of classes ``K``.
    settings : NeuralCleanseSettings
        The optimisation's and the test's settings.
    progress : Callable[[Iterable[int]], Iterable[int]] | None
        Wraps the iterable of classes (a progress bar), or None.
    """
    if num_classes < 2:
        raise ConfigError.bad_value("num_classes", num_classes, "an integer >= 2")
    parameters = list(model.parameters())
    device = parameters[0].device if parameters else torch.device("cpu")
    inputs = torch.as_tensor(images, dtype=torch.float32).to(device)
    if inputs.ndim != 4 or len(inputs) == 0:
        raise ConfigError.bad_value("images", tuple(inputs.shape), "a non-empty batch of shape (N, C, H, W)")
    generator = torch.Generator().manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    masks, patterns, success, steps_run, seconds = [], [], [], [], []
    classes: Iterable[int] = range(num_classes)
    try:
        for target in progress(classes) if progress is not None else classes:
            started = time.perf_counter()
            mask, pattern, steps = reverse_class(model, inputs, target, settings, generator)
            success.append(_success(model, inputs, mask, pattern, target, settings.batch_size))
            masks.append(mask.cpu().numpy())
            patterns.append(pattern.cpu().numpy())
            steps_run.append(steps)
            seconds.append(time.perf_counter() - started)
    finally:
        model.train(was_training)
    norms = np.array([float(mask.sum()) for mask in masks])
    index, median, mad = anomaly_indices(norms)
    return NeuralCleanseResult(
        masks=np.stack(masks),
        patterns=np.stack(patterns),
        mask_l1=norms,
        attack_success=np.array(success),
        anomaly_index=index,
        flagged=tuple(int(k) for k in np.flatnonzero(index > settings.anomaly_threshold)),
        median_l1=median,
        mad=mad,
        steps_run=np.array(steps_run),
        seconds=np.array(seconds),
    )
