"""Mimic: every attacker sends the update of one chosen benign client.

Paper: Sai Praneeth Karimireddy, Lie He and Martin Jaggi, 2022, "Byzantine-Robust Learning on
Heterogeneous Datasets via Bucketing" (ICLR), the "mimic" attack. On heterogeneous data, robust
rules discard the honest clients that look unusual; by all copying one honest client i*, the
attackers over-represent it and push the others out, without sending anything a rule can flag
(the copies are genuine updates). The paper picks i* as the worker along which the honest updates
vary most: in a warm-up phase it estimates the top principal direction z of the centred honest
updates and takes i* = argmax_i ⟨z, x_i − μ⟩ over that phase, then keeps it.

Steps per round (``omniscient`` only: the attackers must see the benign updates):

1. the benign updates x_1 .. x_b of the round and their mean μ;
2. i* = ``mimic-target`` when that partition is among the round's benign clients; otherwise
   (and for ``auto``) the paper's choice computed on this round alone: the top eigenvector u of
   the Gram matrix G = C Cᵀ of the centred updates C = X − μ (the projections C z on the top
   principal direction z of C are √λ · u), i* = argmax_i |u_i| (the lowest such index on ties);
3. every attacker sends x_{i*}; ``adversary_target`` records i*'s partition id (−1 in a round
   without a benign update, when the attackers send their own honest updates).

Choosing i* per round rather than once after a warm-up keeps the attack meaningful when the
clients of a round are sampled; with ``mimic-target`` set, the same client is mimicked whenever it
is sampled. ByzFL's ``Mimic(epsilon)`` and FLPoison copy a fixed worker index (default 0).

A model-poisoning attack: the attackers train honestly in the ClientApp and the server-side
adversary stage (simulation only) replaces their updates (:mod:`clients.adversary_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.adversary import OMNISCIENT, AdversaryContext, AdversaryView, Forged
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError, Setting, auto_or, integer

MIMIC_TARGET = Setting(
    "mimic-target",
    "auto",
    "The partition id Mimic's attackers copy when it is sampled; auto (or when it is not) = the benign client "
    "of the round farthest along the top principal direction of the benign updates.",
    auto_or(integer(0), "a partition id (integer >= 0)"),
)
NO_TARGET = -1


def most_variant_row(rows: torch.Tensor) -> int:
    """The row farthest along the top principal direction of the centred ``rows`` (ties: the lowest index).

    Parameters
    ----------
    rows : torch.Tensor
        ``(b, d)`` float64, ``b >= 1``.
    """
    centred = rows - rows.mean(dim=0)
    gram = centred @ centred.T
    _, vectors = torch.linalg.eigh(gram)  # eigenvalues in ascending order
    return int(torch.argmax(vectors[:, -1].abs()))


@dataclass(frozen=True)
class Mimic:
    """Forges copies of one benign client's update for every attacker.

    Parameters
    ----------
    target : int | None
        The partition id to copy when it is among the round's benign clients; None for the
        per-round choice of :func:`most_variant_row`.
    """

    target: int | None

    def forge(self, view: AdversaryView) -> Forged:
        """The attackers' updates (see :class:`~clients.adversary.Adversary`).

        Parameters
        ----------
        view : AdversaryView
            The round with its benign updates (``omniscient``).
        """
        benign = view.benign
        if benign is None or benign.shape[0] == 0:
            return Forged(view.own.clone(), {"target": NO_TARGET})
        if self.target is not None and self.target in view.benign_ids:
            row = view.benign_ids.index(self.target)
        else:
            row = most_variant_row(benign)
        target = view.benign_ids[row] if view.benign_ids else row  # a hand-built view without ids: the row
        return Forged(benign[row].expand(view.num_attackers, -1).clone(), {"target": target})


def check_target(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """Refuse a ``mimic-target`` that is no partition of the run (one line naming it).

    Parameters
    ----------
    config : ExperimentConfig
        The parsed settings.
    catalogue : Catalogue
        The registered algorithms (unused).
    """
    target = config[MIMIC_TARGET]
    if target is not None and target >= config.num_clients:
        raise ConfigError.bad_value(
            MIMIC_TARGET.key, target, f"auto | a partition id in 0 .. {config.num_clients - 1} (num-clients - 1)"
        )


def mimic(context: AdversaryContext) -> Mimic:
    """Mimic with ``mimic-target`` (None for ``auto``).

    Parameters
    ----------
    context : AdversaryContext
        The run's settings and threat model.
    """
    return Mimic(context.config[MIMIC_TARGET])


ATTACK = AttackSpec(
    name="mimic",
    kind=MODEL_POISONING,
    summary="Mimic: every attacker copies one benign client's update (Karimireddy, He and Jaggi, 2022).",
    settings=(MIMIC_TARGET,),
    check=check_target,
    adversary=mimic,
    knowledge=(OMNISCIENT,),
)
