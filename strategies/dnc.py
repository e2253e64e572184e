"""Divide-and-Conquer (Shejwalkar, Houmansadr, 2021, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2).

Algorithm, per round, with n updates x_i of d coordinates, f attackers assumed (as Krum's:
``krum-f``, auto = num-malicious, at least 1), c = ``dnc-filter-fraction``, b = ``dnc-subsample``
and ``dnc-iterations`` iterations:

1. the good set starts as all n updates;
2. each iteration draws b of the d coordinates at random, without replacement (all d when d <= b);
   a round draws its coordinates, one iteration after the other, as
   ``numpy.sort(rng.choice(d, b, replace=False))`` from
   ``rng = numpy.random.default_rng([seed, DNC_SALT, round])`` with the run's ``seed`` and the
   server round, so a run is reproducible round by round;
3. on those coordinates, centre the updates on their mean (uniform, as in the paper), take the top
   right singular vector v of the centred n × b matrix (float64, LAPACK, on the CPU) and score
   every update by s_i = ((x_i − μ) · v)²;
4. drop the ⌈c·f⌉ highest scores (ties: the higher partition id goes) and intersect the good set
   with the rest;
5. the aggregate is the mean of the good set, weighted by example counts as FedAvg (the paper
   averages plainly; ``client-weighting=uniform`` gives its mean). An empty good set (a round
   with at most ⌈c·f⌉ usable replies, or iterations that disagree on every update) aggregates
   nothing: the global model stays as it was.

The defaults (5 iterations, c = 1) are FLPoison's; b = 10,000 coordinates per iteration (FLPoison
draws a fraction 0.2 of them instead). Clients outside the good set are rejected, the others
accepted with their example shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import ConfigError, Setting, integer, positive_number
from strategies.krum import KRUM_F, assumed_attackers
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.weighted_average import average_of

# Keeps the coordinate draws apart from the other draws seeded by the run's seed.
DNC_SALT = 0x646E63
DNC_ITERATIONS: Setting[int] = Setting(
    "dnc-iterations", 5, "Iterations of dnc, each on its own random coordinates.", integer(1)
)
DNC_SUBSAMPLE: Setting[int] = Setting(
    "dnc-subsample",
    10_000,
    "Coordinates b drawn at random in each dnc iteration (all of them when the model has fewer).",
    integer(1),
)
DNC_FILTER_FRACTION: Setting[float] = Setting(
    "dnc-filter-fraction",
    1.0,
    "c: each dnc iteration drops the ceil(c * f) updates with the highest outlier scores.",
    positive_number,
)


def removed_per_iteration(filter_fraction: float, num_byzantine: int) -> int:
    """⌈c·f⌉ (c·f rounded to 9 decimals first, so that 0.1 × 30 removes 3).

    Parameters
    ----------
    filter_fraction : float
        c.
    num_byzantine : int
        f.
    """
    return math.ceil(round(filter_fraction * num_byzantine, 9))


def outlier_scores(sample: np.ndarray) -> np.ndarray:
    """((x_i − μ) · v)² for every row of ``sample``, v the top right singular vector of the centred rows.

    Parameters
    ----------
    sample : numpy.ndarray
        ``(n, b)`` float64 values of the updates on the drawn coordinates.
    """
    centred = sample - sample.mean(axis=0)
    top = np.linalg.svd(centred, full_matrices=False)[2][0]
    return np.square(centred @ top)


def lowest_rows(scores: np.ndarray, keep: int) -> set[int]:
    """The ``keep`` rows with the lowest scores (ties: the lower row).

    Parameters
    ----------
    scores : numpy.ndarray
        One score per row.
    keep : int
        How many rows are kept.
    """
    order = sorted(range(len(scores)), key=lambda row: (float(scores[row]), row))
    return set(order[:keep])


class DivideAndConquer(Defense):
    """Filter the updates with the largest projections on the top singular direction of random coordinates.

    Parameters
    ----------
    num_byzantine : int
        f.
    filter_fraction : float
        c.
    subsample : int
        b, coordinates per iteration.
    iterations : int
        Iterations per round.
    seed : int
        The run's seed; a round's coordinates come from ``[seed, DNC_SALT, server_round]``.
    """

    def __init__(self, num_byzantine: int, filter_fraction: float, subsample: int, iterations: int, seed: int) -> None:
        self.num_byzantine = num_byzantine
        self.filter_fraction = filter_fraction
        self.subsample = subsample
        self.iterations = iterations
        self.seed = seed

    def draw_coordinates(self, size: int, server_round: int) -> list[np.ndarray]:
        """The sorted coordinate subsets of round ``server_round``, one per iteration, among ``size`` coordinates."""
        generator = np.random.default_rng([self.seed, DNC_SALT, server_round])
        count = min(self.subsample, size)
        return [np.sort(generator.choice(size, count, replace=False)) for _ in range(self.iterations)]

    def good_rows(self, updates: RoundUpdates, subsets: Sequence[np.ndarray]) -> list[int]:
        """The rows kept by every iteration, sorted."""
        keep = max(0, updates.count - removed_per_iteration(self.filter_fraction, self.num_byzantine))
        good = set(range(updates.count))
        for coordinates in subsets:
            index = torch.from_numpy(coordinates).to(updates.device)
            sample = updates.matrix.index_select(1, index).to(torch.float64) * updates.scale[:, None]
            good &= lowest_rows(outlier_scores(sample.cpu().numpy()), keep)
        return sorted(good)

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """FedAvg over the rows every iteration kept; the others rejected."""
        return average_of(updates, self.good_rows(updates, self.draw_coordinates(updates.size, updates.server_round)))

    def describe(self) -> str:
        """f, c, b and the iterations."""
        return (
            f"dnc (f={self.num_byzantine}, c={self.filter_fraction:g}, b={self.subsample}, "
            f"iterations={self.iterations})"
        )


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """DnC must keep at least one update per iteration: f < clients per round and ⌈c·f⌉ < clients per round.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        Unused.
    """
    f, per_round = assumed_attackers(config), config.sampled_per_round
    if not f < per_round:
        raise ConfigError.bad_value(KRUM_F.key, f, f"f < clients per round ({per_round}) for dnc")
    fraction = config[DNC_FILTER_FRACTION]
    if not removed_per_iteration(fraction, f) < per_round:
        raise ConfigError.bad_value(
            DNC_FILTER_FRACTION.key, fraction, f"c with ceil(c * f) < clients per round ({per_round}; f = {f})"
        )


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """DnC with f, ``dnc-filter-fraction``, ``dnc-subsample``, ``dnc-iterations`` and ``seed`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return DivideAndConquer(
        assumed_attackers(config),
        config[DNC_FILTER_FRACTION],
        config[DNC_SUBSAMPLE],
        config[DNC_ITERATIONS],
        config.seed,
    )


DEFENSE = DefenseSpec(
    name="dnc",
    kind=AGGREGATION_RULE,
    summary="Drops the updates projecting furthest on the top singular direction of random coordinates, then FedAvg (Shejwalkar & Houmansadr, 2021).",
    settings=(KRUM_F, DNC_ITERATIONS, DNC_SUBSAMPLE, DNC_FILTER_FRACTION),
    check=check,
    build=build,
)
