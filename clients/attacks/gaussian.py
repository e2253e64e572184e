"""Gaussian noise: the attacker sends an update drawn from N(0, σ²) on every coordinate.

Paper: Peva Blanchard, El Mahdi El Mhamdi, Rachid Guerraoui and Julien Stainer, 2017, "Machine
Learning with Adversaries: Byzantine Tolerant Gradient Descent" (NeurIPS), its experiments (the "Gaussian
Byzantine workers" of the Krum experiments, which send Gaussian vectors in place of gradients).
With the global weights G the attacker sends

    X = G + ξ,  ξ_j ~ N(0, σ²) independently for every float coordinate j,

whatever it trained. ``gaussian-std`` = σ defaults to 1, as ByzFL's ``Gaussian`` (μ = 0,
σ = 1) and FLPoison's ``Gaussian`` (noise_std = 1); the Krum paper's workers use a much larger σ
on gradients. The noise is drawn (float64, then rounded once to each tensor's dtype) from a
``torch.Generator`` seeded with the client's seed of the round (the run's seed, the round and the
partition id), tensor by tensor in the model's state order, so a run is reproducible.

An update transform: it runs in the ClientApp and needs nothing but the global model (knowledge
``own``), so it works on real SuperNodes too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.base import TrainingJob
from clients.malicious import HonestCount
from clients.spec import AttackContext, AttackSpec
from fl_poison.core.catalogue import UPDATE_TRANSFORM
from fl_poison.core.settings import Setting, positive_number

GAUSSIAN_STD = Setting(
    "gaussian-std",
    1.0,
    "Gaussian attack: standard deviation of the N(0, std^2) update the attacker sends on every coordinate.",
    positive_number,
)


def gaussian_update(
    reference: dict[str, torch.Tensor], std: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``reference + ξ`` with ``ξ ~ N(0, std²)`` per coordinate, drawn in float64 tensor by tensor in ``reference``'s order.

    Parameters
    ----------
    reference : dict[str, torch.Tensor]
        The global model's float state.
    std : float
        σ of the noise.
    generator : torch.Generator
        The source of the draws (CPU).
    """
    sent = {}
    for name, tensor in reference.items():
        noise = torch.randn(tuple(tensor.shape), generator=generator, dtype=torch.float64) * std
        sent[name] = (tensor.detach().cpu().double() + noise).to(device=tensor.device, dtype=tensor.dtype)
    return sent


@dataclass(frozen=True)
class GaussianNoise(HonestCount):
    """Send ``G + ξ``, ``ξ ~ N(0, std²)`` per coordinate.

    Parameters
    ----------
    std : float
        σ of the noise (> 0).
    """

    std: float

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The global weights plus Gaussian noise seeded by ``job.seed`` (see :class:`~clients.malicious.UpdateTransform`).

        Parameters
        ----------
        job : TrainingJob
            The round's local work (its ``seed`` seeds the draws).
        trained : dict[str, torch.Tensor]
            The attacker's float state after training (unused: the update is pure noise).
        reference : dict[str, torch.Tensor]
            The global model's float state.
        """
        return gaussian_update(reference, self.std, torch.Generator().manual_seed(job.seed))


def gaussian(context: AttackContext) -> GaussianNoise:
    """The transform of an attacker: ``gaussian-std``.

    Parameters
    ----------
    context : AttackContext
        The attacker and the round (see :class:`~clients.spec.AttackContext`).
    """
    return GaussianNoise(context.config[GAUSSIAN_STD])


ATTACK = AttackSpec(
    name="gaussian",
    kind=UPDATE_TRANSFORM,
    summary="Gaussian noise: an N(0, std^2) update on every coordinate (Blanchard et al., 2017).",
    settings=(GAUSSIAN_STD,),
    transform=gaussian,
)
