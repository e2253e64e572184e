"""Krum (Blanchard et al., 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent"), on float64 updates.

Algorithm, with n updates of which at most f are Byzantine (requires 2f + 2 < n):

1. compute squared distances between every pair of updates ``w_i - w_global``;
2. score each update by the sum of its squared distances to its n − f − 2 nearest neighbours
   (the paper's count; ByzFL counts n − f − 1);
3. keep the update with the lowest score (ties: the lower partition id) as the new model.

``krum-f`` (f) is shared by krum, multikrum and bulyan; this module holds it and the scoring.
Flower's Krum computes the distances on raw float32 weights with ``‖x‖² + ‖y‖² − 2x·y``, which
scrambles the ranking for large models with small updates; only the selection is replaced here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import MultiKrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError, Setting, auto_or, integer
from strategies.lab import ClientDecision, LabStrategy, weighted_decisions
from strategies.spec import BuildContext, DefenseSpec
from strategies.updates import pairwise_squared_distances, update_matrix

KRUM_F: Setting[int | None] = Setting(
    "krum-f",
    "auto",
    "Attackers f assumed by krum, multikrum and bulyan; auto = num-malicious (at least 1).",
    auto_or(integer(1), "an integer >= 1"),
)


def assumed_attackers(config: ExperimentConfig) -> int:
    """f for krum, multikrum and bulyan: ``krum-f``, else the number of malicious clients (at least 1)."""
    configured = config[KRUM_F]
    return configured if configured is not None else max(1, config.attackers)


def check_krum_f(config: ExperimentConfig) -> None:
    """Krum's condition 2f + 2 < n (n = clients per round); raises :class:`ConfigError` naming ``krum-f``."""
    f, per_round = assumed_attackers(config), config.sampled_per_round
    if not 2 * f + 2 < per_round:
        raise ConfigError.bad_value(
            "krum-f", f, f"f with 2f + 2 < clients per round ({per_round}), i.e. at most {max(0, (per_round - 3) // 2)}"
        )


def krum_scores(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Krum score of every row: the sum of squared distances to its n − f − 2 nearest other rows."""
    distances = pairwise_squared_distances(updates)
    neighbours = max(1, len(updates) - num_byzantine - 2)
    scores = []
    for i, row in enumerate(distances):
        others = np.delete(row, i)
        scores.append(float(np.sort(others)[:neighbours].sum()))
    return np.asarray(scores)


def select_multikrum(updates: np.ndarray, num_byzantine: int, num_selected: int) -> list[int]:
    """Indices of the ``num_selected`` rows with the lowest Krum scores (ties → lower index), sorted."""
    scores = krum_scores(updates, num_byzantine)
    order = np.argsort(scores, kind="stable")
    return sorted(int(i) for i in order[:num_selected])


class LabMultiKrum(LabStrategy, MultiKrum):
    """Flower's MultiKrum with float64 update distances, seeded sampling and forensics.

    Parameters
    ----------
    num_malicious_nodes : int
        f, the number of attackers assumed per round.
    num_nodes_to_select : int
        m, the number of updates kept (1 = Krum).
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    """

    def defend(
        self, server_round: int, replies: Sequence[Message], reference: Mapping[str, np.ndarray]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, list[ClientDecision]]:
        """Keep the m best-scored updates; FedAvg over them."""
        keep = min(self.num_nodes_to_select, len(replies))
        selected = set(select_multikrum(update_matrix(replies, reference), self.num_malicious_nodes, keep))
        kept = [message for index, message in enumerate(replies) if index in selected]
        contents = [message.content for message in kept]
        arrays = aggregate_arrayrecords(contents, self.weighted_by_key)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        decisions = weighted_decisions(self.round_log, replies, kept, self.weighted_by_key)
        return arrays, metrics, decisions


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Krum needs 2f + 2 < clients per round."""
    check_krum_f(config)


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """Krum with f from ``config``."""
    return LabMultiKrum(
        sampler=context.sampler,
        round_log=context.round_log,
        num_malicious_nodes=assumed_attackers(config),
        num_nodes_to_select=1,
    )


DEFENSE = DefenseSpec(
    name="krum",
    kind=AGGREGATION_RULE,
    summary="The update with the smallest sum of squared distances to its n - f - 2 nearest others (Blanchard et al., 2017).",
    settings=(KRUM_F,),
    check=check,
    build=build,
)
