"""Nearest Neighbor Mixing (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, 2023, "Fixing by
Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023).

A pre-aggregator: it rewrites the round's updates and hands them to another rule (``nnm-wrap``),
like ``norm-clip`` does. Algorithm, with n updates of which at most f are Byzantine (f as Krum's:
``krum-f``, auto = num-malicious, at least 1; needs f < n):

1. compute the squared distances between every pair of updates (float64,
   :func:`strategies.distances.pairwise_squared_distances`);
2. replace every update x_i by the mean of its k = n − f nearest updates, itself included
   (ties: the update itself first, then the lower partition id; with fewer than f + 1 replies in
   a round, k = 1 and the updates are left as they are); the mean is uniform, as in the paper
   (ByzFL's ``NNM`` likewise), and the mixed row of client i keeps client i's example count for
   the wrapped rule's weights;
3. hand the n mixed updates to the wrapped rule (``nnm-wrap``, default ``trimmed-mean``, the
   coordinate-wise trimmed mean, one of the rules the paper composes NNM with; any registered
   defense may be named, and its own checks apply).

Decisions (:mod:`strategies.mixing`): client i takes the wrapped rule's decision on its mixed row
(weight: that row's weight; norm after: its own norm, scaled down as the wrapped rule scaled the
row). The round's train metrics average those of the clients whose rows made the aggregate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from fl_poison.core.catalogue import PRE_AGGREGATOR, Catalogue
from fl_poison.core.config import ExperimentConfig, algorithm_name
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import ConfigError, Setting
from strategies.distances import pairwise_squared_distances
from strategies.krum import KRUM_F, assumed_attackers
from strategies.mixing import mixed_round, traced_decision
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.wrapping import check_wrapped_rule

NAME = "nnm"
NNM_WRAP: Setting[str] = Setting(
    "nnm-wrap",
    "trimmed-mean",
    "Strategy that aggregates the mixed updates of nnm: any other registered strategy.",
    algorithm_name,
)


def nearest_neighbour_mixing(distances: torch.Tensor, num_byzantine: int) -> torch.Tensor:
    """The ``(n, n)`` float64 mixing matrix: row i holds 1/k at the k = max(1, n − f) rows nearest row i.

    Row i itself comes first among equally near rows, then the lower index.

    Parameters
    ----------
    distances : torch.Tensor
        ``(n, n)`` squared distances.
    num_byzantine : int
        f.
    """
    count = len(distances)
    neighbours = max(1, count - num_byzantine)
    values = distances.tolist()
    coefficients = torch.zeros((count, count), dtype=torch.float64)
    for row in range(count):
        order = sorted(range(count), key=lambda other: (values[row][other], other != row, other))
        coefficients[row, order[:neighbours]] = 1.0 / neighbours
    return coefficients


class NearestNeighborMixing(Defense):
    """Replace every update by the mean of its n − f nearest updates, then aggregate with a wrapped rule.

    Parameters
    ----------
    num_byzantine : int
        f, the number of attackers assumed per round.
    inner : Defense
        The rule that aggregates the mixed updates.
    """

    def __init__(self, num_byzantine: int, inner: Defense) -> None:
        self.num_byzantine = num_byzantine
        self.inner = inner

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Mix, let the wrapped rule aggregate, give every client the decision on its mixed row."""
        coefficients = nearest_neighbour_mixing(pairwise_squared_distances(updates), self.num_byzantine)
        rows = list(range(updates.count))
        mixed = mixed_round(
            updates,
            coefficients,
            updates.partition_ids,
            updates.num_examples,
            updates.reported_examples,
            updates.losses,
            rows,
        )
        outcome = self.inner.aggregate(mixed)
        own_norms, row_norms = updates.scaled_norms().tolist(), mixed.scaled_norms().tolist()
        decisions = tuple(
            traced_decision(pid, own_norms[row], row_norms[row], outcome.decisions[row], 1.0)
            for row, pid in enumerate(updates.partition_ids)
        )
        return dataclasses.replace(outcome, decisions=decisions, exact_row=None)

    def train_config(self) -> Mapping[str, bool | int | float | str]:
        """The wrapped rule's train config entries."""
        return self.inner.train_config()

    def describe(self) -> str:
        """f and the wrapped rule."""
        return f"nearest neighbor mixing (f={self.num_byzantine}) in front of {self.inner.describe()}"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """NNM needs f < clients per round; ``nnm-wrap`` names another registered defense (no loop), whose checks apply.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered defenses.
    """
    f, per_round = assumed_attackers(config), config.sampled_per_round
    if not f < per_round:
        raise ConfigError.bad_value(KRUM_F.key, f, f"f < clients per round ({per_round}) for nnm")
    check_wrapped_rule(config, catalogue, NAME, NNM_WRAP)


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """NNM with f from ``config`` in front of the ``nnm-wrap`` rule.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Builds the wrapped rule.
    """
    return NearestNeighborMixing(assumed_attackers(config), context.wrapped(config[NNM_WRAP]))


DEFENSE = DefenseSpec(
    name=NAME,
    kind=PRE_AGGREGATOR,
    summary="Replaces every update by the mean of its n - f nearest updates, then aggregates with nnm-wrap (Allouah et al., 2023).",
    settings=(KRUM_F, NNM_WRAP),
    check=check,
    build=build,
    wraps=NNM_WRAP,
)
