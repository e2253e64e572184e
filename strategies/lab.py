"""The behaviour every fl_poison strategy adds to a Flower strategy.

:class:`LabStrategy` is mixed in before a Flower strategy class (``class X(LabStrategy, FedAvg)``):

1. ``configure_train`` sends the round to the partitions drawn by a seeded
   :class:`~strategies.sampling.PartitionSampler`, through a
   :class:`~strategies.sampling.SubsetGrid` view so that the Flower strategy's own message
   construction (and additions such as FedProx's ``proximal-mu``) is kept.
2. ``aggregate_train`` orders the replies by partition id (so that floating-point sums, and
   hence results, do not depend on arrival order), records each client in the
   :class:`~fl_poison.round_log.RoundLog`, drops replies that are malformed or non-finite
   (:func:`fl_poison.reply_checks.reply_problem`), then lets the Flower strategy aggregate.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fl_poison.round_log import RoundLog
from fl_poison.weights import record_to_numpy
from strategies.sampling import PartitionSampler, SubsetGrid


class LabStrategy:
    """Mix-in: seeded partition sampling and per-client forensics for a Flower strategy.

    Parameters
    ----------
    sampler : PartitionSampler
        Draws the partitions of each round.
    round_log : RoundLog
        Receives one row per sampled client per round.
    **kwargs :
        Passed on to the Flower strategy.
    """

    def __init__(self, *, sampler: PartitionSampler, round_log: RoundLog, **kwargs: object) -> None:
        kwargs.setdefault("fraction_train", 1.0)
        kwargs.setdefault("fraction_evaluate", 0.0)
        kwargs.setdefault("min_train_nodes", 1)
        kwargs.setdefault("min_evaluate_nodes", 0)
        kwargs.setdefault("min_available_nodes", 1)
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self.sampler = sampler
        self.round_log = round_log
        self._global_arrays: dict = {}
        self._sampled: list[int] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Send the round to the partitions drawn for it."""
        self._global_arrays = record_to_numpy(arrays)
        self._sampled = self.sampler.partitions_for_round(server_round)
        view = SubsetGrid(grid, self.sampler.nodes_for_round(server_round))
        return super().configure_train(server_round, arrays, config, view)  # type: ignore[misc]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record every sampled client, drop rejected replies, aggregate the rest in partition-id order.

        With no acceptable reply the global model stays as it was (None arrays).
        """
        ordered = sorted(replies, key=self.round_log.partition_of)
        rows = self.round_log.record_replies(server_round, self._global_arrays, self._sampled, ordered)
        accepted_partitions = {row.partition_id for row in rows if row.status == "ok"}
        accepted = [message for message in ordered if self.round_log.partition_of(message) in accepted_partitions]
        if not accepted:
            return None, None
        return super().aggregate_train(server_round, accepted)  # type: ignore[misc]
