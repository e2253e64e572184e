"""Moving model weights between PyTorch and Flower records, and measuring updates.

Only floating-point tensors of a state dict are exchanged: BatchNorm's integer
``num_batches_tracked`` never enters averages, norms or distances (it would be averaged as
float64 and could dominate a norm). Updates ``w_client - w_global`` are flattened in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the floating-point entries of ``model``'s state dict, on the CPU."""
    return {
        name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items() if tensor.is_floating_point()
    }


def to_array_record(model: nn.Module) -> ArrayRecord:
    """An ArrayRecord of ``model``'s floating-point state."""
    return ArrayRecord(float_state(model))


def load_array_record(model: nn.Module, record: ArrayRecord) -> None:
    """Copy the arrays of ``record`` into ``model`` (integer buffers keep their local values).

    Raises
    ------
    KeyError
        If ``record`` lacks a floating-point tensor of the model, or has one the model lacks.
    """
    arrays = record.to_numpy_ndarrays()
    names = list(record.keys())
    expected = set(float_state(model))
    if set(names) != expected:
        missing = sorted(expected - set(names))
        extra = sorted(set(names) - expected)
        raise KeyError(f"weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    state = {name: torch.from_numpy(np.array(array, copy=True)) for name, array in zip(names, arrays, strict=True)}
    model.load_state_dict(state, strict=False)


def record_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The arrays of ``record`` by name."""
    return dict(zip(record.keys(), record.to_numpy_ndarrays(), strict=True))


def flat_update(client: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> np.ndarray:
    """``client - reference`` over the shared names, flattened in float64 (name order of ``reference``)."""
    if not reference:
        return np.zeros(0)
    return np.concatenate(
        [
            (np.asarray(client[name], dtype=np.float64) - np.asarray(reference[name], dtype=np.float64)).ravel()
            for name in reference
        ]
    )


def update_norm(client: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of the update ``client - reference``, computed in float64."""
    return float(np.linalg.norm(flat_update(client, reference)))
