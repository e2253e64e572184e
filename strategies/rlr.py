"""Robust Learning Rate (Ozdayi, Kantarcioglu, Gel, 2021, "Defending against Backdoors in Federated
Learning with Robust Learning Rate", AAAI 2021).

A backdoor defense: coordinates on which the clients' updates disagree in sign are pushed the other
way. Algorithm, per round, with n updates Δ_i, threshold θ = ``rlr-threshold`` and server learning
rate η = ``rlr-learning-rate``:

1. per coordinate j, the sign agreement a_j = |Σ_i sgn(Δ_ij)| (a count of clients, not
   weighted by examples; sgn(0) = 0);
2. the coordinate's learning rate is η where a_j >= θ and −η where a_j < θ;
3. the aggregated update is that learning-rate vector times the FedAvg mean of the updates
   (example-weighted, :func:`strategies.weighted_average.client_weights`, as every weighted rule
   here; ``client-weighting=uniform`` gives the plain mean).

Defaults: θ = 4, the threshold the authors' README uses for Fashion-MNIST with 10 agents, and
η = 1 (the mean's own step where the signs agree). θ above the clients per round would flip every
coordinate and is refused. η is at most 1, so no coordinate of the aggregate is larger than the
largest update's (a larger η could push a huge but finite update past float32's range).

RLR judges coordinates, not clients: every client is accepted, with its example share as weight
(so as a detector it flags no one).
"""

from __future__ import annotations

import numpy as np
import torch

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import COORDINATE_BLOCK, RoundUpdates
from fl_poison.core.settings import ConfigError, Setting, integer, number_in
from strategies.spec import ACCEPTED, BuildContext, ClientDecision, Defense, DefenseSpec, Outcome
from strategies.weighted_average import client_weights

RLR_THRESHOLD: Setting[int] = Setting(
    "rlr-threshold",
    4,
    "theta of rlr: a coordinate whose clients' update signs sum to less than it in absolute value gets the learning rate -eta.",
    integer(1),
)
RLR_LEARNING_RATE: Setting[float] = Setting(
    "rlr-learning-rate",
    1.0,
    "Server learning rate eta of rlr (the aggregate is +-eta times the weighted mean update).",
    number_in(0, 1, False, True),
)


def robust_learning_rate_update(
    updates: RoundUpdates, weights: list[float], threshold: int, learning_rate: float
) -> torch.Tensor:
    """The per-coordinate ±η times the weighted mean of the updates (float64, blockwise).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    weights : list[float]
        Every row's share in the mean.
    threshold : int
        θ.
    learning_rate : float
        η.
    """
    coefficients = torch.tensor(weights, dtype=torch.float64, device=updates.device)
    total = torch.empty(updates.size, dtype=torch.float64, device=updates.device)
    on_cpu = updates.device.type == "cpu"
    for start, stop, values in updates.blocks(size=COORDINATE_BLOCK // 4):
        if on_cpu:  # numpy: one thread
            array = values.numpy()
            mean = np.einsum("i,ij->j", coefficients.numpy(), array)
            agreement = np.abs(np.sign(array).sum(axis=0))
            total.numpy()[start:stop] = np.where(agreement >= threshold, learning_rate, -learning_rate) * mean
        else:
            mean = torch.mv(values.T, coefficients)
            agreement = values.sign().sum(dim=0).abs()
            rates = (agreement >= threshold).to(torch.float64) * (2.0 * learning_rate) - learning_rate
            total[start:stop] = rates * mean
    return total


class RobustLearningRate(Defense):
    """The weighted mean update, negated on the coordinates where fewer than θ net clients agree in sign.

    Parameters
    ----------
    threshold : int
        θ >= 1.
    learning_rate : float
        η in (0, 1].
    """

    def __init__(self, threshold: int, learning_rate: float) -> None:
        self.threshold = threshold
        self.learning_rate = learning_rate

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Everybody accepted with its example share."""
        rows = list(range(updates.count))
        weights = client_weights(updates, rows)
        norms = updates.scaled_norms().tolist()
        decisions = tuple(
            ClientDecision(pid, ACCEPTED, norms[row], weights[row]) for row, pid in enumerate(updates.partition_ids)
        )
        update = robust_learning_rate_update(updates, weights, self.threshold, self.learning_rate)
        return Outcome(update=update, decisions=decisions, metric_rows=tuple(rows))

    def describe(self) -> str:
        """``rlr (theta=..., eta=...)``."""
        return f"rlr (theta={self.threshold}, eta={self.learning_rate:g})"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """θ is at most the clients per round (above it every coordinate would be flipped).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        Unused.
    """
    threshold, per_round = config[RLR_THRESHOLD], config.sampled_per_round
    if threshold > per_round:
        raise ConfigError.bad_value(RLR_THRESHOLD.key, threshold, f"an integer 1 .. clients per round ({per_round})")


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """RLR with ``rlr-threshold`` and ``rlr-learning-rate`` from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return RobustLearningRate(config[RLR_THRESHOLD], config[RLR_LEARNING_RATE])


DEFENSE = DefenseSpec(
    name="rlr",
    kind=AGGREGATION_RULE,
    summary="Weighted mean update with the server learning rate negated where too few clients agree in sign (Ozdayi et al., 2021).",
    settings=(RLR_THRESHOLD, RLR_LEARNING_RATE),
    check=check,
    build=build,
)
