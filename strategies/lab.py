"""The behaviour every fl_poison strategy adds to a Flower strategy.

:class:`LabStrategy` is mixed in before a Flower strategy class (``class X(LabStrategy, FedAvg)``):

1. ``configure_train`` sends the round to the partitions drawn by a seeded
   :class:`~strategies.sampling.PartitionSampler`, through a
   :class:`~strategies.sampling.SubsetGrid` view so that the Flower strategy's own message
   construction (and additions such as FedProx's ``proximal-mu``) is kept.
2. ``aggregate_train`` orders the replies by partition id (so that floating-point sums, and
   hence results, do not depend on arrival order), records each client in the
   :class:`~fl_poison.core.round_log.RoundLog`, drops replies that are malformed or non-finite
   (:func:`fl_poison.core.reply_checks.reply_problem`), hands the rest to :meth:`LabStrategy.defend`
   and records what the defense decided for each client. With nothing acceptable the global
   model stays as it was.

A defense overrides :meth:`LabStrategy.defend`; the default is the Flower strategy's own
aggregation with every reply accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.sampling import PartitionSampler, SubsetGrid
from strategies.updates import reply_metric


@dataclass(frozen=True)
class ClientDecision:
    """What a defense did with one client's update.

    Attributes
    ----------
    partition_id : int
        The client.
    decision : str
        ``accepted``, ``rejected`` or ``clipped``; ``skipped`` when the rule declined to aggregate
        the round at all (Bulyan with too few replies), which is no judgement of the client.
    norm_after : float
        Norm of the update as it entered the aggregate (0 when rejected).
    weight : float
        Its share in the aggregate (NaN for coordinate-wise rules such as the median).
    bound : float
        The clipping bound applied (NaN when none).
    """

    partition_id: int
    decision: str
    norm_after: float
    weight: float
    bound: float = math.nan


def weighted_decisions(
    round_log: RoundLog, replies: Sequence[Message], kept: Sequence[Message], weighted_by_key: str
) -> list[ClientDecision]:
    """Decisions for FedAvg over ``kept``: kept replies accepted with their example share, others rejected."""
    kept_ids = {id(message) for message in kept}
    total = sum(reply_metric(message, weighted_by_key) for message in kept)
    decisions = []
    for message in replies:
        partition_id = round_log.partition_of(message)
        if id(message) in kept_ids:
            share = reply_metric(message, weighted_by_key) / total if total > 0 else math.nan
            decisions.append(ClientDecision(partition_id, "accepted", round_log.current_norm(partition_id), share))
        else:
            decisions.append(ClientDecision(partition_id, "rejected", 0.0, 0.0))
    return decisions


def unweighted_decisions(
    round_log: RoundLog, replies: Sequence[Message], kept: Sequence[Message]
) -> list[ClientDecision]:
    """Decisions for coordinate-wise rules: kept replies accepted (weight NaN), others rejected."""
    kept_ids = {id(message) for message in kept}
    return [
        ClientDecision(
            round_log.partition_of(m), "accepted", round_log.current_norm(round_log.partition_of(m)), math.nan
        )
        if id(m) in kept_ids
        else ClientDecision(round_log.partition_of(m), "rejected", 0.0, 0.0)
        for m in replies
    ]


class LabStrategy:
    """Mix-in: seeded partition sampling, reply screening, defense hook and forensics.

    Parameters
    ----------
    sampler : PartitionSampler
        Draws the partitions of each round.
    round_log : RoundLog
        Receives one row per sampled client per round.
    **kwargs :
        Passed on to the Flower strategy.

    Attributes
    ----------
    weighs_clients : bool
        Whether the Flower strategy's aggregate is a weighted average of client updates (each
        accepted client's ``weight`` is its example share); False for coordinate-wise rules,
        whose clients get no weight of their own.
    """

    weighs_clients = True

    def __init__(self, *, sampler: PartitionSampler, round_log: RoundLog, **kwargs: object) -> None:
        kwargs.setdefault("fraction_train", 1.0)
        kwargs.setdefault("fraction_evaluate", 0.0)
        kwargs.setdefault("min_train_nodes", 1)
        kwargs.setdefault("min_evaluate_nodes", 0)
        kwargs.setdefault("min_available_nodes", 1)
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self.sampler = sampler
        self.round_log = round_log
        self._global_arrays: dict[str, np.ndarray] = {}
        self._sampled: list[int] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the round to the partitions drawn for it."""
        self._global_arrays = record_to_numpy(arrays)
        self._sampled = self.sampler.partitions_for_round(server_round)
        view = SubsetGrid(grid, self.sampler.nodes_for_round(server_round))
        return super().configure_train(server_round, arrays, config, view)  # type: ignore[misc]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record every sampled client, drop unusable replies, let :meth:`defend` aggregate the rest."""
        ordered = sorted(replies, key=self.round_log.partition_of)
        rows = self.round_log.record_replies(server_round, self._global_arrays, self._sampled, ordered)
        usable = {row.partition_id for row in rows if row.status == "ok"}
        accepted = [message for message in ordered if self.round_log.partition_of(message) in usable]
        if not accepted:
            return None, None
        arrays, metrics, decisions = self.defend(server_round, accepted, self._global_arrays)
        self.round_log.record_decisions(server_round, decisions)
        return arrays, metrics

    def defend(
        self, server_round: int, replies: Sequence[Message], reference: Mapping[str, np.ndarray]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, list[ClientDecision]]:
        """Aggregate ``replies`` (all well-formed, in partition-id order) against the global ``reference``.

        The default is the Flower strategy's own ``aggregate_train`` with every reply accepted
        (weighted by its example count when :attr:`weighs_clients`).
        """
        if self.weighs_clients:
            decisions = weighted_decisions(self.round_log, replies, replies, self.weighted_by_key)  # type: ignore[attr-defined]
        else:
            decisions = unweighted_decisions(self.round_log, replies, replies)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        return arrays, metrics, decisions
