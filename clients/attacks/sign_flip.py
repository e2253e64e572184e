"""Sign flipping: the attacker sends its honest update with the sign flipped (and optionally scaled).

Papers: Zeyuan Allen-Zhu, Faeze Ebrahimianghazani, Jerry Li and Dan Alistarh, 2021, "Byzantine-
Resilient Non-Convex Stochastic Gradient Descent" (ICLR), whose experiments' sign-flipping
attackers send the negated gradient; Liping Li, Wei Xu, Tianyi Chen, Georgios B. Giannakis and
Qing Ling, 2019, "RSA: Byzantine-Robust Stochastic Aggregation Methods for Distributed Learning
from Heterogeneous Datasets" (AAAI), whose sign-flipping attack multiplies the true value by a
negative constant. With the global weights G and the weights L the attacker trained honestly
(or on the poisoned data of ``attack``), it sends

    X = G − factor · (L − G),

i.e. the update −factor · (L − G). ``sign-flip-factor`` = 1 (the default) is the plain sign flip
of ByzFL's ``SignFlipping`` (which negates the mean of the vectors it is given; with the
attacker's own update alone, −(L − G)) and of FLPoison's ``SignFlipping``; a larger factor is
RSA's scaled variant.

An update transform: it runs in the ClientApp on the attacker's own update only (knowledge
``own``), so it works on real SuperNodes too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.base import TrainingJob
from clients.malicious import HonestCount
from clients.spec import AttackContext, AttackSpec
from clients.update_transforms import scale_update
from fl_poison.core.catalogue import UPDATE_TRANSFORM
from fl_poison.core.settings import Setting, positive_number

SIGN_FLIP_FACTOR = Setting(
    "sign-flip-factor",
    1.0,
    "Sign flipping: the attacker sends -factor times its honest update (1 = the plain sign flip).",
    positive_number,
)


@dataclass(frozen=True)
class SignFlip(HonestCount):
    """Send ``G − factor · (L − G)``.

    Parameters
    ----------
    factor : float
        The magnitude of the flipped update relative to the honest one (> 0).
    """

    factor: float

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The update ``trained - reference`` times ``-factor`` (see :class:`~clients.malicious.UpdateTransform`).

        Parameters
        ----------
        job : TrainingJob
            The round's local work (unused).
        trained : dict[str, torch.Tensor]
            The attacker's float state after training.
        reference : dict[str, torch.Tensor]
            The global model's float state.
        """
        return scale_update(trained, reference, -self.factor)


def sign_flip(context: AttackContext) -> SignFlip:
    """The transform of an attacker: ``sign-flip-factor``.

    Parameters
    ----------
    context : AttackContext
        The attacker and the round (see :class:`~clients.spec.AttackContext`).
    """
    return SignFlip(context.config[SIGN_FLIP_FACTOR])


ATTACK = AttackSpec(
    name="sign-flip",
    kind=UPDATE_TRANSFORM,
    summary="Sign flipping: -factor times the attacker's honest update (Allen-Zhu et al., 2021; Li et al., 2019).",
    settings=(SIGN_FLIP_FACTOR,),
    transform=sign_flip,
)
