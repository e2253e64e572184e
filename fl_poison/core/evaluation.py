"""Centralized evaluation of the global model on the server's held-out test set."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fl_poison.core.allocator import retain_freed_memory
from fl_poison.core.data import LabeledTensors
from fl_poison.core.metrics import classification_metrics


@torch.no_grad()
def predict_probabilities(model: nn.Module, data: LabeledTensors, device: torch.device, batch_size: int) -> np.ndarray:
    """Softmax outputs of ``model`` for every input of ``data``, as a float64 array ``(N, C)``.

    Parameters
    ----------
    model : nn.Module
        The model to evaluate (put in evaluation mode).
    data : LabeledTensors
        The inputs (the labels are not read).
    device : torch.device
        Where to run the model.
    batch_size : int
        Inputs per forward pass.
    """
    retain_freed_memory()
    model.to(device)
    model.eval()
    outputs = []
    for start in range(0, len(data), batch_size):
        logits = model(data.x[start : start + batch_size].to(device))
        outputs.append(torch.softmax(logits.double(), dim=1).cpu())
    return torch.cat(outputs).numpy()


def evaluate_model(model: nn.Module, data: LabeledTensors, device: torch.device, batch_size: int) -> dict[str, float]:
    """Clean-task metrics (see :func:`fl_poison.core.metrics.classification_metrics`) of ``model`` on ``data``."""
    probabilities = predict_probabilities(model, data, device, batch_size)
    return classification_metrics(data.y.numpy(), probabilities)
