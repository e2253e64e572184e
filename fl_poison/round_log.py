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

from fl_poison.reply_checks import reply_problem
from fl_poison.weights import record_to_numpy, update_norm

CLIENT_COLUMNS = (
    "round", "partition_id", "malicious", "attacked", "attack_target", "status", "reason",
    "num_examples", "loss", "norm_before",
)


@dataclass
class ClientRoundRecord:
    """One sampled client in one round.

    Attributes
    ----------
    round, partition_id : int
        When and who.
    malicious : int
        1 when the threat model makes this client an attacker, else 0.
    attacked : int
        1 when its update this round is poisoned, else 0.
    attack_target : int
        The class its attack pushes towards this round (ADA's choice), -1 if none.
    status : str
        ``ok`` for an aggregatable reply, ``rejected`` for a malformed or non-finite one,
        ``failed`` for an error reply or none at all.
    reason : str
        Why a reply was rejected or failed (empty when ok).
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
    attacked: int
    attack_target: int
    status: str
    reason: str
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
        """Add a row per sampled client (clients that never answered are ``failed``); return the round's rows."""
        rows = []
        answered = set()
        for message in replies:
            partition_id = self.partition_of(message)
            answered.add(partition_id)
            rows.append(self._row(server_round, partition_id, global_arrays, message))
        for partition_id in sampled_partitions:
            if partition_id not in answered:
                rows.append(_failed(server_round, partition_id, "no reply"))
        rows.sort(key=lambda row: row.partition_id)
        self.records.extend(rows)
        return rows

    @staticmethod
    def _row(server_round: int, partition_id: int, global_arrays: Mapping[str, np.ndarray], message: Message) -> ClientRoundRecord:
        if message.has_error():
            return _failed(server_round, partition_id, message.error.reason)
        problem = reply_problem(message, global_arrays)
        metrics = next(iter(message.content.metric_records.values()), {})
        norm = math.nan
        if problem is None or "non-finite" in problem:
            try:
                norm = update_norm(record_to_numpy(next(iter(message.content.array_records.values()))), global_arrays)
            except (KeyError, ValueError, StopIteration):
                norm = math.nan
        return ClientRoundRecord(
            round=server_round,
            partition_id=partition_id,
            malicious=int(metrics.get("malicious", 0)),
            attacked=int(metrics.get("attacked", 0)),
            attack_target=int(metrics.get("attack_target", -1)),
            status="ok" if problem is None else "rejected",
            reason=problem or "",
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

    def latest_attack_target(self) -> int:
        """The most recent attack target any client reported (-1 when none did)."""
        targets = [record.attack_target for record in self.records if record.attacked and record.attack_target >= 0]
        return targets[-1] if targets else -1


def _failed(server_round: int, partition_id: int, reason: str) -> ClientRoundRecord:
    return ClientRoundRecord(server_round, partition_id, 0, 0, -1, "failed", reason, 0, math.nan, math.nan)
