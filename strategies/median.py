"""Coordinate-wise median (Yin et al., 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", §3 "median-based gradient descent").

Algorithm, per round:

1. per coordinate, sort the clients' update values (:mod:`strategies.coordinatewise`, blockwise);
2. the aggregated update is their median (the mean of the two middle values for an even number
   of clients), which gives the median of the client models.

Every client is accepted and none gets a weight of its own (``weight`` is NaN), so as a detector
it flags no one; the round's train metrics average every client's.
"""

from __future__ import annotations

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from strategies.coordinatewise import coordinate_median
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome, unweighted_decisions


class Median(Defense):
    """The coordinate-wise median of every update."""

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Everybody accepted (weight NaN)."""
        rows = list(range(updates.count))
        return Outcome(
            update=coordinate_median(updates, rows),
            decisions=unweighted_decisions(updates, rows),
            metric_rows=tuple(rows),
        )

    def describe(self) -> str:
        """``median``."""
        return "median"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """The coordinate-wise median (no settings).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return Median()


DEFENSE = DefenseSpec(
    name="median",
    kind=AGGREGATION_RULE,
    summary="Coordinate-wise median of the client models (Yin et al., 2018).",
    build=build,
)
