"""MinSum: the mean of the benign updates pushed along a perturbation while its sum of squared distances stays benign.

Paper: Shejwalkar and Houmansadr, 2021, "Manipulating the Byzantine: Optimizing Model Poisoning
Attacks and Defenses for Federated Learning" (NDSS), §IV-B/C, eq. 3 and Algorithm 1: an
AGR-agnostic attack. With ∇_1 .. ∇_r the reference updates (the benign updates of the round when
omniscient, the paper's default; the attackers' own honest updates when colluding) and μ their
mean, every attacker sends

    m = μ + γ ∇p,   γ = argmax_γ  Σ_i ‖m − ∇_i‖² ≤ max_i Σ_j ‖∇_i − ∇_j‖²,

so that m's sum of squared distances to the benign updates is no larger than that of some benign
update (the paper's bound; the authors' code compares with the smallest such sum instead, a
stricter bound). ∇p is ``minmax-perturbation``; the search for γ and the steps are in
:mod:`clients.agr_agnostic`; γ is recorded as ``gamma``. Since Σ_i (μ − ∇_i) = 0 the constraint
reads Σ_i ‖μ − ∇_i‖² + r γ² ‖∇p‖² ≤ bound: γ* has a closed form, which the tests check against.
"""

from __future__ import annotations

import torch

from clients.adversary import ATTACK_KNOWLEDGE, COLLUDING, OMNISCIENT, AdversaryContext
from clients.agr_agnostic import MINMAX_PERTURBATION, AgrAgnosticAttack
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING


class MinSumConstraint:
    """Σ_i ‖m − ∇_i‖² ≤ max_i Σ_j ‖∇_i − ∇_j‖²."""

    def limit(self, pairwise: torch.Tensor) -> float:
        """The largest sum of squared distances of one reference update to the others (see :class:`~clients.agr_agnostic.Constraint`)."""
        return float(pairwise.sum(dim=1).max())

    def measure(self, squared: torch.Tensor) -> float:
        """The sum of squared distances of m to the reference updates (see :class:`~clients.agr_agnostic.Constraint`)."""
        return float(squared.sum())


def minsum(context: AdversaryContext) -> AgrAgnosticAttack:
    """MinSum with the run's ``minmax-perturbation``.

    Parameters
    ----------
    context : AdversaryContext
        The run's settings (see :class:`~clients.adversary.AdversaryContext`).
    """
    return AgrAgnosticAttack(MinSumConstraint(), context.config[MINMAX_PERTURBATION])


ATTACK = AttackSpec(
    name="minsum",
    kind=MODEL_POISONING,
    summary="Mean plus gamma times a perturbation, gamma as large as the benign sums of squared distances allow (Shejwalkar & Houmansadr, 2021).",
    settings=(MINMAX_PERTURBATION, ATTACK_KNOWLEDGE),
    adversary=minsum,
    knowledge=(OMNISCIENT, COLLUDING),
)
