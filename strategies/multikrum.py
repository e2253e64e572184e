"""Multi-Krum (Blanchard et al., 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", §5), on float64 updates.

Algorithm, with n updates of which at most f are Byzantine (requires 2f + 2 < n):

1. score every update as Krum does (:mod:`strategies.krum`: the sum of squared distances to its
   n − f − 2 nearest neighbours);
2. keep the m updates with the lowest scores (ties: the lower partition id);
3. average them weighted by their reported example counts (FedAvg on the kept set).
"""

from __future__ import annotations

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError, Setting, auto_or, integer
from strategies.krum import KRUM_F, LabMultiKrum, assumed_attackers, check_krum_f
from strategies.lab import LabStrategy
from strategies.spec import BuildContext, DefenseSpec

KRUM_M: Setting[int | None] = Setting(
    "krum-m", "auto", "Updates multikrum keeps; auto = clients per round - f.", auto_or(integer(1), "an integer >= 1")
)


def krum_keep(config: ExperimentConfig) -> int:
    """m, the updates multikrum keeps: ``krum-m``, else clients per round - f."""
    configured = config[KRUM_M]
    return configured if configured is not None else config.sampled_per_round - assumed_attackers(config)


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Multi-Krum needs 2f + 2 < n and 1 <= m <= n (n = clients per round)."""
    check_krum_f(config)
    per_round = config.sampled_per_round
    if not 1 <= krum_keep(config) <= per_round:
        raise ConfigError.bad_value("krum-m", krum_keep(config), f"1 .. clients per round ({per_round})")


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """Multi-Krum with f and m from ``config``."""
    return LabMultiKrum(
        sampler=context.sampler,
        round_log=context.round_log,
        num_malicious_nodes=assumed_attackers(config),
        num_nodes_to_select=krum_keep(config),
    )


DEFENSE = DefenseSpec(
    name="multikrum",
    kind=AGGREGATION_RULE,
    summary="FedAvg over the m updates with the best Krum scores (Blanchard et al., 2017).",
    settings=(KRUM_F, KRUM_M),
    check=check,
    build=build,
)
