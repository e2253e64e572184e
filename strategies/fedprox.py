"""FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks").

Algorithm: clients add ``mu/2 * ||w - w_global||^2`` to their training loss (the server sends
``proximal-mu`` with every training instruction); the server aggregates as FedAvg.

This is Flower's FedProx with :class:`~strategies.lab.LabStrategy` mixed in.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedProx

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import Setting, non_negative_number
from strategies.lab import LabStrategy
from strategies.spec import BuildContext, DefenseSpec

PROXIMAL_MU: Setting[float] = Setting(
    "proximal-mu", 0.1, "FedProx proximal weight mu (used by strategy=fedprox).", non_negative_number
)


class LabFedProx(LabStrategy, FedProx):
    """Flower's FedProx with seeded partition sampling and per-client records.

    Parameters
    ----------
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    proximal_mu : float
        The proximal weight mu sent to clients.
    **kwargs :
        Other Flower FedProx arguments.
    """


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """FedProx with ``proximal-mu`` from ``config``."""
    return LabFedProx(sampler=context.sampler, round_log=context.round_log, proximal_mu=config[PROXIMAL_MU])


DEFENSE = DefenseSpec(
    name="fedprox",
    kind=AGGREGATION_RULE,
    summary="FedAvg whose clients add a proximal term mu/2 ||w - w_global||^2 to their loss (Li et al., 2020).",
    settings=(PROXIMAL_MU,),
    build=build,
)
