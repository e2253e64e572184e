"""The adversary stage of a round, as the strategy sees it: a step between ordering the replies and screening them.

Model-poisoning attacks (ALIE, IPM, MinMax, Fang, Mimic, ...) forge the attackers' updates from
other clients' updates. In simulation only, the strategy (:class:`strategies.lab.LabStrategy`)
hands each round's replies, ordered by partition id, to an :class:`AdversaryStage` before it
screens and decodes them; the stage rewrites the attackers' replies in place, so that screening,
update norms, a defense's exact-row path and forensics all see the forged updates. The strategy
layer cannot import :mod:`clients`, where the attacks live: this protocol is what both sides
agree on (the implementation is :class:`clients.adversary_stage.ModelPoisoningStage`).

A stage finds the attackers from the replies' own ground-truth metrics (``attacked``); only the
stage and the forensics read them, never a defense.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from flwr.app import Message

# Prefix of the columns a stage adds to rounds.csv and to the attackers' rows of clients.csv.
ADVERSARY_COLUMN_PREFIX = "adversary_"


@dataclass(frozen=True)
class AdversaryRound:
    """What the stage did in one round.

    Parameters
    ----------
    attackers : tuple[int, ...]
        The partition ids whose replies it rewrote, in partition-id order.
    columns : Mapping[str, float | int | str]
        What to record for the round (``rounds.csv``) and for each attacker (``clients.csv``):
        snake_case names starting with :data:`ADVERSARY_COLUMN_PREFIX` (the knowledge level, the
        attack's parameters of the round).
    """

    attackers: tuple[int, ...]
    columns: Mapping[str, float | int | str]


class AdversaryStage(Protocol):
    """Rewrites the attackers' replies of a round (simulation only)."""

    def rewrite(
        self,
        server_round: int,
        replies: Sequence[Message],
        global_arrays: Mapping[str, np.ndarray],
        partition_of: Callable[[Message], int],
    ) -> AdversaryRound | None:
        """Replace the weights of the round's attacking replies, in place; None when the round has no attacker.

        Parameters
        ----------
        server_round : int
            The round.
        replies : Sequence[Message]
            The round's replies in partition-id order (error replies and malformed ones included:
            the stage leaves them alone).
        global_arrays : Mapping[str, np.ndarray]
            The global model the round started from, by array name.
        partition_of : Callable[[Message], int]
            The partition id of a reply's sender.
        """
        ...
