"""Scaling (model replacement): the attacker's update is boosted so that it survives averaging.

Paper: Bagdasaryan et al., 2020, "How To Backdoor Federated Learning" (AISTATS), §3 "model
replacement"; seed 001 §2.3.1. The attacker sends ``X = gamma (L - G) + G`` for its trained
weights L and the global weights G. With ``gamma = n / eta`` (clients per round over attackers
trained in the round, the default ``scale-factor=auto``) the attackers' models replace the
global one after FedAvg. An update transform: it follows any data-poisoning attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.base import TrainingJob
from clients.malicious import HonestCount
from clients.spec import AttackContext, AttackSpec
from clients.update_transforms import scale_update
from fl_poison.core.catalogue import UPDATE_TRANSFORM
from fl_poison.core.settings import Setting, auto_or, positive_number

SCALE_FACTOR = Setting(
    "scale-factor",
    "auto",
    "Scaling attack gamma in X = gamma (L - G) + G; auto = clients per round / attackers sampled this round.",
    auto_or(positive_number, "a number > 0"),
)


@dataclass(frozen=True)
class Scaling(HonestCount):
    """Model replacement X = γ(L − G) + G.

    Parameters
    ----------
    gamma : float
        The scale factor.
    """

    gamma: float

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The update ``trained - reference`` scaled by γ (see :class:`~clients.malicious.UpdateTransform`)."""
        return scale_update(trained, reference, self.gamma)


def scaling(context: AttackContext) -> Scaling:
    """The transform of an attacker: ``scale-factor``, or clients per round over the attackers sampled this round.

    Parameters
    ----------
    context : AttackContext
        The attacker, the round and the threat model (see :class:`~clients.spec.AttackContext`).
    """
    gamma = context.config[SCALE_FACTOR]
    if gamma is None:
        gamma = context.threat.per_round / context.threat.attackers_sampled(context.server_round)
    return Scaling(gamma)


ATTACK = AttackSpec(
    name="scaling",
    kind=UPDATE_TRANSFORM,
    summary="Model replacement: the update scaled by gamma = clients per round / attackers (Bagdasaryan et al., 2020).",
    settings=(SCALE_FACTOR,),
    transform=scaling,
)
