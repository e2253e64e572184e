"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates").

Algorithm, per round, with n clients and β = ``trim-beta``: per coordinate, drop the
⌊βn⌋ largest and the ⌊βn⌋ smallest values and average the rest.

No client gets a weight of its own (``weight`` is NaN) and nobody is rejected.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedTrimmedAvg

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import Setting, number_in
from strategies.lab import LabStrategy
from strategies.spec import BuildContext, DefenseSpec

TRIM_BETA: Setting[float] = Setting(
    "trim-beta", 0.2, "Fraction trimmed at each end, per coordinate, by trimmed-mean.", number_in(0, 0.5, True, False)
)


class LabTrimmedMean(LabStrategy, FedTrimmedAvg):
    """Flower's FedTrimmedAvg with seeded sampling and forensics (everybody accepted, no weights).

    Parameters
    ----------
    beta : float
        Fraction trimmed at each end, per coordinate.
    """

    weighs_clients = False


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """The trimmed mean with ``trim-beta`` from ``config``."""
    return LabTrimmedMean(sampler=context.sampler, round_log=context.round_log, beta=config[TRIM_BETA])


DEFENSE = DefenseSpec(
    name="trimmed-mean",
    kind=AGGREGATION_RULE,
    summary="Coordinate-wise mean without the trim-beta largest and smallest values (Yin et al., 2018).",
    settings=(TRIM_BETA,),
    build=build,
)
