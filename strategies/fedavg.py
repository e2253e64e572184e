"""FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

Algorithm, per round: the new global model is the average of the client models, each weighted
by the number of training examples it reports.

This is Flower's FedAvg with :class:`~strategies.lab.LabStrategy` mixed in (seeded sampling,
reply screening, forensics).
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from strategies.lab import LabStrategy
from strategies.spec import BuildContext, DefenseSpec


class LabFedAvg(LabStrategy, FedAvg):
    """Flower's FedAvg with seeded partition sampling and per-client records.

    Parameters
    ----------
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    **kwargs :
        Flower FedAvg arguments.
    """


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """FedAvg for ``config`` (it has no settings of its own)."""
    return LabFedAvg(sampler=context.sampler, round_log=context.round_log)


DEFENSE = DefenseSpec(
    name="fedavg",
    kind=AGGREGATION_RULE,
    summary="Average of the client models weighted by reported example counts (McMahan et al., 2017); no defense.",
    build=build,
)
