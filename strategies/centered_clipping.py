"""Centered clipping (Karimireddy, He, Jaggi, 2021, "Learning from History for Byzantine Robust
Optimization", ICML 2021: the centered clipping aggregator).

Algorithm, per round, with the n updates x_i, radius τ = ``cc-radius`` and L = ``cc-iterations``:

1. start from the reference v₀ = the previous round's aggregate (0 in the first round): the
   "history" of the paper, kept on the rule object, which the server builds once per run;
2. L times: v_{l+1} = v_l + (1/n) Σ_i clip_τ(x_i − v_l), with clip_τ(y) = y · min(1, τ / ‖y‖)
   (the mean is uniform, as in the paper; distances ‖x_i − v_l‖ in float64, blockwise);
3. the aggregate is v_L, which also becomes the next round's reference.

In the paper the workers send momentum vectors and the server clips them around its previous
aggregate; here the updates w_i − w_global play that part (ByzFL's and FLPoison's
``CenteredClipping`` do the same: their reference is the previous output). L defaults to 1, as in
ByzFL and FLPoison. τ is in the units of an update norm and has no value right for every model
(ByzFL and FLPoison default to 100; the authors' repository explores 0.1, 10 and 1000): the
default 10 is above the honest update norms of the lab's digits runs (about 0.2 to 2.7) and near
those of the seed-004 MNIST runs (about 8 to 12), so set it from the norms in ``clients.csv``.

Decisions: a client whose difference from the reference exceeded τ in any iteration is
``clipped`` (a detection in the forensics), the others ``accepted``; ``norm_after`` is the norm of
its clipped difference in the last iteration (at most τ, recorded as ``bound``); ``weight`` is NaN,
since the aggregate also holds the reference and no client has a share of its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import COORDINATE_BLOCK, RoundUpdates
from fl_poison.core.settings import Setting, integer, positive_number
from strategies.spec import ACCEPTED, CLIPPED, BuildContext, ClientDecision, Defense, DefenseSpec, Outcome
from strategies.weighted_average import weighted_sum

CC_RADIUS: Setting[float] = Setting(
    "cc-radius",
    10.0,
    "Clipping radius tau of centered-clipping, in update-norm units (differences from the reference longer than it are cut to it).",
    positive_number,
)
CC_ITERATIONS: Setting[int] = Setting(
    "cc-iterations", 1, "Clipping iterations L of centered-clipping per round.", integer(1)
)


def distances_to(updates: RoundUpdates, reference: torch.Tensor) -> list[float]:
    """‖x_i − v‖ for every row as the defense sees it, in float64, blockwise.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    reference : torch.Tensor
        v, a float64 vector on the updates' device.
    """
    squares = torch.zeros(updates.count, dtype=torch.float64, device=updates.device)
    on_cpu = updates.device.type == "cpu"
    for start, stop, values in updates.blocks(size=COORDINATE_BLOCK // 4):
        if on_cpu:  # numpy: one thread
            array = values.numpy()
            np.subtract(array, reference.numpy()[start:stop], out=array)
            squares.numpy()[:] += np.einsum("ij,ij->i", array, array)
        else:
            values.sub_(reference[start:stop])
            squares += values.square_().sum(dim=1)
    return squares.sqrt().tolist()


def clipping_factors(distances: list[float], radius: float) -> list[float]:
    """min(1, τ / ‖x_i − v‖) for every row (1 for a row at the reference itself).

    Parameters
    ----------
    distances : list[float]
        ‖x_i − v‖.
    radius : float
        τ.
    """
    return [min(1.0, radius / distance) if distance > 0 else 1.0 for distance in distances]


def centered_clipping_step(updates: RoundUpdates, reference: torch.Tensor, factors: list[float]) -> torch.Tensor:
    """v + (1/n) Σ λ_i (x_i − v) = (1 − Σ λ_i / n) v + Σ (λ_i / n) x_i, in float64 (a new tensor).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    reference : torch.Tensor
        v.
    factors : list[float]
        λ_i, the clipping factors.
    """
    count = updates.count
    step = weighted_sum(updates, range(count), [factor / count for factor in factors])
    step.add_(reference, alpha=1.0 - math.fsum(factors) / count)
    return step


class CenteredClipping(Defense):
    """Iterative clipping of the updates around the previous round's aggregate.

    Parameters
    ----------
    radius : float
        τ > 0.
    iterations : int
        L >= 1.
    """

    def __init__(self, radius: float, iterations: int) -> None:
        self.radius = radius
        self.iterations = iterations
        self.reference: torch.Tensor | None = None

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Clip around the reference L times; the result is the aggregate and the next reference."""
        reference = self.reference
        if reference is None:
            reference = torch.zeros(updates.size, dtype=torch.float64, device=updates.device)
        reference = reference.to(updates.device)
        clipped = [False] * updates.count
        distances: list[float] = []
        for _ in range(self.iterations):
            distances = distances_to(updates, reference)
            clipped = [was or distance > self.radius for was, distance in zip(clipped, distances, strict=True)]
            reference = centered_clipping_step(updates, reference, clipping_factors(distances, self.radius))
        self.reference = reference
        decisions = tuple(
            ClientDecision(
                pid,
                CLIPPED if clipped[row] else ACCEPTED,
                min(distances[row], self.radius),
                math.nan,
                self.radius,
            )
            for row, pid in enumerate(updates.partition_ids)
        )
        return Outcome(
            update=reference,
            decisions=decisions,
            metric_rows=tuple(range(updates.count)),
            diagnostics={"clipped": sum(clipped)},
        )

    def describe(self) -> str:
        """``centered-clipping (tau=..., L=...)``."""
        return f"centered-clipping (tau={self.radius:g}, L={self.iterations})"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """Centered clipping with ``cc-radius`` and ``cc-iterations`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return CenteredClipping(config[CC_RADIUS], config[CC_ITERATIONS])


DEFENSE = DefenseSpec(
    name="centered-clipping",
    kind=AGGREGATION_RULE,
    summary="Clips every update's difference from the previous aggregate to a radius and averages, L times (Karimireddy et al., 2021).",
    settings=(CC_RADIUS, CC_ITERATIONS),
    build=build,
)
