"""Local training of one client: mini-batch SGD/Adam with an optional FedProx proximal term.

FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks") adds
``mu / 2 * ||w - w_global||^2`` to the local loss, keeping local weights near the global model;
the server only sends ``mu`` and every client adds the term itself (:func:`proximal_term`).
Batches are drawn from in-memory tensors with a seeded generator, so that training is
reproducible on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from fl_poison.core.allocator import retain_freed_memory
from fl_poison.core.config import ConfigError, ExperimentConfig
from fl_poison.core.data import LabeledTensors


@dataclass(frozen=True)
class LocalTraining:
    """Hyper-parameters of local training.

    Parameters
    ----------
    epochs : int
        Passes over the local data per round.
    batch_size : int
        Mini-batch size.
    learning_rate : float
        Step size of the optimizer.
    optimizer : str
        ``sgd`` or ``adam``.
    momentum : float
        SGD momentum (ignored by Adam).
    weight_decay : float
        L2 weight decay of the optimizer.
    proximal_mu : float
        FedProx weight mu; 0 disables the proximal term.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0

    @classmethod
    def from_config(cls, config: ExperimentConfig, proximal_mu: float = 0.0) -> LocalTraining:
        """Local training settings of an experiment, with the mu the server sent."""
        return cls(
            epochs=config.local_epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            optimizer=config.optimizer,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            proximal_mu=proximal_mu,
        )


def resolve_device(preference: str) -> torch.device:
    """``cuda`` when asked for (or, for ``auto``, when this process sees a GPU), else ``cpu``."""
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: bad value 'cuda'; allowed: auto | cpu (this process sees no GPU)")
        return torch.device("cuda")
    if preference == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def proximal_term(model: nn.Module, global_parameters: list[torch.Tensor], mu: float) -> torch.Tensor:
    """``mu / 2 * sum ||w - w_global||^2`` over the trainable parameters of ``model``."""
    # a Tensor: the models trained here all have parameters (sum() of nothing would be the int 0)
    squared = cast(
        torch.Tensor,
        sum(
            torch.sum((weight - anchor) ** 2)
            for weight, anchor in zip(model.parameters(), global_parameters, strict=True)
        ),
    )
    return 0.5 * mu * squared


def make_optimizer(model: nn.Module, settings: LocalTraining) -> torch.optim.Optimizer:
    """The optimizer named by ``settings.optimizer``."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=settings.learning_rate,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )


def train_locally(
    model: nn.Module,
    data: LabeledTensors,
    settings: LocalTraining,
    device: torch.device,
    seed: int,
) -> float:
    """Train ``model`` in place on ``data``; return the mean training loss (without the proximal term).

    Parameters
    ----------
    model : nn.Module
        The model, holding the global weights on entry.
    data : LabeledTensors
        The (possibly poisoned) local samples.
    settings : LocalTraining
        Epochs, batch size, optimizer and FedProx mu.
    device : torch.device
        Where to train.
    seed : int
        Seeds the order of the mini-batches.

    The process keeps the memory the steps free for the next ones
    (:func:`~fl_poison.core.allocator.retain_freed_memory`; the weights do not change by it).
    """
    if len(data) == 0:
        return float("nan")
    retain_freed_memory()
    model.to(device)
    model.train()
    anchor = [parameter.detach().clone() for parameter in model.parameters()]
    optimizer = make_optimizer(model, settings)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = data.x.to(device), data.y.to(device)
    total_loss, total_samples = 0.0, 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(data), generator=generator).to(device)
        for start in range(0, len(data), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss = criterion(model(inputs[batch]), labels[batch])
            objective = loss
            if settings.proximal_mu > 0:
                objective = loss + proximal_term(model, anchor, settings.proximal_mu)
            objective.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(batch)
            total_samples += len(batch)
    return total_loss / total_samples
