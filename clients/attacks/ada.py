"""ADA, the Attacking-Distance-aware Attack: a semi-targeted label flip into the cheapest class.

Paper: Sun, Ochiai and Sakuma, 2022, "Semi-Targeted Model Poisoning Attack on Federated Learning
via Backward Error Analysis" (IJCNN; seed 004 §IV). The attacker is given a source class c_S
(``source-class``) and picks the target class that is cheapest to push the source class into,
then label-flips c_S → c* at injection rate α = ``poison-rate`` (see
:func:`clients.label_flipping.flip_source_to_target`). As in the paper its update is rescaled
to an honest norm: ``update-attack=auto`` means ``train-and-scale`` for ADA.

- **Full knowledge** (``ada-knowledge=full``, eqs. 9–11): with the current global model, the
  attacker computes the mean penultimate feature vector μ_c of its local samples of every class
  c and takes c* = argmin_{c ≠ c_S} ‖μ_{c_S} − μ_c‖₂ (classes it holds no samples of are skipped).
- **Partial knowledge — FLAME** (``ada-knowledge=partial``, Algorithm 2, eqs. 12–13): for every
  c ≠ c_S the attacker labels all its source-class samples c, computes J_c = Σ_x CE(f(x), 1_c)
  and the gradient of J_c with respect to the weights W of the last linear layer, and takes
  c* = argmin_c ‖∇_W J_c‖₂: a small last-layer update means the source class already lies close
  to c in feature space.

The paper mounts ADA once the global model has converged (its validation loss has not decreased
for 10 rounds); with ``ada-start=converged``, :func:`global_model_converged` tracks the global
model's loss on the attacker's own data in Flower's per-client ``context.state`` and the
attacker waits ``ada-patience`` rounds without a decrease.

Metrics: ``mta`` outside the source class, ``ts_ata`` for the target the attackers last
reported, and ``max_ata`` (seed 004 eqs. 3, 4, 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from flwr.app import MetricRecord, RecordDict
from torch import nn

from clients.base import TrainingJob
from clients.label_flipping import ALL_CLASSES, SourceTargetedEvaluation, flip_source_to_target
from clients.malicious import Poisoned
from clients.spec import AttackContext, AttackSpec
from clients.targeting import POISON_RATE, SOURCE_CLASS, check_source_class
from fl_poison.core.catalogue import DATA_POISONING, Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.settings import ConfigError, Setting, choice, integer

CONVERGENCE_RECORD = "ada-convergence"
ADA_KNOWLEDGE = Setting(
    "ada-knowledge",
    "full",
    "ADA target choice: full (latent class means) or partial (FLAME last-layer gradients).",
    choice("full", "partial"),
)
ADA_START = Setting(
    "ada-start",
    "round",
    "When ADA attacks: 'round' (from attack-start-round) or 'converged' (global loss on own data flat for ada-patience rounds).",
    choice("round", "converged"),
)
ADA_PATIENCE = Setting(
    "ada-patience",
    10,
    "Rounds without a decrease of the global model's loss on the attacker's data before ADA calls it converged.",
    integer(1),
)


@torch.no_grad()
def class_feature_means(model: SplitClassifier, data: LabeledTensors, device: torch.device) -> dict[int, torch.Tensor]:
    """Mean penultimate feature vector of every class present in ``data`` (float64, on the CPU).

    Parameters
    ----------
    model : SplitClassifier
        The global model of the round (a feature extractor and a last linear layer).
    data : LabeledTensors
        The attacker's clean data.
    device : torch.device
        Where to run the model.
    """
    model.to(device).eval()
    features = model.features(data.x.to(device)).double().cpu()
    return {int(c): features[data.y == c].mean(dim=0) for c in torch.unique(data.y)}


def attacking_distances_full(
    model: SplitClassifier, data: LabeledTensors, source: int, device: torch.device
) -> dict[int, float]:
    """‖μ_source − μ_c‖₂ for every class c ≠ source present in ``data`` (eq. 10); empty without source samples.

    Parameters
    ----------
    model : SplitClassifier
        The global model of the round (a feature extractor and a last linear layer).
    data : LabeledTensors
        The attacker's clean data.
    source : int
        The source class.
    device : torch.device
        Where to run the model.
    """
    means = class_feature_means(model, data, device)
    if source not in means:
        return {}
    return {c: float(torch.linalg.norm(means[source] - mean)) for c, mean in means.items() if c != source}


def attacking_distances_flame(
    model: SplitClassifier, data: LabeledTensors, source: int, num_classes: int, device: torch.device
) -> dict[int, float]:
    """‖∇_W Σ_{x in source} CE(f(x), 1_c)‖₂ for every class c ≠ source (FLAME, eqs. 12–13); empty without source samples.

    Parameters
    ----------
    model : SplitClassifier
        The global model of the round (a feature extractor and a last linear layer).
    data : LabeledTensors
        The attacker's clean data.
    source : int
        The source class.
    num_classes : int
        Number of classes (every class other than the source is a candidate).
    device : torch.device
        Where to run the model.
    """
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
    """The class with the smallest attacking distance (lowest class index on ties); None when empty.

    Parameters
    ----------
    distances : dict[int, float]
        Attacking distance of every candidate class.
    """
    if not distances:
        return None
    return min(sorted(distances), key=lambda c: distances[c])


@torch.no_grad()
def loss_on(model: nn.Module, data: LabeledTensors, device: torch.device) -> float:
    """Mean cross-entropy of ``model`` on ``data``.

    Parameters
    ----------
    model : nn.Module
        The global model of the round.
    data : LabeledTensors
        The attacker's clean data.
    device : torch.device
        Where to run the model.
    """
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
    record = state.metric_records.get(CONVERGENCE_RECORD)
    best_loss = float(cast(float, record["best_loss"])) if record is not None else math.inf
    best_round = int(cast(int, record["best_round"])) if record is not None else server_round
    if loss < best_loss:
        best_loss, best_round = loss, server_round
    state[CONVERGENCE_RECORD] = MetricRecord({"best_loss": best_loss, "best_round": best_round})
    return server_round - best_round >= patience


@dataclass(frozen=True)
class AdaPoison:
    """ADA's target choice followed by source→target flipping.

    Parameters
    ----------
    knowledge : str
        ``full`` (latent class means) or ``partial`` (FLAME).
    source : int
        The source class.
    rate : float
        Injection rate α.
    num_classes : int
        Number of classes.
    wait_for_convergence : bool
        Attack only once the global model has converged on the attacker's data.
    patience : int
        Rounds without a loss decrease that count as convergence.
    state : RecordDict
        The client's ``context.state`` (holds the convergence record).
    """

    knowledge: str
    source: int
    rate: float
    num_classes: int
    wait_for_convergence: bool
    patience: int
    state: RecordDict

    def poison(self, job: TrainingJob) -> Poisoned | None:
        """Flip source→c* with c* chosen on ``job``'s global model; None before convergence or without source samples."""
        if self.wait_for_convergence:
            loss = loss_on(job.model, job.data, job.device)
            if not global_model_converged(self.state, job.server_round, loss, self.patience):
                return None
        if self.knowledge == "full":
            distances = attacking_distances_full(job.model, job.data, self.source, job.device)
        else:
            distances = attacking_distances_flame(job.model, job.data, self.source, self.num_classes, job.device)
        target = choose_target(distances)
        if target is None:
            return None
        return Poisoned(flip_source_to_target(job.data, self.source, target, self.rate, job.seed), target)


