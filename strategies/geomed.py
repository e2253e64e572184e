"""Geometric median by smoothed Weiszfeld iterations: RFA (Pillutla, Kakade, Harchaoui, 2022, "Robust
Aggregation for Federated Learning", IEEE Transactions on Signal Processing 70: the smoothed
Weiszfeld algorithm).

The aggregate approximates the weighted geometric median argmin_z Σ_i α_i ‖z − x_i‖ of the updates
x_i, with α_i their example shares (:func:`strategies.weighted_average.client_weights`, as RFA
weighs devices by their number of points; ``client-weighting=uniform`` gives the unweighted
median). Algorithm, per round, with ν = ``geomed-nu``, T = ``geomed-iterations`` and
tol = ``geomed-tolerance``:

1. start from the weighted mean z⁰ = Σ α_i x_i (RFA's reference implementation; ByzFL and FLPoison
   start from 0 and run a fixed number of iterations without a tolerance);
2. for t = 1 .. T: β_i = α_i / max(ν, ‖z^(t−1) − x_i‖) and z^t = Σ β_i x_i / Σ β_i;
3. stop after T iterations, or as soon as the objective g(z) = Σ α_i ‖z − x_i‖ changes by less
   than tol · g(z^t) (RFA's stopping rule).

Every iterate is a convex combination z = Σ c_j x_j (Σ c_j = 1) of the updates, so its distances
follow from the pairwise squared distances D (float64, :mod:`strategies.distances`) without
touching the updates again: ‖z − x_i‖² = (D c)_i − ½ cᵀ D c. The iterations run on these n × n
numbers (on the CPU, in float64), and the aggregate Σ c_j x_j is one more pass over the updates;
an iteration therefore costs no pass over the model, which is why the default allows 100 of them
(RFA's reference code defaults to 4 and its FEMNIST CNN script uses 2: there each iteration is a
call to the secure-average oracle). ν = 1e-5 and tol = 1e-6 are that code's ``eps`` and ``ftol``.

Every client is accepted with weight c_i, its share in the aggregate (outliers get small shares).
The iterations each round ran are the ``defense_iterations`` column of ``rounds.csv``; those of the
latest round are also kept on the rule (``iterations_used``) and shown by :meth:`GeometricMedian.describe`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, integer, non_negative_number, positive_number
from strategies.distances import pairwise_squared_distances
from strategies.spec import ACCEPTED, BuildContext, ClientDecision, Defense, DefenseSpec, Outcome
from strategies.weighted_average import client_weights, weighted_sum

GEOMED_ITERATIONS: Setting[int] = Setting(
    "geomed-iterations", 100, "Most smoothed Weiszfeld iterations geomed runs per round.", integer(1)
)
GEOMED_TOLERANCE: Setting[float] = Setting(
    "geomed-tolerance",
    1e-6,
    "geomed stops once an iteration changes the weighted sum of distances by less than this fraction of it (0: never early).",
    non_negative_number,
)
GEOMED_NU: Setting[float] = Setting(
    "geomed-nu",
    1e-5,
    "Smoothing of geomed: distances below it count as it in the Weiszfeld weights (nu).",
    positive_number,
)


def distances_to_combination(distances: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """‖z − x_i‖ for every i, with z = Σ c_j x_j (Σ c_j = 1), from the squared pairwise distances D.

    Parameters
    ----------
    distances : numpy.ndarray
        ``(n, n)`` float64 squared distances D.
    coefficients : numpy.ndarray
        c, ``(n,)`` summing to 1.
    """
    pulled = distances @ coefficients
    squared = pulled - 0.5 * float(coefficients @ pulled)
    return np.sqrt(np.maximum(squared, 0.0))


def smoothed_weiszfeld(
    distances: np.ndarray, alphas: Sequence[float], nu: float, iterations: int, tolerance: float
) -> tuple[np.ndarray, int]:
    """The coefficients c of the approximate weighted geometric median Σ c_j x_j, and the iterations run.

    Parameters
    ----------
    distances : numpy.ndarray
        ``(n, n)`` float64 squared distances between the points.
    alphas : Sequence[float]
        The points' weights α (summing to 1).
    nu : float
        ν > 0: the smallest distance used in a weight.
    iterations : int
        T, the most iterations.
    tolerance : float
        Stop once the objective changes by less than this fraction of its new value.
    """
    weights = np.asarray(alphas, dtype=np.float64)
    coefficients = weights.copy()
    objective = float(weights @ distances_to_combination(distances, coefficients))
    used = 0
    while used < iterations:
        betas = weights / np.maximum(nu, distances_to_combination(distances, coefficients))
        coefficients = betas / betas.sum()
        previous, objective = objective, float(weights @ distances_to_combination(distances, coefficients))
        used += 1
        if abs(previous - objective) < tolerance * objective:
            break
    return coefficients, used


class GeometricMedian(Defense):
    """The weighted geometric median of the updates, by smoothed Weiszfeld iterations.

    Parameters
    ----------
    iterations : int
        T, the most iterations per round.
    tolerance : float
        The relative change of the objective below which the iterations stop.
    nu : float
        ν, the smoothing.
    """

    def __init__(self, iterations: int, tolerance: float, nu: float) -> None:
        self.iterations = iterations
        self.tolerance = tolerance
        self.nu = nu
        self.iterations_used: int | None = None

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Everybody accepted, each with its coefficient in the median as weight."""
        rows = list(range(updates.count))
        distances = pairwise_squared_distances(updates).numpy()
        coefficients, self.iterations_used = smoothed_weiszfeld(
            distances, client_weights(updates, rows), self.nu, self.iterations, self.tolerance
        )
        shares = coefficients.tolist()
        norms = updates.scaled_norms().tolist()
        decisions = tuple(
            ClientDecision(pid, ACCEPTED, norms[row], shares[row]) for row, pid in enumerate(updates.partition_ids)
        )
        return Outcome(
            update=weighted_sum(updates, rows, shares),
            decisions=decisions,
            metric_rows=tuple(rows),
            diagnostics={"iterations": self.iterations_used},
        )

    def describe(self) -> str:
        """The settings, and the iterations of the latest round."""
        latest = "none yet" if self.iterations_used is None else str(self.iterations_used)
        return (
            f"geometric median (smoothed Weiszfeld: at most {self.iterations} iterations, tolerance "
            f"{self.tolerance:g}, nu {self.nu:g}; iterations in the latest round: {latest})"
        )


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """The geometric median with ``geomed-iterations``, ``geomed-tolerance`` and ``geomed-nu`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return GeometricMedian(config[GEOMED_ITERATIONS], config[GEOMED_TOLERANCE], config[GEOMED_NU])


DEFENSE = DefenseSpec(
    name="geomed",
    kind=AGGREGATION_RULE,
    summary="Weighted geometric median of the updates by smoothed Weiszfeld iterations (RFA, Pillutla et al., 2022).",
    settings=(GEOMED_ITERATIONS, GEOMED_TOLERANCE, GEOMED_NU),
    build=build,
)
