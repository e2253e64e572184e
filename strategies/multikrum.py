"""Multi-Krum (Blanchard et al., 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", §5).

Algorithm, with n updates of which at most f are Byzantine (requires 2f + 2 < n):

1. score every update as Krum does (:mod:`strategies.krum`: the sum of squared distances to its
   n − f − 2 nearest neighbours, float64 distances);
2. keep the m updates with the lowest scores (ties: the lower partition id; all of them when
   fewer than m replied);
3. average them weighted by their reported example counts (FedAvg on the kept set).
"""

from __future__ import annotations

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import ConfigError, Setting, auto_or, integer
from strategies.distances import pairwise_squared_distances
from strategies.krum import KRUM_F, assumed_attackers, check_krum_f, krum_scores, lowest_scores
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.weighted_average import average_of

KRUM_M: Setting[int | None] = Setting(
    "krum-m", "auto", "Updates multikrum keeps; auto = clients per round - f.", auto_or(integer(1), "an integer >= 1")
)


def krum_keep(config: ExperimentConfig) -> int:
    """m, the updates multikrum keeps: ``krum-m``, else clients per round - f.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    """
    configured = config[KRUM_M]
    return configured if configured is not None else config.sampled_per_round - assumed_attackers(config)


class MultiKrum(Defense):
    """FedAvg over the m updates with the best Krum scores.

    Parameters
    ----------
    num_byzantine : int
        f, the number of attackers assumed per round.
    keep : int
        m, the number of updates averaged.
    """

    def __init__(self, num_byzantine: int, keep: int) -> None:
        self.num_byzantine = num_byzantine
        self.keep = keep

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """The m best-scored rows are accepted with their example shares, the others rejected."""
        scores = krum_scores(pairwise_squared_distances(updates), self.num_byzantine)
        return average_of(updates, lowest_scores(scores, min(self.keep, updates.count)))

    def describe(self) -> str:
        """``multikrum (f=..., m=...)``."""
        return f"multikrum (f={self.num_byzantine}, m={self.keep})"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Multi-Krum needs 2f + 2 < n and 1 <= m <= n (n = clients per round).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        Unused.
    """
    check_krum_f(config)
    per_round, keep = config.sampled_per_round, krum_keep(config)
    if not 1 <= keep <= per_round:
        raise ConfigError.bad_value("krum-m", keep, f"1 .. clients per round ({per_round})")


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """Multi-Krum with f and m from ``config``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return MultiKrum(assumed_attackers(config), krum_keep(config))


DEFENSE = DefenseSpec(
    name="multikrum",
    kind=AGGREGATION_RULE,
    summary="FedAvg over the m updates with the best Krum scores (Blanchard et al., 2017).",
    settings=(KRUM_F, KRUM_M),
    check=check,
    build=build,
)
