"""Reproducible client sampling by partition id.

Flower's node ids are random per run and its strategies sample with the unseeded global
``random`` module. Here the server learns each node's partition id first, draws partition ids
with its own generator seeded by ``(seed, round)``, and shows the Flower strategy a view of the
grid that holds only the drawn nodes, so the strategy's own sampling selects exactly them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fl_poison.core.reply_polling import send_and_receive
from fl_poison.core.schedule import sampled_partitions


class PartitionSampler:
    """Draws the partition ids that train in a round.

    Parameters
    ----------
    node_of_partition : Mapping[int, int]
        Flower node id of every partition id.
    per_round : int
        Number of partitions drawn per round (all of them when equal to the number of nodes).
    seed : int
        Seed of the draws; round ``r`` uses a generator seeded with ``(seed, r)``, so a round's
        draw does not depend on the rounds before it.
    """

    def __init__(self, node_of_partition: Mapping[int, int], per_round: int, seed: int) -> None:
        if not 1 <= per_round <= len(node_of_partition):
            raise ValueError(f"per_round must be in 1..{len(node_of_partition)}, got {per_round}")
        self.node_of_partition = dict(node_of_partition)
        self.partition_of_node = {node: pid for pid, node in self.node_of_partition.items()}
        self.per_round = per_round
        self.seed = seed

    def partitions_for_round(self, server_round: int) -> list[int]:
        """The sorted partition ids drawn for ``server_round`` (see :func:`fl_poison.core.schedule.sampled_partitions`)."""
        partition_ids = sorted(self.node_of_partition)
        drawn = sampled_partitions(len(partition_ids), self.per_round, self.seed, server_round)
        return [partition_ids[i] for i in drawn]

    def nodes_for_round(self, server_round: int) -> list[int]:
        """The Flower node ids of :meth:`partitions_for_round`."""
        return [self.node_of_partition[pid] for pid in self.partitions_for_round(server_round)]


class SubsetGrid(Grid):
    """A view of ``grid`` that exposes only ``node_ids``; every other call goes to ``grid``.

    Parameters
    ----------
    grid : Grid
        The run's grid.
    node_ids : Iterable[int]
        The nodes the strategy may sample in this round.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def set_run(self, run) -> None:  # noqa: ANN001 - Flower's Run type
        self._grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self._grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:  # noqa: PLR0913
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Flower's ``send_and_receive``, looking for replies without its fixed waits (see :mod:`fl_poison.core.reply_polling`)."""
        return send_and_receive(self._grid, messages, timeout)
