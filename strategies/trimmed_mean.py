"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", §3 "trimmed-mean-based gradient descent").

Algorithm, per round, with n clients and β = ``trim-beta``:

1. per coordinate, sort the clients' update values (:mod:`strategies.coordinatewise`, blockwise);
2. drop the ``int(β n)`` largest and the ``int(β n)`` smallest values (as Flower's FedTrimmedAvg
   and scipy's ``trim_mean``);
3. the aggregated update is the mean of the rest (float64).

Every client is accepted and none gets a weight of its own (``weight`` is NaN); the round's train
metrics average every client's.
"""

from __future__ import annotations

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, number_in
from strategies.coordinatewise import trimmed_mean
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome, unweighted_decisions

TRIM_BETA: Setting[float] = Setting(
    "trim-beta", 0.2, "Fraction trimmed at each end, per coordinate, by trimmed-mean.", number_in(0, 0.5, True, False)
)


class TrimmedMean(Defense):
    """The coordinate-wise trimmed mean of every update.

    Parameters
    ----------
    beta : float
        Fraction trimmed at each end, per coordinate, in [0, 0.5).
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Everybody accepted (weight NaN)."""
        rows = list(range(updates.count))
        return Outcome(
            update=trimmed_mean(updates, rows, self.beta),
            decisions=unweighted_decisions(updates, rows),
            metric_rows=tuple(rows),
        )

    def describe(self) -> str:
        """``trimmed-mean (beta=...)``."""
        return f"trimmed-mean (beta={self.beta:g})"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """The trimmed mean with ``trim-beta`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return TrimmedMean(config[TRIM_BETA])


DEFENSE = DefenseSpec(
    name="trimmed-mean",
    kind=AGGREGATION_RULE,
    summary="Coordinate-wise mean without the trim-beta largest and smallest values (Yin et al., 2018).",
    settings=(TRIM_BETA,),
    build=build,
)
