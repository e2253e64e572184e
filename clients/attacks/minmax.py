"""MinMax: the mean of the benign updates pushed along a perturbation as far as the largest benign distance allows.

Paper: Shejwalkar and Houmansadr, 2021, "Manipulating the Byzantine: Optimizing Model Poisoning
Attacks and Defenses for Federated Learning" (NDSS), §IV-B/C, eq. 2 and Algorithm 1: an
AGR-agnostic attack (it assumes nothing of the aggregation rule). With ∇_1 .. ∇_r the reference
updates (the benign updates of the round when omniscient, the paper's default; the attackers'
own honest updates when colluding) and μ their mean, every attacker sends

    m = μ + γ ∇p,   γ = argmax_γ  max_i ‖m − ∇_i‖ ≤ max_{i,j} ‖∇_i − ∇_j‖,

so that m is no farther from any benign update than two benign updates are from each other.
∇p is ``minmax-perturbation`` (inverse unit vector by default, as in the authors' code; inverse
sign; inverse standard deviation). The search for γ (γ_init = 10, τ = 1e-5, never capped at
2γ_init) and the steps are in :mod:`clients.agr_agnostic`; γ is recorded as ``gamma``.
"""

from __future__ import annotations

import torch

from clients.adversary import ATTACK_KNOWLEDGE, COLLUDING, OMNISCIENT, AdversaryContext
from clients.agr_agnostic import MINMAX_PERTURBATION, AgrAgnosticAttack
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING


class MinMaxConstraint:
    """max_i ‖m − ∇_i‖² ≤ max_{i,j} ‖∇_i − ∇_j‖² (squared on both sides: the same set of γ)."""

    def limit(self, pairwise: torch.Tensor) -> float:
        """The largest squared distance between two reference updates (see :class:`~clients.agr_agnostic.Constraint`)."""
        return float(pairwise.max())

    def measure(self, squared: torch.Tensor) -> float:
        """The largest squared distance of m to a reference update (see :class:`~clients.agr_agnostic.Constraint`)."""
        return float(squared.max())


def minmax(context: AdversaryContext) -> AgrAgnosticAttack:
    """MinMax with the run's ``minmax-perturbation``.

    Parameters
    ----------
    context : AdversaryContext
        The run's settings (see :class:`~clients.adversary.AdversaryContext`).
    """
    return AgrAgnosticAttack(MinMaxConstraint(), context.config[MINMAX_PERTURBATION])


ATTACK = AttackSpec(
    name="minmax",
    kind=MODEL_POISONING,
    summary="Mean plus gamma times a perturbation, gamma as large as the largest benign distance allows (Shejwalkar & Houmansadr, 2021).",
    settings=(MINMAX_PERTURBATION, ATTACK_KNOWLEDGE),
    adversary=minmax,
    knowledge=(OMNISCIENT, COLLUDING),
)
