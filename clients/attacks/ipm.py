"""Inner Product Manipulation (IPM): every attacker sends −ε times the mean of the reference updates.

Paper: Cong Xie, Oluwasanmi Koyejo and Indranil Gupta, 2020, "Fall of Empires: Breaking
Byzantine-tolerant SGD by Inner Product Manipulation" (UAI, PMLR 115), §4. With the correct
gradients v_1 .. v_k known to the attackers, each of them sends

    u = −ε · (1/k) Σ_i v_i,

which makes the inner product between the true mean and the aggregate negative: for a mean-like
rule as soon as ε is large enough, and for Krum or coordinate-wise median / trimmed mean with a
small ε (the attackers then sit close to the benign cluster and get selected).

Steps per round:

1. take the reference updates: the benign updates of the round (``omniscient``, the paper's
   setting) or the attackers' own honestly trained updates (``colluding``);
2. send u = −ε · mean(reference) from every attacker (``ipm-epsilon``, recorded as
   ``adversary_epsilon``).

The default ε = 0.1 is FLPoison's (the paper's small-ε regime, which evades distance-based rules
such as Krum); ByzFL's ``InnerProductManipulation`` defaults to τ = 2 (a large-ε regime against
mean-like rules). The lab applies the attack to model updates (trained weights − global weights)
rather than to single gradients, as FLPoison does.

A model-poisoning attack: the attackers train honestly in the ClientApp and the server-side
adversary stage (simulation only) replaces their updates (:mod:`clients.adversary_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.adversary import COLLUDING, OMNISCIENT, AdversaryContext, AdversaryView, Forged
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING
from fl_poison.core.settings import Setting, positive_number

IPM_EPSILON = Setting(
    "ipm-epsilon",
    0.1,
    "IPM's epsilon: every attacker sends -epsilon times the mean of the reference updates.",
    positive_number,
)


@dataclass(frozen=True)
class InnerProductManipulation:
    """Forges ``−ε · mean(reference updates)`` for every attacker.

    Parameters
    ----------
    epsilon : float
        The factor ε (> 0).
    """

    epsilon: float

    def forge(self, view: AdversaryView) -> Forged:
        """The attackers' updates (see :class:`~clients.adversary.Adversary`).

        Parameters
        ----------
        view : AdversaryView
            The round as the knowledge level shows it.
        """
        reference = view.reference_updates()
        if reference.shape[0] == 0:  # omniscient with no benign reply: the attackers' own updates
            reference = view.own
        forged = -self.epsilon * reference.mean(dim=0)
        return Forged(forged.expand(view.num_attackers, -1).clone(), {"epsilon": self.epsilon})


def ipm(context: AdversaryContext) -> InnerProductManipulation:
    """IPM with ``ipm-epsilon``.

    Parameters
    ----------
    context : AdversaryContext
        The run's settings and threat model.
    """
    return InnerProductManipulation(context.config[IPM_EPSILON])


ATTACK = AttackSpec(
    name="ipm",
    kind=MODEL_POISONING,
    summary="Inner Product Manipulation: -epsilon times the mean of the reference updates (Xie et al., 2020).",
    settings=(IPM_EPSILON,),
    adversary=ipm,
    knowledge=(OMNISCIENT, COLLUDING),
)
