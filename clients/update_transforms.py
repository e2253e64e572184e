"""Transforms of a malicious client's update ``L - G`` (local minus global weights).

- Scaling / model replacement (Bagdasaryan et al., 2020, "How To Backdoor Federated Learning";
  seed 001 §2.3.1): ``X = gamma (L - G) + G``; with gamma = n / eta (clients per round over
  attackers in the round) the attacker's model replaces the global one after averaging.
- Train-and-scale (same paper; seed 004 eq. 5): the update is rescaled to norm Q, the largest
  norm a norm-bounding defense would accept: ``X = G + (L - G) * Q / ||L - G||``.

Both work on float state dicts and measure norms in float64 over every float tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fl_poison.core.weights import update_norm


def update_norm_of(local: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of ``local - reference`` over all shared float tensors, in float64.

    The server's :func:`fl_poison.core.weights.update_norm` on CPU tensors, so an attacker measures its
    update exactly as the server's forensics will.
    """
    return update_norm(
        {name: tensor.detach().cpu().numpy() for name, tensor in local.items()},
        {name: tensor.detach().cpu().numpy() for name, tensor in reference.items()},
    )


def scale_update(local: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], gamma: float) -> dict[str, torch.Tensor]:
    """``reference + gamma * (local - reference)`` for every tensor (computed in float64, cast back)."""
    return {
        name: (reference[name].double() + gamma * (local[name].double() - reference[name].double())).to(local[name].dtype)
        for name in reference
    }


def scale_to_norm(local: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], bound: float) -> dict[str, torch.Tensor]:
    """The update ``local - reference`` rescaled to L2 norm ``bound`` (a zero update stays zero)."""
    norm = update_norm_of(local, reference)
    if norm == 0.0:
        return {name: local[name].clone() for name in reference}
    return scale_update(local, reference, bound / norm)
