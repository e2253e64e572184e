"""FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

Algorithm, per round:

1. weigh every client by its share of the reported example counts
   (:func:`strategies.weighted_average.client_weights`);
2. the new global model is the global model plus the weighted average of the updates
   ``w_k - w_global`` (float64 accumulation, rounded once to float32), which is the weighted
   average of the client models. Every client is accepted.
"""

from __future__ import annotations

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.weighted_average import average_of


class FedAvg(Defense):
    """The example-weighted average of every update (no defense)."""

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Accept every row with its example share."""
        return average_of(updates, range(updates.count))

    def describe(self) -> str:
        """``fedavg``."""
        return "fedavg"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """FedAvg (it has no settings of its own).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return FedAvg()


DEFENSE = DefenseSpec(
    name="fedavg",
    kind=AGGREGATION_RULE,
    summary="Average of the client models weighted by reported example counts (McMahan et al., 2017); no defense.",
    build=build,
)
