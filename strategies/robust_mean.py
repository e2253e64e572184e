"""Coordinate-wise robust aggregation: median, trimmed mean and Bulyan.

- Median (Yin et al., 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
  Rates"): each coordinate of the new model is the median of the clients' values.
- Trimmed mean (same paper): per coordinate, drop the ``trim-beta`` fraction of largest and of
  smallest values, average the rest.
- Bulyan (El Mhamdi et al., 2018, "The Hidden Vulnerability of Distributed Learning in
  Byzantium"; needs n ≥ 4f + 3): (1) select θ = n − 2f updates by repeated Krum — here Multi-Krum
  on float64 updates; (2) per coordinate, average the β = θ − 2f values closest to the median of
  the selected ones.

These are Flower's FedMedian, FedTrimmedAvg and Bulyan with seeded sampling and forensics; only
Bulyan's selection rule is replaced (float64 update distances instead of raw float32 weights).
Median and trimmed mean give no client a weight of its own (``weight`` is NaN) and reject nobody,
so as detectors they flag no one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg

from strategies.krum import select_multikrum
from strategies.lab import ClientDecision, LabStrategy, unweighted_decisions
from strategies.updates import content_update_matrix


class LabMedian(LabStrategy, FedMedian):
    """Flower's FedMedian with seeded sampling and forensics (everybody accepted, no weights)."""

    weighs_clients = False


class LabTrimmedMean(LabStrategy, FedTrimmedAvg):
    """Flower's FedTrimmedAvg with seeded sampling and forensics (everybody accepted, no weights).

    Parameters
    ----------
    beta : float
        Fraction trimmed at each end, per coordinate.
    """

    weighs_clients = False


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

    def _select(self, contents: list[RecordDict], num_malicious_nodes: int, num_nodes_to_select: int) -> list[RecordDict]:
        """Bulyan's first step: Multi-Krum on float64 updates (remembers what it kept)."""
        chosen = select_multikrum(content_update_matrix(contents, self._reference), num_malicious_nodes, num_nodes_to_select)
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
            return None, None, [
                ClientDecision(self.round_log.partition_of(message), "skipped", 0.0, 0.0) for message in replies
            ]
        kept_ids = {id(content) for content in self._selected}
        kept = [message for message in replies if id(message.content) in kept_ids]
        return arrays, metrics, unweighted_decisions(self.round_log, replies, kept)
