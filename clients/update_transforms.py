"""Arithmetic on a malicious client's update ``L - G`` (local minus global weights).

Shared by the update-transform attacks :mod:`clients.attacks.scaling` (``X = gamma (L - G) + G``)
and :mod:`clients.attacks.train_and_scale` (``X = G + (L - G) * Q / ||L - G||``). Everything
works on float state dicts and measures norms in float64 over every float tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fl_poison.core.weights import update_norm


def update_norm_of(local: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of ``local - reference`` over all shared float tensors, in float64.

    The server's :func:`fl_poison.core.weights.update_norm` on CPU tensors, so an attacker measures its
    update exactly as the server's forensics will.

    Parameters
    ----------
    local : Mapping[str, torch.Tensor]
        The attacker's float state.
    reference : Mapping[str, torch.Tensor]
        The global model's float state.
    """
    return update_norm(
        {name: tensor.detach().cpu().numpy() for name, tensor in local.items()},
        {name: tensor.detach().cpu().numpy() for name, tensor in reference.items()},
    )


def scale_update(
    local: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], gamma: float
) -> dict[str, torch.Tensor]:
    """``reference + gamma * (local - reference)`` for every tensor (computed in float64, cast back).

    Parameters
    ----------
    local : Mapping[str, torch.Tensor]
        The attacker's float state.
    reference : Mapping[str, torch.Tensor]
        The global model's float state.
    gamma : float
        The scale factor of the update.
    """
    return {
        name: (reference[name].double() + gamma * (local[name].double() - reference[name].double())).to(
            local[name].dtype
        )
        for name in reference
    }


def scale_to_norm(
    local: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], bound: float
) -> dict[str, torch.Tensor]:
    """The update ``local - reference`` rescaled to L2 norm ``bound`` (a zero update stays zero).

    Parameters
    ----------
    local : Mapping[str, torch.Tensor]
        The attacker's float state.
    reference : Mapping[str, torch.Tensor]
        The global model's float state.
    bound : float
        The norm of the update to send.
    """
    norm = update_norm_of(local, reference)
    if norm == 0.0:
        return {name: local[name].clone() for name in reference}
    return scale_update(local, reference, bound / norm)
