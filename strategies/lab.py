"""The one Flower strategy around every defense: sampling, screening, forensics, the new model.

:class:`LabStrategy` is Flower's FedAvg with these steps replaced:

1. ``configure_train`` sends the round to the partitions drawn by a seeded
   :class:`~strategies.sampling.PartitionSampler`, through a
   :class:`~strategies.sampling.SubsetGrid` view so that Flower's own message construction is
   kept, with the defense's own entries (FedProx's ``proximal-mu``) in the train config.
2. ``aggregate_train`` orders the replies by partition id (so that floating-point sums, and hence
   results, do not depend on arrival order), lets the simulation's model-poisoning adversary
   (:class:`~fl_poison.core.adversary_stage.AdversaryStage`, when the run has one) rewrite the
   attackers' replies and records what it chose, decodes them once
   (:func:`fl_poison.core.round_updates.decode_round`: screening, update norms and the matrix of
   updates, written into a matrix kept from round to round), records every client in the
   :class:`~fl_poison.core.round_log.RoundLog`, lets the
   :class:`~strategies.spec.Defense` aggregate the usable updates, records what it decided for
   each client and returns the global model plus the aggregated update (in float64, rounded
   once to the model's dtype) and the example-weighted train metrics of the clients that made
   the aggregate. Before the defense sees the updates, ``client-weighting``
   (:class:`~fl_poison.core.client_weighting.ClientWeighting`) replaces the reported example
   counts by the counts the weights use (capped by default); both are recorded per client. With nothing usable, or when the defense skips the round, the global model
   stays as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl_poison.core.adversary_stage import AdversaryStage
from fl_poison.core.client_weighting import ClientWeighting
from fl_poison.core.round_log import RoundLog
from fl_poison.core.round_updates import RoundUpdates, UpdateLayout, decode_round
from fl_poison.core.timings import PhaseClock
from fl_poison.core.weights import record_to_numpy
from strategies.sampling import PartitionSampler, SubsetGrid
from strategies.spec import Defense


class LabStrategy(FedAvg):
    """Seeded partition sampling, reply screening, a defense and forensics, as a Flower strategy.

    Parameters
    ----------
    sampler : PartitionSampler
        Draws the partitions of each round.
    round_log : RoundLog
        Receives one row per sampled client per round.
    defense : Defense
        Aggregates the round's usable updates.
    device : torch.device | str
        Where the round's updates are kept and aggregated (``cuda`` when the server has a GPU).
    weighting : ClientWeighting | None
        Turns the reported example counts into the counts weights use (None: ``capped`` with no
        known partition sizes, i.e. at twice the round's median report).
    clock : PhaseClock | None
        Receives the time from sending a round to receiving its replies (``train``) and the time
        spent aggregating (``aggregate``); None keeps its own.
    adversary : AdversaryStage | None
        Rewrites the attackers' replies of each round before screening (a model-poisoning attack,
        simulation only); None when the run has none (the replies go on untouched, at no cost).
    **kwargs :
        Other arguments of Flower's FedAvg (sampling fractions and minimums default to "every
        node drawn by the sampler, no federated evaluation").
    """

    def __init__(
        self,
        *,
        sampler: PartitionSampler,
        round_log: RoundLog,
        defense: Defense,
        device: torch.device | str = "cpu",
        weighting: ClientWeighting | None = None,
        clock: PhaseClock | None = None,
        adversary: AdversaryStage | None = None,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("fraction_train", 1.0)
        kwargs.setdefault("fraction_evaluate", 0.0)
        kwargs.setdefault("min_train_nodes", 1)
        kwargs.setdefault("min_evaluate_nodes", 0)
        kwargs.setdefault("min_available_nodes", 1)
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.sampler = sampler
        self.round_log = round_log
        self.defense = defense
        self.device = torch.device(device)
        self.weighting = weighting or ClientWeighting()
        self.clock = clock or PhaseClock()
        self.adversary = adversary
        self._sent_at: float | None = None
        self._global_arrays: dict[str, np.ndarray] = {}
        self._sampled: list[int] = []
        self._workspace: torch.Tensor | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the round (with the defense's train config entries) to the partitions drawn for it."""
        self._global_arrays = record_to_numpy(arrays)
        self._sampled = self.sampler.partitions_for_round(server_round)
        for key, value in self.defense.train_config().items():
            config[key] = value
        view = SubsetGrid(grid, self.sampler.nodes_for_round(server_round))
        messages = super().configure_train(server_round, arrays, config, view)
        self._sent_at = time.monotonic()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode and record every reply, let the defense aggregate the usable ones, record its decisions."""
        if self._sent_at is not None:
            self.clock.add("train", time.monotonic() - self._sent_at)
            self._sent_at = None
        with self.clock.phase("aggregate"):
            return self._aggregate(server_round, replies)

    def _aggregate(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        ordered = sorted(replies, key=self.round_log.partition_of)
        if self.adversary is not None:
            forged = self.adversary.rewrite(server_round, ordered, self._global_arrays, self.round_log.partition_of)
            if forged is not None:
                self.round_log.record_adversary(server_round, forged)
        workspace = self._workspace_for(len(ordered), UpdateLayout(self._global_arrays).size)
        updates, screened = decode_round(
            ordered, self._global_arrays, self.round_log.partition_of, self.device, workspace, server_round
        )
        self.round_log.record_screening(server_round, self._sampled, screened)
        if updates.count == 0:
            return None, None
        updates = updates.weighted(self.weighting.used_counts(updates.partition_ids, updates.reported_examples))
        self.round_log.record_used_examples(
            server_round, dict(zip(updates.partition_ids, updates.num_examples, strict=True))
        )
        outcome = self.defense.aggregate(updates)
        self.round_log.record_decisions(server_round, outcome.decisions)
        self.round_log.record_defense(server_round, outcome.diagnostics)
        if outcome.update is None:
            return None, None
        if outcome.exact_row is None:
            arrays = updates.layout.apply(outcome.update)
        else:
            arrays = updates.layout.float_arrays_of(updates.arrays[outcome.exact_row])
        contents = [_metrics_weighted_by(updates, row, self.weighted_by_key) for row in outcome.metric_rows]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None
        return arrays, metrics

    def _workspace_for(self, rows: int, size: int) -> torch.Tensor:
        """The float32 matrix the round's updates are decoded into, kept from round to round (grown when needed).

        Keeping it costs its memory between rounds (n × d × 4 bytes) and saves touching that much
        fresh memory in every round, which costs about as much as decoding the replies.
        """
        if self._workspace is None or self._workspace.shape[0] < rows or self._workspace.shape[1] != size:
            self._workspace = None  # release the old one before allocating its successor
            self._workspace = torch.empty((max(rows, 1), size), dtype=torch.float32, device=self.device)
        return self._workspace

    def summary(self) -> None:
        """Log the defense, then Flower's strategy settings."""
        print(
            f"[fl-poison] defense: {self.defense.describe()} (aggregating on {self.device}; "
            f"client weighting: {self.weighting.describe()})",
            flush=True,
        )
        super().summary()


def _metrics_weighted_by(updates: RoundUpdates, row: int, weight_key: str) -> RecordDict:
    """Row ``row``'s reply metrics with ``weight_key`` set to the count its weight uses, for Flower's metric averaging.

    Parameters
    ----------
    updates : RoundUpdates
        The round's weighted updates.
    row : int
        The row.
    weight_key : str
        The metric Flower weights by (``num-examples``).
    """
    record = next(iter(updates.contents[row].metric_records.values()))
    values = {key: value for key, value in record.items() if key != weight_key}
    return RecordDict({"metrics": MetricRecord({**values, weight_key: updates.num_examples[row]})})