def ada_poison(context: AttackContext) -> AdaPoison:
    """The poisoner of an attacker (see :class:`~clients.spec.AttackContext` for ``context``)."""
    config = context.config
    return AdaPoison(
        knowledge=config[ADA_KNOWLEDGE],
        source=config[SOURCE_CLASS],
        rate=config[POISON_RATE],
        num_classes=context.info.num_classes,
        wait_for_convergence=config[ADA_START] == "converged",
        patience=config[ADA_PATIENCE],
        state=context.state,
    )


def check_source_is_a_class(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """ADA needs one source class, not ``all`` (one-line :class:`ConfigError`).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered algorithms (unused).
    """
    if config[SOURCE_CLASS] == ALL_CLASSES:
        raise ConfigError.bad_value(SOURCE_CLASS.key, "all", "a class index for ada")


def evaluation(config: ExperimentConfig, test_set: LabeledTensors, num_classes: int) -> SourceTargetedEvaluation:
    """The server's metrics of the attack, for the target the attackers report.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    test_set : LabeledTensors
        The clean test set.
    num_classes : int
        Number of classes of the data.
    """
    return SourceTargetedEvaluation(test_set.y.numpy(), config[SOURCE_CLASS], None, num_classes)


ATTACK = AttackSpec(
    name="ada",
    kind=DATA_POISONING,
    summary="Semi-targeted: source-class flipped into the class at the smallest attacking distance (Sun et al., 2022).",
    settings=(SOURCE_CLASS, POISON_RATE, ADA_KNOWLEDGE, ADA_START, ADA_PATIENCE),
    check=check_source_is_a_class,
    default_update_attack="train-and-scale",
    poisoner=ada_poison,
    evaluation=evaluation,
    check_classes=check_source_class,
)
