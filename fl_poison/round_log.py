"""What happened to every sampled client in every round, as rows for ``clients.csv``.

The strategy calls :meth:`RoundLog.record_replies` with the global weights it sent and the replies
it got, before aggregating. The malicious flag comes from the client's reply (the threat model's
ground truth, for forensics only; no defense reads it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from flwr.app import Message

from fl_poison.weights import record_to_numpy, update_norm

CLIENT_COLUMNS = ("round", "partition_id", "malicious", "status", "num_examples", "loss", "norm_before")


@dataclass
class ClientRoundRecord:
    """One sampled client in one round.

    Attributes
    ----------
    round, partition_id : int
        When and who.
    malicious : int
        1 when the threat model made this client malicious this round, else 0.
    status : str
        ``ok`` for a reply with weights, ``failed`` for an error reply or none at all.
    num_examples : int
        Number of training examples the client reported.
    loss : float
        Training loss the client reported.
    norm_before : float
        L2 norm of the client's float-parameter update ``w_client - w_global`` (float64).
    """

    round: int
    partition_id: int
    malicious: int
    status: str
    num_examples: int
    loss: float
    norm_before: float


class RoundLog:
    """Collects :class:`ClientRoundRecord` rows for a run.

    Parameters
    ----------
    partition_of_node : Mapping[int, int]
        Partition id of every Flower node id.
    """

    def __init__(self, partition_of_node: Mapping[int, int]) -> None:
        self.partition_of_node = dict(partition_of_node)
        self.records: list[ClientRoundRecord] = []

    def partition_of(self, message: Message) -> int:
        """The partition id of the node that sent ``message``."""
        return self.partition_of_node.get(message.metadata.src_node_id, -1)

    def record_replies(
        self,
        server_round: int,
        global_arrays: Mapping[str, np.ndarray],
        sampled_partitions: Sequence[int],
        replies: Sequence[Message],
    ) -> list[ClientRoundRecord]:
        """Add a row per sampled client (replies first, then clients that never answered)."""
        rows = []
        answered = set()
        for message in replies:
            partition_id = self.partition_of(message)
            answered.add(partition_id)
            rows.append(self._row(server_round, partition_id, global_arrays, message))
        for partition_id in sampled_partitions:
            if partition_id not in answered:
                rows.append(ClientRoundRecord(server_round, partition_id, 0, "failed", 0, math.nan, math.nan))
        rows.sort(key=lambda row: row.partition_id)
        self.records.extend(rows)
        return rows

    @staticmethod
    def _row(server_round: int, partition_id: int, global_arrays: Mapping[str, np.ndarray], message: Message) -> ClientRoundRecord:
        if message.has_error():
            return ClientRoundRecord(server_round, partition_id, 0, "failed", 0, math.nan, math.nan)
        metrics = next(iter(message.content.metric_records.values()))
        arrays = next(iter(message.content.array_records.values()))
        try:
            norm = update_norm(record_to_numpy(arrays), global_arrays)
        except (KeyError, ValueError):
            norm = math.nan
        return ClientRoundRecord(
            round=server_round,
            partition_id=partition_id,
            malicious=int(metrics.get("malicious", 0)),
            status="ok",
            num_examples=int(metrics.get("num-examples", 0)),
            loss=float(metrics.get("train_loss", math.nan)),
            norm_before=norm,
        )

    def rows(self) -> list[dict[str, object]]:
        """All rows as dictionaries keyed by :data:`CLIENT_COLUMNS`."""
        return [asdict(record) for record in self.records]

    def for_round(self, server_round: int) -> list[ClientRoundRecord]:
        """The rows of one round."""
        return [record for record in self.records if record.round == server_round]
