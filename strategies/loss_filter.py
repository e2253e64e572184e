"""Loss-percentile filtering (seed 000 §2.3: loss-based anomaly detection).

Algorithm, per round:

1. collect the training loss every client reports;
2. the threshold is the ``loss-percentile`` (default 75th) percentile of the finite losses
   (``numpy.percentile``, linear interpolation);
3. drop the clients whose loss is above the threshold (or not finite) and average the rest with
   FedAvg (example-weighted); with none left the global model stays as it was.

Clients training on flipped labels report high losses; so do honest clients with hard (e.g.
strongly non-IID) data, which is why seed 000 found the filter helps on non-IID data and can hurt
on IID data. It trusts the reported loss: a lying attacker defeats it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, number_in
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.weighted_average import average_of

LOSS_PERCENTILE: Setting[float] = Setting(
    "loss-percentile",
    75.0,
    "loss-filter drops clients whose reported loss is above this percentile of the round's losses.",
    number_in(0, 100, False, True),
)


def keep_below_percentile(losses: Sequence[float], percentile: float) -> list[bool]:
    """True for every loss at or below the ``percentile`` percentile of ``losses`` (NaN losses are dropped).

    Parameters
    ----------
    losses : Sequence[float]
        The reported losses.
    percentile : float
        In (0, 100].
    """
    values = np.asarray(losses, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [False] * len(values)
    threshold = np.percentile(finite, percentile)
    return [bool(np.isfinite(value) and value <= threshold) for value in values]


class LossFilter(Defense):
    """FedAvg over the clients whose reported loss is not above a percentile of the round's losses.

    Parameters
    ----------
    percentile : float
        The percentile in (0, 100] used as the threshold.
    """

    def __init__(self, percentile: float) -> None:
        self.percentile = percentile

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Drop the high-loss clients; FedAvg over the rest."""
        keep = keep_below_percentile(updates.losses, self.percentile)
        return average_of(updates, [row for row, kept in enumerate(keep) if kept])

    def describe(self) -> str:
        """``loss-filter (percentile=...)``."""
        return f"loss-filter (percentile={self.percentile:g})"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """The loss filter with ``loss-percentile`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return LossFilter(config[LOSS_PERCENTILE])


DEFENSE = DefenseSpec(
    name="loss-filter",
    kind=AGGREGATION_RULE,
    summary="FedAvg over the clients whose reported training loss is not above a percentile of the round's.",
    settings=(LOSS_PERCENTILE,),
    build=build,
)
