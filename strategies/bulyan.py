"""Bulyan (El Mhamdi et al., 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium"), on float64 updates.

Algorithm, with n updates of which at most f are Byzantine (needs n ≥ 4f + 3; with fewer replies
the round is skipped):

1. select θ = n − 2f updates by Krum (Multi-Krum on float64 updates);
2. per coordinate, average the β = θ − 2f values closest to the median of the selected ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan

from fl_poison.core.catalogue import AGGREGATION_RULE, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError
from strategies.krum import KRUM_F, assumed_attackers, select_multikrum
from strategies.lab import ClientDecision, LabStrategy, unweighted_decisions
from strategies.spec import BuildContext, DefenseSpec
from strategies.updates import content_update_matrix


class LabBulyan(LabStrategy, Bulyan):
    """Flower's Bulyan with a float64 Multi-Krum selection, seeded sampling and forensics.

    Parameters
    ----------
    num_malicious_nodes : int
        f; Bulyan needs at least 4f + 3 replies and skips the round otherwise.
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs["selection_rule"] = self._select
        super().__init__(**kwargs)
        self._reference: Mapping[str, np.ndarray] = {}
        self._selected: list[RecordDict] = []

    def _select(
        self, contents: list[RecordDict], num_malicious_nodes: int, num_nodes_to_select: int
    ) -> list[RecordDict]:
        """Bulyan's first step: Multi-Krum on float64 updates (remembers what it kept)."""
        chosen = select_multikrum(
            content_update_matrix(contents, self._reference), num_malicious_nodes, num_nodes_to_select
        )
        self._selected = [contents[i] for i in chosen]
        return self._selected

    def defend(
        self, server_round: int, replies: Sequence[Message], reference: Mapping[str, np.ndarray]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, list[ClientDecision]]:
        """Bulyan; the updates its selection kept are accepted, the others rejected (all ``skipped`` when it skips the round)."""
        self._reference = reference
        self._selected = []
        arrays, metrics = Bulyan.aggregate_train(self, server_round, list(replies))
        if arrays is None:  # fewer than 4f + 3 replies: Bulyan skips the round, judging nobody
            return (
                None,
                None,
                [ClientDecision(self.round_log.partition_of(message), "skipped", 0.0, 0.0) for message in replies],
            )
        kept_ids = {id(content) for content in self._selected}
        kept = [message for message in replies if id(message.content) in kept_ids]
        return arrays, metrics, unweighted_decisions(self.round_log, replies, kept)


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Bulyan needs n >= 4f + 3 (n = clients per round)."""
    f, per_round = assumed_attackers(config), config.sampled_per_round
    if per_round < 4 * f + 3:
        raise ConfigError.bad_value("krum-f", f, f"f with 4f + 3 <= clients per round ({per_round}) for bulyan")


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """Bulyan with f from ``config``."""
    return LabBulyan(
        sampler=context.sampler, round_log=context.round_log, num_malicious_nodes=assumed_attackers(config)
    )


DEFENSE = DefenseSpec(
    name="bulyan",
    kind=AGGREGATION_RULE,
    summary="Krum-selected n - 2f updates, then per coordinate the mean of the n - 4f values closest to the median (El Mhamdi et al., 2018).",
    settings=(KRUM_F,),
    check=check,
    build=build,
)
