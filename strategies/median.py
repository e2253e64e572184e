"""Coordinate-wise median (Yin et al., 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates").

Algorithm, per round: each coordinate of the new model is the median of the clients' values
(the mean of the two middle values for an even number of clients).

No client gets a weight of its own (``weight`` is NaN) and nobody is rejected, so as a detector
it flags no one.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedMedian

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from strategies.lab import LabStrategy
from strategies.spec import BuildContext, DefenseSpec


class LabMedian(LabStrategy, FedMedian):
    """Flower's FedMedian with seeded sampling and forensics (everybody accepted, no weights)."""

    weighs_clients = False


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """The coordinate-wise median (no settings)."""
    return LabMedian(sampler=context.sampler, round_log=context.round_log)


DEFENSE = DefenseSpec(
    name="median",
    kind=AGGREGATION_RULE,
    summary="Coordinate-wise median of the client models (Yin et al., 2018).",
    build=build,
)
