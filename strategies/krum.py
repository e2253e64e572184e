"""Krum (Blanchard et al., 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent").

Algorithm, with n updates of which at most f are Byzantine (requires 2f + 2 < n):

1. compute the squared distances between every pair of updates ``w_i - w_global``
   (:func:`strategies.distances.pairwise_squared_distances`: float64, within 1e-6 relative);
2. score each update by the sum of its squared distances to its n − f − 2 nearest other updates
   (the paper's count; ByzFL counts n − f − 1; at least one neighbour);
3. the update with the lowest score (ties: the lower partition id) becomes the new model's update.

This module also holds what Multi-Krum and Bulyan share with Krum: the ``krum-f`` setting (f),
its default (:func:`assumed_attackers`), its condition and the scoring; NNM and DnC take f from it
too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import ConfigError, Setting, auto_or, integer
from strategies.distances import pairwise_squared_distances
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.weighted_average import average_of

KRUM_F: Setting[int | None] = Setting(
    "krum-f",
    "auto",
    "Attackers f assumed by krum, multikrum, bulyan, nnm and dnc; auto = num-malicious (at least 1).",
    auto_or(integer(1), "an integer >= 1"),
)


def assumed_attackers(config: ExperimentConfig) -> int:
    """f for krum, multikrum and bulyan: ``krum-f``, else the number of malicious clients (at least 1).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    """
    configured = config[KRUM_F]
    return configured if configured is not None else max(1, config.attackers)


def check_krum_f(config: ExperimentConfig) -> None:
    """Krum's condition 2f + 2 < n (n = clients per round); raises :class:`ConfigError` naming ``krum-f``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    """
    f, per_round = assumed_attackers(config), config.sampled_per_round
    if not 2 * f + 2 < per_round:
        raise ConfigError.bad_value(
            "krum-f", f, f"f with 2f + 2 < clients per round ({per_round}), i.e. at most {max(0, (per_round - 3) // 2)}"
        )


def krum_scores(distances: torch.Tensor, num_byzantine: int) -> torch.Tensor:
    """Krum score of every row: the sum of its squared distances to its n − f − 2 nearest other rows.

    Parameters
    ----------
    distances : torch.Tensor
        ``(n, n)`` squared distances (float64).
    num_byzantine : int
        f. At least one neighbour is counted (and at most n − 1).
    """
    count = len(distances)
    neighbours = min(max(1, count - num_byzantine - 2), count - 1)
    others = distances.clone()
    others.fill_diagonal_(float("inf"))
    return torch.sort(others, dim=1).values[:, :neighbours].sum(dim=1)


def lowest_scores(scores: torch.Tensor, count: int) -> list[int]:
    """Indices of the ``count`` lowest scores (ties: the lower index), in increasing index order.

    Parameters
    ----------
    scores : torch.Tensor
        One score per row.
    count : int
        How many to keep.
    """
    order = torch.sort(scores, stable=True).indices
    return sorted(int(i) for i in order[:count])


def krum_choice(distances: torch.Tensor, num_byzantine: int, rows: Sequence[int]) -> int:
    """The row of ``rows`` Krum picks among them (distances indexed by row)."""
    index = torch.tensor(list(rows))
    scores = krum_scores(distances[index[:, None], index[None, :]], num_byzantine)
    return list(rows)[int(torch.sort(scores, stable=True).indices[0])]


class Krum(Defense):
    """Keep the update with the best Krum score.

    Parameters
    ----------
    num_byzantine : int
        f, the number of attackers assumed per round.
    """

    def __init__(self, num_byzantine: int) -> None:
        self.num_byzantine = num_byzantine

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """The best-scored row is accepted with weight 1, the others rejected."""
        distances = pairwise_squared_distances(updates)
        return average_of(updates, [krum_choice(distances, self.num_byzantine, range(updates.count))])

    def describe(self) -> str:
        """``krum (f=...)``."""
        return f"krum (f={self.num_byzantine})"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Krum needs 2f + 2 < clients per round.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        Unused.
    """
    check_krum_f(config)


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """Krum with f from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return Krum(assumed_attackers(config))


DEFENSE = DefenseSpec(
    name="krum",
    kind=AGGREGATION_RULE,
    summary="The update with the smallest sum of squared distances to its n - f - 2 nearest others (Blanchard et al., 2017).",
    settings=(KRUM_F,),
    check=check,
    build=build,
)
