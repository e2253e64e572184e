"""Bulyan (El Mhamdi et al., 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium", §4 Algorithm 2).

Algorithm, with n updates of which at most f are Byzantine (needs n ≥ 4f + 3; with fewer usable
replies the round is skipped and nobody is judged):

1. selection of θ = n − 2f updates, with ``bulyan-selection``:

   - ``krum-repeated`` (the paper): apply Krum θ times, each time to the updates not chosen yet
     (n, n − 1, ..., 2f + 1 of them; each time the n' − f − 2 nearest neighbours among those,
     at least one), moving the chosen one to the selection;
   - ``multikrum`` (Flower's Bulyan): the θ updates with the lowest Krum scores of one scoring
     of all n;

   distances are float64 (:mod:`strategies.distances`), computed once; ties go to the lower
   partition id;
2. per coordinate, the β = θ − 2f values of the selected updates closest to their median are
   averaged (ties: the smaller values).

The selected updates are accepted (weight NaN: no client has a weight of its own), the others
rejected; the round's train metrics average those of the selected clients.
"""

from __future__ import annotations

import torch

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import ConfigError, Setting, choice
from strategies.coordinatewise import closest_to_median_mean
from strategies.distances import pairwise_squared_distances
from strategies.krum import KRUM_F, assumed_attackers, krum_choice, krum_scores, lowest_scores
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome, skipped_round, unweighted_decisions

KRUM_REPEATED, MULTIKRUM = "krum-repeated", "multikrum"
BULYAN_SELECTION: Setting[str] = Setting(
    "bulyan-selection",
    KRUM_REPEATED,
    "Bulyan's first step: krum-repeated (the paper: Krum applied n - 2f times, each time to the updates "
    "not chosen yet) or multikrum (the n - 2f best Krum scores of one scoring, as Flower's Bulyan).",
    choice(KRUM_REPEATED, MULTIKRUM),
)


def select_krum_repeated(distances: torch.Tensor, num_byzantine: int, count: int) -> list[int]:
    """The rows chosen by applying Krum ``count`` times, each time to the rows not chosen yet, in the order chosen.

    Parameters
    ----------
    distances : torch.Tensor
        ``(n, n)`` squared distances between all rows.
    num_byzantine : int
        f.
    count : int
        θ, the number of rows chosen.
    """
    remaining = list(range(len(distances)))
    chosen: list[int] = []
    while len(chosen) < count:
        best = krum_choice(distances, num_byzantine, remaining)
        chosen.append(best)
        remaining.remove(best)
    return chosen


class Bulyan(Defense):
    """Krum-based selection of n − 2f updates, then the coordinate-wise mean around the median.

    Parameters
    ----------
    num_byzantine : int
        f; the rule needs at least 4f + 3 usable replies and skips the round otherwise.
    selection : str
        ``krum-repeated`` (the paper) or ``multikrum``.
    """

    def __init__(self, num_byzantine: int, selection: str = KRUM_REPEATED) -> None:
        self.num_byzantine = num_byzantine
        self.selection = selection

    def select(self, updates: RoundUpdates) -> list[int]:
        """The θ = n − 2f selected rows, sorted."""
        f = self.num_byzantine
        theta = updates.count - 2 * f
        distances = pairwise_squared_distances(updates)
        if self.selection == MULTIKRUM:
            return lowest_scores(krum_scores(distances, f), theta)
        return sorted(select_krum_repeated(distances, f, theta))

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Select, then average per coordinate the β values closest to the median; skip with fewer than 4f + 3 rows."""
        f = self.num_byzantine
        if updates.count < 4 * f + 3:
            return skipped_round(updates)
        selected = self.select(updates)
        update = closest_to_median_mean(updates, selected, len(selected) - 2 * f)
        return Outcome(update=update, decisions=unweighted_decisions(updates, selected), metric_rows=tuple(selected))

    def describe(self) -> str:
        """``bulyan (f=..., selection=...)``."""
        return f"bulyan (f={self.num_byzantine}, selection={self.selection})"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Bulyan needs n >= 4f + 3 (n = clients per round).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        Unused.
    """
    f, per_round = assumed_attackers(config), config.sampled_per_round
    if per_round < 4 * f + 3:
        raise ConfigError.bad_value("krum-f", f, f"f with 4f + 3 <= clients per round ({per_round}) for bulyan")


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """Bulyan with f and the selection from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return Bulyan(assumed_attackers(config), config[BULYAN_SELECTION])


DEFENSE = DefenseSpec(
    name="bulyan",
    kind=AGGREGATION_RULE,
    summary="Krum-selected n - 2f updates, then per coordinate the mean of the n - 4f values closest to the median (El Mhamdi et al., 2018).",
    settings=(KRUM_F, BULYAN_SELECTION),
    check=check,
    build=build,
)
