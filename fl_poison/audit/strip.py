"""STRIP: run-time detection of backdoor-triggered inputs by the entropy of superimposed predictions.

Gao, Xu, Wang, Chen, Ranasinghe and Nepal, "STRIP: A Defence Against Trojan Attacks on Deep Neural
Networks", ACSAC 2019 (arXiv:1902.06531): Algorithm 1 (run-time detection) and the detection
boundary its evaluation derives from a preset false rejection rate.
A backdoor makes the trigger dominate the prediction whatever else the image shows, so an input
that carries the trigger keeps its (target) class when other images are blended into it, while a
clean input's class changes with what is blended in. Steps, for each audited input ``x``:

1. Draw ``N`` (``overlays``) images ``d_1 .. d_N`` without replacement from a clean pool the
   defender holds (with replacement only when the pool is smaller than ``N``); a pool row audited
   itself never overlays itself.
2. Superimpose each: ``x_n = alpha x + (1 - alpha) d_n`` with ``alpha = 0.5`` (a linear blend, as
   ART's ``combine_images``; the authors' code adds the two images with OpenCV's ``addWeighted``).
3. Classify the ``N`` blends; the entropy of blend ``n`` is ``H_n = -sum_i y_i log2 y_i`` over the
   softmax probabilities ``y_i`` of the classes; ``0 log 0 = 0``.
4. The input's normalised entropy is ``H = (1 / N) sum_n H_n``. Low ``H``: suspicious.
5. Detection boundary: the entropies of the defender's clean pool (each pool row blended
   with other pool rows) are taken to be normal; the boundary is the ``false-rejection-rate``
   quantile (1 % in the paper) of the fitted normal, ``mean + std * Phi^-1(FRR)`` with the
   maximum-likelihood standard deviation (ddof 0, as ``scipy.stats.norm.fit``). An input is
   rejected as triggered when ``H <= boundary``.

The audit scores STRIP on rows the boundary was not fitted on: the held-out test rows are split
(seeded) into the clean pool and the audited rows; the audited rows are scored clean, and those
whose true class is not the backdoor target are scored again stamped with the run's trigger. It
reports the detection rate at the boundary (1 - the paper's false acceptance rate), the clean
rows' rejection rate measured at that boundary (the paper's FRR, which the normal fit only
approximates: when a confident model's clean entropies pile up near 0 the fitted quantile can
fall below 0 and nothing is rejected), and the AUROC of ``-H`` with the triggered rows positive
and the clean versions of the same rows negative, each triggered row blended with the same
overlays as its clean version (rows of the target class are left out of both sides, so that the
AUROC measures the trigger and not a difference between classes or between overlay draws: a
model that ignores the trigger scores 0.5 exactly), over all triggered rows and over those the
backdoor actually sends to the target (a trigger the model ignores cannot be detected by its effect on the
prediction).

ART 1.20's ``STRIP`` is not used: it draws overlays with the global ``np.random`` (no seed), with
replacement, from the same set it calibrates on, and computes ``scipy.stats.entropy(predictions,
axis=0)``, an entropy across the ``N`` blends of each class's probability, not the per-blend
entropy over classes of step 3.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch import nn

from fl_poison.core.data import LabeledTensors
from fl_poison.core.settings import ConfigError

BLEND_ALPHA = 0.5
DEFAULT_OVERLAYS = 50
DEFAULT_POOL_ROWS = 100
DEFAULT_INPUTS = 200
DEFAULT_FALSE_REJECTION_RATE = 0.01
DEFAULT_BATCH_SIZE = 1000

Progress = Callable[[Iterable[int]], Iterable[int]]


@dataclass(frozen=True)
class StripSettings:
    """What STRIP runs with.

    Attributes
    ----------
    overlays : int
        ``N``, clean images blended into each audited input (the paper's experiments use 100; 50
        by default here to keep a digits audit within seconds; see :func:`strip_audit`).
    pool_rows : int
        Held-out rows set aside as the defender's clean pool (overlays and the boundary's fit).
    inputs : int
        At most this many of the other held-out rows are audited (clean, and stamped when their
        class is not the target).
    false_rejection_rate : float
        The preset FRR in (0, 1) that places the detection boundary (the paper's 1 %).
    alpha : float
        Weight of the audited input in each blend, in (0, 1).
    batch_size : int
        Blends classified per forward pass (at least ``overlays`` are, one input at a time).
    seed : int
        Seeds the pool split and the overlay draws.
    """

    overlays: int = DEFAULT_OVERLAYS
    pool_rows: int = DEFAULT_POOL_ROWS
    inputs: int = DEFAULT_INPUTS
    false_rejection_rate: float = DEFAULT_FALSE_REJECTION_RATE
    alpha: float = BLEND_ALPHA
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        for key, value in (
            ("overlays", self.overlays),
            ("pool_rows", self.pool_rows),
            ("inputs", self.inputs),
            ("batch_size", self.batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError.bad_value(key, value, "an integer >= 1")
        for key, number in (("false_rejection_rate", self.false_rejection_rate), ("alpha", self.alpha)):
            if not 0.0 < number < 1.0:
                raise ConfigError.bad_value(key, number, "a number in (0, 1)")


@dataclass(frozen=True)
class StripResult:
    """What STRIP found on the audited rows.

    Attributes
    ----------
    auroc : float
        Area under the ROC curve of ``-H`` separating the triggered inputs (positive) from the
        clean versions of the same rows (scikit-learn's ``roc_auc_score``); 0.5 is chance, 1 a
        perfect separation. NaN without triggered rows.
    auroc_successful : float
        The same over the triggered rows the model assigns to the target and their clean
        versions (NaN if none).
    threshold : float
        The detection boundary on ``H`` fitted on the pool (inputs with ``H <= threshold`` are rejected).
    detection_rate : float
        Share of triggered inputs rejected at the boundary (1 - the paper's FAR).
    detection_rate_successful : float
        The same over the triggered rows the model assigns to the target (NaN if none).
    false_rejection_rate : float
        Share of audited clean inputs rejected at the boundary (measured; preset in the settings).
    clean_entropies : np.ndarray
        ``H`` of each audited clean input.
    triggered_entropies : np.ndarray
        ``H`` of each triggered input.
    pool_entropies : np.ndarray
        ``H`` of each pool row (blended with other pool rows), the boundary's sample.
    triggered_success : np.ndarray
        Whether the model assigns each (unblended) triggered input to the target.
    clean_rows : np.ndarray
        Positions in the test set of the audited clean inputs.
    triggered_rows : np.ndarray
        Positions in the test set of the rows stamped into the triggered inputs.
    pool_rows : np.ndarray
        Positions in the test set of the pool.
    seconds : float
        Wall time of :func:`strip_audit`.
    """

    auroc: float
    auroc_successful: float
    threshold: float
    detection_rate: float
    detection_rate_successful: float
    false_rejection_rate: float
    clean_entropies: np.ndarray
    triggered_entropies: np.ndarray
    pool_entropies: np.ndarray
    triggered_success: np.ndarray
    clean_rows: np.ndarray
    triggered_rows: np.ndarray
    pool_rows: np.ndarray
    seconds: float


def overlay_indices(
    count: int, pool_size: int, overlays: int, rng: np.random.Generator, exclude_own_row: bool = False
) -> np.ndarray:
    """``(count, overlays)`` pool positions: for each input, a draw without replacement (with it if the pool is short).

    Parameters
    ----------
    count : int
        Number of inputs.
    pool_size : int
        Rows in the pool.
    overlays : int
        Draws per input.
    rng : np.random.Generator
        The source of the draws.
    exclude_own_row : bool
        The inputs are the pool's rows in order: input ``i`` never draws pool row ``i``.
    """
    available = pool_size - 1 if exclude_own_row else pool_size
    if available < 1:
        raise ValueError(f"pool_size: bad value {pool_size!r}; allowed: at least {2 if exclude_own_row else 1} rows")
    if overlays <= available:
        keys = rng.random((count, available))
        draws = np.argsort(keys, axis=1)[:, :overlays]
    else:
        draws = rng.integers(0, available, size=(count, overlays))
    if exclude_own_row:
        draws = draws + (draws >= np.arange(count)[:, None])
    return draws


def blend_entropies(model: nn.Module, blends: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of the model's softmax output for each input of ``blends`` (``0 log 0 = 0``).

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits.
    blends : torch.Tensor
        ``(M, C, H, W)`` inputs.
    """
    with torch.no_grad():
        log_probabilities = torch.log_softmax(model(blends).double(), dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=1) / np.log(2.0)


def strip_entropies(
    model: nn.Module,
    inputs: torch.Tensor,
    clean_pool: torch.Tensor,
    overlays: int,
    seed: int | Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    alpha: float = BLEND_ALPHA,
    inputs_are_pool: bool = False,
    progress: Progress | None = None,
    draws: np.ndarray | None = None,
) -> np.ndarray:
    """STRIP's normalised entropy ``H`` (steps 1-4 of the module docstring) of each input, in bits.

    Parameters
    ----------
    model : nn.Module
        The audited classifier (put in evaluation mode; its weights are not changed).
    inputs : torch.Tensor
        ``(M, C, H, W)`` audited inputs.
    clean_pool : torch.Tensor
        ``(P, C, H, W)`` clean images to blend in.
    overlays : int
        ``N``, blends per input.
    seed : int | Sequence[int]
        Seeds the overlay draws (``numpy.random.default_rng(seed)``).
    batch_size : int
        Blends per forward pass (rounded to whole inputs, at least one input).
    alpha : float
        Weight of the input in each blend.
    inputs_are_pool : bool
        ``inputs`` is ``clean_pool`` itself: a row is never blended with itself.
    progress : Callable | None
        Wraps the iterable of chunk starts (e.g. a progress bar).
    draws : np.ndarray | None
        ``(M, overlays)`` pool positions to blend with each input, instead of drawing them with
        ``seed`` (see :func:`overlay_indices`).
    """
    if inputs_are_pool and len(inputs) != len(clean_pool):
        raise ValueError("inputs_are_pool: the inputs must be the pool's rows")
    count = len(inputs)
    if count == 0:
        return np.zeros(0)
    if draws is None:
        draws = overlay_indices(count, len(clean_pool), overlays, np.random.default_rng(seed), inputs_are_pool)
    if draws.shape != (count, overlays):
        raise ValueError(f"draws: bad shape {draws.shape}; allowed: ({count}, {overlays})")
    positions = torch.from_numpy(draws)
    device = next(model.parameters()).device
    pool = clean_pool.to(device)
    per_chunk = max(1, batch_size // overlays)
    starts: Iterable[int] = range(0, count, per_chunk)
    if progress is not None:
        starts = progress(starts)
    entropies = torch.empty(count, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for start in starts:
            chunk = inputs[start : start + per_chunk].to(device)
            chosen = pool[positions[start : start + per_chunk]]
            blends = alpha * chunk[:, None] + (1.0 - alpha) * chosen
            values = blend_entropies(model, blends.reshape(-1, *chunk.shape[1:])).reshape(len(chunk), overlays)
            entropies[start : start + len(chunk)] = values.mean(dim=1).cpu()
    return entropies.numpy()


def detection_boundary(pool_entropies: np.ndarray, false_rejection_rate: float) -> float:
    """The ``false_rejection_rate`` quantile of the normal fitted to ``pool_entropies`` (step 5).

    Parameters
    ----------
    pool_entropies : np.ndarray
        ``H`` of clean inputs.
    false_rejection_rate : float
        The preset FRR in (0, 1).
    """
    mean = float(np.mean(pool_entropies))
    spread = float(np.std(pool_entropies))
    if spread == 0.0:
        return mean
    return NormalDist(mean, spread).inv_cdf(false_rejection_rate)


def triggered_auroc(clean_entropies: np.ndarray, triggered_entropies: np.ndarray) -> float:
    """AUROC of ``-H`` with triggered inputs positive; NaN when either group is empty.

    Parameters
    ----------
    clean_entropies : np.ndarray
        ``H`` of clean inputs (negatives).
    triggered_entropies : np.ndarray
        ``H`` of triggered inputs (positives).
    """
    if len(clean_entropies) == 0 or len(triggered_entropies) == 0:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # ~1 s to import: only when an audit scores STRIP

    truth = np.concatenate([np.zeros(len(clean_entropies)), np.ones(len(triggered_entropies))])
    scores = -np.concatenate([clean_entropies, triggered_entropies])
    return float(roc_auc_score(truth, scores))


def _share(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def strip_audit(
    model: nn.Module,
    test_set: LabeledTensors,
    stamp: Callable[[torch.Tensor], torch.Tensor],
    target: int,
    settings: StripSettings = StripSettings(),
    progress: Progress | None = None,
) -> StripResult:
    """STRIP on the held-out rows: the pool, the boundary, and the scores of clean and triggered rows.

    With the defaults on digits (360 rows): 100 pool rows, 200 audited clean rows and about 180
    triggered ones, i.e. about 24,000 blends: 0.8 to 1.4 s for a small-cnn with one torch thread
    on the shared 2-core machine (about twice that with the paper's 100 overlays).

    Parameters
    ----------
    model : nn.Module
        The audited classifier (not modified).
    test_set : LabeledTensors
        The held-out rows; needs more than ``settings.pool_rows`` rows.
    stamp : Callable[[torch.Tensor], torch.Tensor]
        Stamps the run's trigger on a batch (e.g. :meth:`clients.triggers.Trigger.apply`).
    target : int
        The backdoor's target class.
    settings : StripSettings
        Overlays, pool size, audited rows, preset FRR, blend weight, batch size, seed.
    progress : Callable | None
        Wraps each iterable of chunk starts (e.g. a progress bar).
    """
    began = time.perf_counter()
    if len(test_set) <= settings.pool_rows:
        raise ConfigError.bad_value("pool_rows", settings.pool_rows, f"fewer than the {len(test_set)} held-out rows")
    order = np.random.default_rng((settings.seed, 0)).permutation(len(test_set))
    pool_rows = np.sort(order[: settings.pool_rows])
    clean_rows = np.sort(order[settings.pool_rows : settings.pool_rows + settings.inputs])
    triggered_rows = clean_rows[test_set.y[clean_rows].numpy() != target]
    pool = test_set.x[pool_rows]
    clean = test_set.x[clean_rows]
    triggered = stamp(test_set.x[triggered_rows])

    clean_draws = overlay_indices(
        len(clean_rows), len(pool_rows), settings.overlays, np.random.default_rng((settings.seed, 2))
    )

    def entropies(inputs: torch.Tensor, draws: np.ndarray | None, inputs_are_pool: bool = False) -> np.ndarray:
        return strip_entropies(
            model,
            inputs,
            pool,
            settings.overlays,
            (settings.seed, 1),
            settings.batch_size,
            settings.alpha,
            inputs_are_pool,
            progress,
            draws,
        )

    is_triggered = np.isin(clean_rows, triggered_rows)
    pool_entropies = entropies(pool, None, inputs_are_pool=True)
    clean_entropies = entropies(clean, clean_draws)
    triggered_entropies = entropies(triggered, clean_draws[is_triggered])
    threshold = detection_boundary(pool_entropies, settings.false_rejection_rate)
    device = next(model.parameters()).device
    with torch.no_grad():
        success = (
            (model(triggered.to(device)).argmax(dim=1) == target).cpu().numpy() if len(triggered) else np.zeros(0, bool)
        )
    rejected = triggered_entropies <= threshold
    paired_clean = clean_entropies[is_triggered]
    return StripResult(
        auroc=triggered_auroc(paired_clean, triggered_entropies),
        auroc_successful=triggered_auroc(paired_clean[success], triggered_entropies[success]),
        threshold=threshold,
        detection_rate=_share(rejected),
        detection_rate_successful=_share(rejected[success]),
        false_rejection_rate=_share(clean_entropies <= threshold),
        clean_entropies=clean_entropies,
        triggered_entropies=triggered_entropies,
        pool_entropies=pool_entropies,
        triggered_success=success.astype(bool),
        clean_rows=clean_rows,
        triggered_rows=triggered_rows,
        pool_rows=pool_rows,
        seconds=time.perf_counter() - began,
    )
