"""ADA: the Attacking-Distance-aware Attack (Sun et al., seed 004 §IV), a semi-targeted attack.

The attacker is given a source class c_S and picks the target class that is cheapest to push the
source class into, then label-flips c_S → c* at injection rate α (see
:func:`clients.label_flipping.flip_source_to_target`).

- **Full knowledge** (eqs. 9–11): with the current global model, the attacker computes the mean
  penultimate feature vector μ_c of its local samples of every class c and takes
  c* = argmin_{c ≠ c_S} ‖μ_{c_S} − μ_c‖₂ (classes it holds no samples of are skipped).
- **Partial knowledge — FLAME** (Algorithm 2, eqs. 12–13): for every c ≠ c_S the attacker
  labels all its source-class samples c, computes J_c = Σ_x CE(f(x), 1_c) and the gradient of J_c
  with respect to the weights W of the last linear layer, and takes c* = argmin_c ‖∇_W J_c‖₂:
  a small last-layer update means the source class already lies close to c in feature space.

The paper mounts ADA once the global model has converged (its validation loss has not decreased
for 10 rounds); :func:`global_model_converged` tracks the global model's loss on the attacker's
own data in Flower's per-client ``context.state``.
"""

from __future__ import annotations

import math

import torch
from flwr.app import MetricRecord, RecordDict
from torch import nn

from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier

CONVERGENCE_RECORD = "ada-convergence"


@torch.no_grad()
def class_feature_means(model: SplitClassifier, data: LabeledTensors, device: torch.device) -> dict[int, torch.Tensor]:
    """Mean penultimate feature vector of every class present in ``data`` (float64, on the CPU)."""
    model.to(device).eval()
    features = model.features(data.x.to(device)).double().cpu()
    return {int(c): features[data.y == c].mean(dim=0) for c in torch.unique(data.y)}


def attacking_distances_full(model: SplitClassifier, data: LabeledTensors, source: int, device: torch.device) -> dict[int, float]:
    """‖μ_source − μ_c‖₂ for every class c ≠ source present in ``data`` (eq. 10)."""
    means = class_feature_means(model, data, device)
    if source not in means:
        return {}
    return {c: float(torch.linalg.norm(means[source] - mean)) for c, mean in means.items() if c != source}


def attacking_distances_flame(
    model: SplitClassifier, data: LabeledTensors, source: int, num_classes: int, device: torch.device
) -> dict[int, float]:
    """‖∇_W Σ_{x in source} CE(f(x), 1_c)‖₂ for every class c ≠ source (FLAME, eqs. 12–13)."""
    source_inputs = data.x[data.y == source].to(device)
    if len(source_inputs) == 0:
        return {}
    model.to(device).eval()
    weight = model.classifier.weight
    criterion = nn.CrossEntropyLoss(reduction="sum")
    distances = {}
    for candidate in range(num_classes):
        if candidate == source:
            continue
        labels = torch.full((len(source_inputs),), candidate, dtype=torch.long, device=device)
        loss = criterion(model(source_inputs), labels)
        (gradient,) = torch.autograd.grad(loss, weight)
        distances[candidate] = float(torch.linalg.norm(gradient.double()))
    return distances


def choose_target(distances: dict[int, float]) -> int | None:
    """The class with the smallest attacking distance (lowest class index on ties); None when empty."""
    if not distances:
        return None
    return min(sorted(distances), key=lambda c: distances[c])


@torch.no_grad()
def loss_on(model: nn.Module, data: LabeledTensors, device: torch.device) -> float:
    """Mean cross-entropy of ``model`` on ``data``."""
    model.to(device).eval()
    logits = model(data.x.to(device))
    return float(nn.functional.cross_entropy(logits, data.y.to(device)))


def global_model_converged(state: RecordDict, server_round: int, loss: float, patience: int) -> bool:
    """Record the global model's ``loss`` on own data; True once it has not decreased for ``patience`` rounds.

    Parameters
    ----------
    state : RecordDict
        The client's ``context.state`` (kept by Flower between rounds).
    server_round : int
        The current round.
    loss : float
        Loss of this round's global model on the attacker's data.
    patience : int
        Rounds without a new minimum after which the model counts as converged.
    """
    record = state.get(CONVERGENCE_RECORD)
    best_loss = float(record["best_loss"]) if record is not None else math.inf
    best_round = int(record["best_round"]) if record is not None else server_round
    if loss < best_loss:
        best_loss, best_round = loss, server_round
    state[CONVERGENCE_RECORD] = MetricRecord({"best_loss": best_loss, "best_round": best_round})
    return server_round - best_round >= patience
