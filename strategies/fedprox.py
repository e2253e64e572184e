"""FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks").

Algorithm:

1. the server sends ``proximal-mu`` with every training instruction;
2. each client adds ``mu/2 * ||w - w_global||^2`` to its training loss
   (:func:`fl_poison.core.training.proximal_term`);
3. the server aggregates as FedAvg (:mod:`strategies.fedavg`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, non_negative_number
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.weighted_average import average_of

PROXIMAL_MU: Setting[float] = Setting(
    "proximal-mu", 0.1, "FedProx proximal weight mu (used by strategy=fedprox).", non_negative_number
)


class FedProx(Defense):
    """FedAvg on the server; clients get the proximal weight mu.

    Parameters
    ----------
    proximal_mu : float
        The proximal weight mu sent to clients.
    """

    def __init__(self, proximal_mu: float) -> None:
        self.proximal_mu = proximal_mu

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Accept every row with its example share."""
        return average_of(updates, range(updates.count))

    def train_config(self) -> Mapping[str, float]:
        """``proximal-mu`` for the clients."""
        return {PROXIMAL_MU.key: self.proximal_mu}

    def describe(self) -> str:
        """``fedprox (mu=...)``."""
        return f"fedprox (mu={self.proximal_mu:g})"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """FedProx with ``proximal-mu`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return FedProx(config[PROXIMAL_MU])


DEFENSE = DefenseSpec(
    name="fedprox",
    kind=AGGREGATION_RULE,
    summary="FedAvg whose clients add a proximal term mu/2 ||w - w_global||^2 to their loss (Li et al., 2020).",
    settings=(PROXIMAL_MU,),
    build=build,
)
