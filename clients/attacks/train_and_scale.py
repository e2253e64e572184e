"""Train-and-scale: the attacker's update is rescaled to the largest norm a norm bound accepts.

Paper: Bagdasaryan et al., 2020, "How To Backdoor Federated Learning" (AISTATS), §4 "train and
scale" against norm-bounding defenses; seed 004 eq. 5. The attacker sends
``X = G + (L - G) * Q / ||L - G||``. With ``norm-bound=auto``, Q is the norm of an honest update
the attacker trains itself from the same global model on its clean data (its estimate of the
mean honest norm), so the poisoned update is as long as an honest one. ADA's default update
transform.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from clients.base import TrainingJob
from clients.malicious import HonestCount
from clients.spec import AttackContext, AttackSpec
from clients.update_transforms import scale_to_norm, update_norm_of
from fl_poison.core.catalogue import UPDATE_TRANSFORM
from fl_poison.core.settings import Setting, auto_or, positive_number
from fl_poison.core.training import train_locally
from fl_poison.core.weights import float_state

NORM_BOUND = Setting(
    "norm-bound",
    "auto",
    "Train-and-scale target norm Q; auto = the mean norm of honest updates the attacker computes itself.",
    auto_or(positive_number, "a number > 0"),
)


@dataclass(frozen=True)
class TrainAndScale(HonestCount):
    """Rescale the update to norm Q.

    Parameters
    ----------
    bound : float | None
        Q; None = the norm of an honest update the attacker trains itself (:func:`honest_norm`).
    """

    bound: float | None

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The update ``trained - reference`` rescaled to norm Q (see :class:`~clients.malicious.UpdateTransform`)."""
        return scale_to_norm(trained, reference, self.bound if self.bound is not None else honest_norm(job, reference))


def honest_norm(job: TrainingJob, reference: dict[str, torch.Tensor]) -> float:
    """The update norm an honest client would send: train a copy of the global model on the clean data.

    Parameters
    ----------
    job : TrainingJob
        The round's local work (its model, clean data, training settings and seed).
    reference : dict[str, torch.Tensor]
        The float state of the global model of the round.
    """
    honest = copy.deepcopy(job.model)
    honest.load_state_dict(reference, strict=False)
    train_locally(honest, job.data, job.training, job.device, job.seed)
    return update_norm_of(float_state(honest), reference)


def train_and_scale(context: AttackContext) -> TrainAndScale:
    """The transform of an attacker (see :class:`~clients.spec.AttackContext` for ``context``)."""
    return TrainAndScale(context.config[NORM_BOUND])


ATTACK = AttackSpec(
    name="train-and-scale",
    kind=UPDATE_TRANSFORM,
    summary="The update rescaled to norm-bound, by default an honest update's norm (Bagdasaryan et al., 2020).",
    settings=(NORM_BOUND,),
    transform=train_and_scale,
)
