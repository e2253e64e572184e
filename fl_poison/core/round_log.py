"""What happened to every sampled client in every round, as rows for ``clients.csv``.

The strategy calls :meth:`RoundLog.record_screening` with what the screening of the round's
replies found (:func:`fl_poison.core.round_updates.decode_round`), before aggregating,
:meth:`RoundLog.record_used_examples` with the counts the weights use (``client-weighting``), and
:meth:`RoundLog.record_decisions` with what the defense did. The malicious flag comes from the
client's reply (the threat model's ground truth, for forensics only; no defense reads it). In a
round where a model-poisoning adversary forged updates (:meth:`RoundLog.record_adversary`), its
``adversary_*`` columns (knowledge level, the attack's parameters) join the attackers' rows and
the round's row of ``rounds.csv`` (:meth:`RoundLog.adversary_columns`), and so do what the defense
computed for the round as a whole (:meth:`RoundLog.record_defense`, ``defense_*`` columns).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from flwr.app import Message

from fl_poison.core.adversary_stage import AdversaryRound
from fl_poison.core.round_updates import ScreenedReply

CLIENT_COLUMNS = (
    "round",
    "partition_id",
    "malicious",
    "attacked",
    "attack_target",
    "status",
    "reason",
    "num_examples",
    "used_examples",
    "loss",
    "norm_before",
    "norm_after",
    "bound",
    "decision",
    "weight",
)
FLAGGED_DECISIONS = ("rejected", "clipped")
AGGREGATED_DECISIONS = ("accepted", "clipped")  # the update entered the new global model


class ClientDecisionLike(Protocol):
    """What :meth:`RoundLog.record_decisions` reads (see :class:`strategies.spec.ClientDecision`)."""

    @property
    def partition_id(self) -> int: ...

    @property
    def decision(self) -> str: ...

    @property
    def norm_after(self) -> float: ...

    @property
    def bound(self) -> float: ...

    @property
    def weight(self) -> float: ...


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
    used_examples : float
        The count its weight was computed from (``client-weighting``: the report, capped, or 1);
        0 when the reply was not usable, NaN before the weighting ran.
    loss : float
        Training loss the client reported.
    norm_before : float
        L2 norm of the client's float-parameter update ``w_client - w_global`` (float64).
    norm_after : float
        Norm of the update as it entered the aggregate (0 when rejected; NaN before the defense ran).
    bound : float
        The clipping bound applied to it (NaN when none).
    decision : str
        ``accepted``, ``rejected`` (by the defense or the reply screening), ``clipped``, or
        ``skipped`` (the rule aggregated nothing this round); empty for failures.
    weight : float
        Its share in the aggregate (NaN for coordinate-wise rules).
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
    norm_after: float = math.nan
    bound: float = math.nan
    decision: str = ""
    weight: float = math.nan
    used_examples: float = math.nan


class RoundLog:
    """Collects :class:`ClientRoundRecord` rows for a run.

    Parameters
    ----------
    partition_of_node : Mapping[int, int]
        Partition id of every Flower node id.
    """

    def __init__(self, partition_of_node: Mapping[int, int]) -> None:
        self.partition_of_node = dict(partition_of_node)
        self._by_round: dict[int, list[ClientRoundRecord]] = {}
        self._latest_attack_target = -1
        self._adversary: dict[int, AdversaryRound] = {}
        self._defense: dict[int, dict[str, float | int]] = {}

    @property
    def records(self) -> list[ClientRoundRecord]:
        """Every row recorded so far, round by round in the order the rounds were recorded."""
        return [record for rows in self._by_round.values() for record in rows]

    def partition_of(self, message: Message) -> int:
        """The partition id of the node that sent ``message``."""
        return self.partition_of_node.get(message.metadata.src_node_id, -1)

    def record_screening(
        self, server_round: int, sampled_partitions: Sequence[int], screened: Sequence[ScreenedReply]
    ) -> list[ClientRoundRecord]:
        """Add a row per sampled client (clients that never answered are ``failed``); return the round's rows.

        Parameters
        ----------
        server_round : int
            The round.
        sampled_partitions : Sequence[int]
            The partitions the round was sent to.
        screened : Sequence[ScreenedReply]
            What the screening found in every reply received.
        """
        rows = [_row(server_round, reply) for reply in screened]
        answered = {reply.partition_id for reply in screened}
        rows.extend(_failed(server_round, pid, "no reply") for pid in sampled_partitions if pid not in answered)
        rows.sort(key=lambda row: row.partition_id)
        self._by_round.setdefault(server_round, []).extend(rows)
        targets = [row.attack_target for row in rows if row.attacked and row.attack_target >= 0]
        if targets:
            self._latest_attack_target = targets[-1]
        return rows

    def rows(self, server_round: int | None = None) -> list[dict[str, object]]:
        """The rows (of ``server_round`` only, when given) as dictionaries keyed by :data:`CLIENT_COLUMNS`.

        Parameters
        ----------
        server_round : int | None
            The round whose rows are wanted; None for every round.
        """
        records = self.records if server_round is None else self.for_round(server_round)
        rows = []
        for record in records:
            row = asdict(record)
            forged = self._adversary.get(record.round)
            if forged is not None and record.partition_id in forged.attackers:
                row.update(forged.columns)
            rows.append(row)
        return rows

    def record_adversary(self, server_round: int, forged: AdversaryRound) -> None:
        """Store what the adversary stage did in ``server_round`` (its columns join the attackers' rows).

        Parameters
        ----------
        server_round : int
            The round.
        forged : AdversaryRound
            The attackers whose replies were rewritten, and the round's adversary columns.
        """
        self._adversary[server_round] = forged

    def adversary_columns(self, server_round: int) -> dict[str, float | int | str]:
        """The adversary stage's columns of ``server_round`` for ``rounds.csv`` (empty when it forged nothing).

        Parameters
        ----------
        server_round : int
            The round.
        """
        forged = self._adversary.get(server_round)
        return dict(forged.columns) if forged is not None else {}

    def record_defense(self, server_round: int, diagnostics: Mapping[str, float | int]) -> None:
        """Store what the defense computed for ``server_round`` as a whole (its iterations, clusters, noise).

        Parameters
        ----------
        server_round : int
            The round.
        diagnostics : Mapping[str, float | int]
            Name → value; each becomes the ``defense_<name>`` column of the round's row.
        """
        if diagnostics:
            self._defense[server_round] = {f"defense_{name}": value for name, value in diagnostics.items()}

    def defense_columns(self, server_round: int) -> dict[str, float | int]:
        """The defense's ``defense_*`` columns of ``server_round`` for ``rounds.csv`` (empty when it reported none).

        Parameters
        ----------
        server_round : int
            The round.
        """
        return dict(self._defense.get(server_round, {}))

    def for_round(self, server_round: int) -> list[ClientRoundRecord]:
        """The rows of one round (kept per round: the cost does not grow with the rounds run)."""
        return list(self._by_round.get(server_round, ()))

    def record_decisions(self, server_round: int, decisions: Iterable[ClientDecisionLike]) -> None:
        """Store what the defense did with each client of ``server_round``."""
        by_partition = {record.partition_id: record for record in self.for_round(server_round)}
        for decision in decisions:
            record = by_partition.get(decision.partition_id)
            if record is None:
                continue
            record.decision = decision.decision
            record.norm_after = decision.norm_after
            record.bound = decision.bound
            record.weight = decision.weight

    def record_used_examples(self, server_round: int, used: Mapping[int, float]) -> None:
        """Store the count each usable client's weight is computed from in ``server_round``.

        Parameters
        ----------
        server_round : int
            The round.
        used : Mapping[int, float]
            The count of every partition id whose reply was usable.
        """
        for record in self.for_round(server_round):
            if record.partition_id in used:
                record.used_examples = used[record.partition_id]

    def latest_attack_target(self) -> int:
        """The most recent attack target any client reported (-1 when none did)."""
        return self._latest_attack_target


def _row(server_round: int, reply: ScreenedReply) -> ClientRoundRecord:
    if reply.status == "failed":
        return _failed(server_round, reply.partition_id, reply.reason)
    ok = reply.status == "ok"
    return ClientRoundRecord(
        round=server_round,
        partition_id=reply.partition_id,
        malicious=_metric_int(reply.metrics, "malicious", 0),
        attacked=_metric_int(reply.metrics, "attacked", 0),
        attack_target=_metric_int(reply.metrics, "attack_target", -1),
        status=reply.status,
        reason=reply.reason,
        num_examples=_metric_int(reply.metrics, "num-examples", 0),
        loss=_metric_float(reply.metrics, "train_loss"),
        norm_before=reply.norm,
        decision="" if ok else "rejected",
        norm_after=math.nan if ok else 0.0,
        weight=math.nan if ok else 0.0,
        used_examples=math.nan if ok else 0.0,
    )


def _metric_float(metrics: Mapping[str, object], key: str) -> float:
    """A scalar metric as a float; NaN when missing or not a number (a rejected reply may send a list)."""
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _metric_int(metrics: Mapping[str, object], key: str, default: int) -> int:
    """A scalar metric as an int; ``default`` when missing, not a number or not finite."""
    value = _metric_float(metrics, key)
    return int(value) if math.isfinite(value) else default


def _failed(server_round: int, partition_id: int, reason: str) -> ClientRoundRecord:
    return ClientRoundRecord(
        server_round, partition_id, 0, 0, -1, "failed", reason, 0, math.nan, math.nan, used_examples=0.0
    )


def first_client_error(records: Iterable[ClientRoundRecord]) -> str:
    """The reason of the first failed or rejected reply among ``records`` ("" when there is none).

    Parameters
    ----------
    records : Iterable[ClientRoundRecord]
        Rows in the order they were recorded.
    """
    return next((record.reason for record in records if record.status != "ok" and record.reason), "")
