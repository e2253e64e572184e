"""What a defense module declares and builds.

Every module of :mod:`strategies` that holds a defense ends with ``DEFENSE = DefenseSpec(...)``;
:func:`strategies.registry.registered_defenses` finds them. A spec's ``build`` turns a parsed
configuration into a :class:`Defense`: the algorithm alone, on the round's decoded updates
(:class:`~fl_poison.core.round_updates.RoundUpdates`), returning an :class:`Outcome`. The one
Flower strategy around every defense (:class:`strategies.lab.LabStrategy`: sampling, screening,
forensics, the new global model) is built by the registry, so a defense module holds no Flower code.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from fl_poison.core.catalogue import AlgorithmSpec
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates, UpdateLayout
from fl_poison.core.settings import Setting

ACCEPTED, REJECTED, CLIPPED, SKIPPED = "accepted", "rejected", "clipped", "skipped"


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
        Norm of the update as it entered the aggregate (0 when rejected or skipped).
    weight : float
        Its share in the aggregate (NaN for coordinate-wise rules such as the median; 0 when
        rejected or skipped).
    bound : float
        The clipping bound applied (NaN when none).
    """

    partition_id: int
    decision: str
    norm_after: float
    weight: float
    bound: float = math.nan


@dataclass(frozen=True)
class Outcome:
    """What a defense made of a round.

    Attributes
    ----------
    update : torch.Tensor | None
        The aggregated update (float64, one value per coordinate) added to the global model;
        None keeps the global model (nothing to aggregate, or the rule skips the round).
    decisions : tuple[ClientDecision, ...]
        One per row of the round's updates, in row order.
    metric_rows : tuple[int, ...]
        The rows whose reported metrics are averaged (weighted by examples) into the round's
        train metrics: those that made the aggregate.
    exact_row : int | None
        Set when the aggregate is exactly one row's update with weight 1 (Krum, FedAvg over one
        reply): that reply's own weights become the new model, bit for bit.
    diagnostics : Mapping[str, float | int]
        What the rule computed for the round as a whole (the iterations a geometric median ran,
        the clusters FLAME found, its noise): each becomes a ``defense_<name>`` column of the
        round's row of ``rounds.csv``. Names are lower-case words joined by ``_``.
    """

    update: torch.Tensor | None
    decisions: tuple[ClientDecision, ...]
    metric_rows: tuple[int, ...]
    exact_row: int | None = None
    diagnostics: Mapping[str, float | int] = field(default_factory=dict)


def skipped_round(updates: RoundUpdates) -> Outcome:
    """The outcome of a rule that declines to aggregate the round (judging nobody)."""
    decisions = tuple(ClientDecision(pid, SKIPPED, 0.0, 0.0) for pid in updates.partition_ids)
    return Outcome(update=None, decisions=decisions, metric_rows=())


def unweighted_decisions(updates: RoundUpdates, kept: Sequence[int]) -> tuple[ClientDecision, ...]:
    """Decisions of a coordinate-wise rule: rows in ``kept`` accepted (weight NaN), others rejected."""
    norms = updates.scaled_norms().tolist()
    chosen = set(kept)
    return tuple(
        ClientDecision(pid, ACCEPTED, norms[row], math.nan)
        if row in chosen
        else ClientDecision(pid, REJECTED, 0.0, 0.0)
        for row, pid in enumerate(updates.partition_ids)
    )


class Defense(ABC):
    """An aggregation rule or a pre-aggregator, on the round's decoded updates."""

    @abstractmethod
    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Turn the round's usable updates (at least one row, in partition-id order) into an :class:`Outcome`.

        Parameters
        ----------
        updates : RoundUpdates
            The rows as the defense sees them are ``updates.scale[i] * updates.matrix[i]``.
        """

    @abstractmethod
    def describe(self) -> str:
        """One line for the log: the rule and its parameters."""

    def train_config(self) -> Mapping[str, bool | int | float | str]:
        """Entries added to every training instruction (FedProx sends ``proximal-mu``); none by default."""
        return {}


ServerUpdate = Callable[[UpdateLayout, int], torch.Tensor]
"""The server's own update from a round's global model (``layout.global_arrays``) in round ``server_round``:
``layout.size`` float64 values in the order of an update row."""


@dataclass(frozen=True)
class BuildContext:
    """What a defense's builder may use besides the configuration.

    Parameters
    ----------
    wrapped : Callable[[str], Defense]
        Builds the registered defense of that name from the same configuration; a pre-aggregator
        (norm-clip) builds the rule it hands its updates to with it.
    root_training : Callable[[int], ServerUpdate] | None
        Given a number of rows, draws the server's clean root dataset of that size from held-out
        data (the run then evaluates on held-out rows outside it) and returns the server's update
        on it (FLTrust); the ServerApp provides it (:class:`fl_poison.core.root_dataset.RootDataset`),
        None elsewhere (a defense that needs it fails to build).
    """

    wrapped: Callable[[str], Defense]
    root_training: Callable[[int], ServerUpdate] | None = None


@dataclass(frozen=True, kw_only=True)
class DefenseSpec(AlgorithmSpec):
    """A registered defense: an aggregation rule or a pre-aggregator.

    Parameters
    ----------
    name, kind, summary, settings, check :
        See :class:`~fl_poison.core.catalogue.AlgorithmSpec`; ``kind`` is
        :data:`~fl_poison.core.catalogue.AGGREGATION_RULE` or
        :data:`~fl_poison.core.catalogue.PRE_AGGREGATOR`.
    build : Callable[[ExperimentConfig, BuildContext], Defense]
        Builds the defense from a configuration that the catalogue has parsed and checked.
    wraps : Setting[str] | None
        For a pre-aggregator: the setting naming the rule it hands its updates to (``clip-wrap``),
        which lets a check follow the chain of wrapped rules and refuse a loop; None for a rule.
    """

    build: Callable[[ExperimentConfig, BuildContext], Defense]
    wraps: Setting[str] | None = None
