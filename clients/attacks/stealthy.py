"""Stealthy targeted model poisoning: explicit boosting and alternating minimization with a stealth term.

Paper: Bhagoji, Chakraborty, Mittal and Calo, 2019, "Analyzing Federated Learning through an
Adversarial Lens" (ICML), §3.1 (targeted model poisoning, explicit boosting) and §4 (stealth
against accuracy checks and weight-update statistics; alternating minimization); seed 002 "A
stealthy backdoor attack". The attacker wants a set of its own examples classified as a target
class while the global model stays accurate and its own update looks like a benign one.

Knowledge: ``own`` (its data, the global model and its own honest update), so it runs inside the
ClientApp and works unchanged on real SuperNodes. Steps of an attacker in round t, from the
global weights w_G:

1. Malicious objective: its examples of ``source-class`` relabelled ``target-class`` (the targeted
   convention of label-flip and ADA; the paper's auxiliary samples {x_i, τ_i}). Its other samples
   D_m are the data of the stealth objective.
2. Benign estimate δ̄_ben: it trains honestly on all its clean data from w_G (what it would send
   were it honest; the paper's estimate from its own benign training), w_ben = w_G + δ̄_ben.
3. Alternating minimization, w ← w_G; for each block i = 1 .. B:

   a. one step on the malicious objective CE({x_i, τ}; w) over all malicious examples at once,
      w → v; explicit boosting by λ (``stealthy-boost``): w ← w + λ (v − w);
   b. ``stealthy-benign-steps`` mini-batch steps on the stealth objective
      CE(D_m batch; w) + (ρ/2) ‖δ − δ̄_ben‖², with δ = w − w_G and ρ = ``stealthy-rho``.

   B = ⌈local-epochs · ⌈|D_m| / batch-size⌉ / stealthy-benign-steps⌉ (at least 1): the stealth
   steps make ``local-epochs`` passes over D_m.
4. It sends δ = w − w_G and its true example count. With SGD without momentum δ is the sum of its
   stealth steps plus λ times the sum of its malicious steps.

Where the paper left a choice, and what was chosen:

- The order within a block follows the paper's text (the adversarial objective first, boosted,
  then the stealth objective from the boosted weights); the authors' code
  (inspire-group/ModelPoisoning, ``alternate_train``) takes the stealth steps first. The ratio of
  10 stealth steps per malicious step and ρ = 1e-4 are the values of the authors' command for
  the paper's results (``--ls=10 --rho=1e-4``).
- The stealth term is (ρ/2)‖δ − δ̄_ben‖², the authors' code (ρ times TensorFlow's ``l2_loss``,
  half the squared norm), for which ρ = 1e-4 was set; the paper writes ρ‖δ − δ̄_ben‖₂.
- λ: the paper boosts by λ = 1/α_m, the inverse of the attacker's weight in the average (10 for
  its one attacker among 10 agents with equal data). ``stealthy-boost=auto`` is clients per
  round over attackers sampled in the round (as scaling's ``auto``), which is the paper's λ for
  one attacker and equal shards; the authors' command additionally boosted and constrained only
  the weight matrices (``wt_o``), here every trainable parameter is.
- Both objectives use the run's optimizer and learning rate, each with its own optimizer state
  (as the authors' two TensorFlow optimizers); the attacker trains ``local-epochs`` like an
  honest client (the authors' command gave it 10 epochs against the others' 5). The FedProx
  term is part of the honest estimate only.
- The attack examples are taken out of D_m: kept there with their true labels the stealth
  objective would undo the malicious one (in the paper they are separate auxiliary samples).
- An attacker without source-class samples has nothing to attack and trains honestly.

Metrics: as label-flip, ``mta`` outside the source class, ``ts_ata`` (share of source-class test
samples classified as the target: the attack's target accuracy) and ``max_ata``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from clients.base import ClientUpdate, TrainingJob
from clients.benign import BenignClient
from clients.label_flipping import ALL_CLASSES
from clients.spec import AttackContext, AttackSpec
from clients.targeting import SOURCE_CLASS, TARGET_CLASS, check_source_and_target_classes, source_target_evaluation
from fl_poison.core.catalogue import CLIENT_BEHAVIOUR, Catalogue
from fl_poison.core.config import NO_ATTACK, ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.settings import ConfigError, Setting, auto_or, integer, non_negative_number, positive_number
from fl_poison.core.training import LocalTraining, make_optimizer, train_locally

STEALTHY_BOOST = Setting(
    "stealthy-boost",
    "auto",
    "Stealthy model poisoning's explicit boosting lambda of the malicious steps; auto = clients per round / attackers sampled this round.",
    auto_or(positive_number, "a number > 0"),
)
STEALTHY_RHO = Setting(
    "stealthy-rho",
    1e-4,
    "Weight rho of the stealth term (rho/2)||delta - delta_ben||^2 of stealthy model poisoning (0 = no stealth term).",
    non_negative_number,
)
STEALTHY_BENIGN_STEPS = Setting(
    "stealthy-benign-steps",
    10,
    "Mini-batch steps on the stealth objective (clean loss + distance term) per boosted malicious step.",
    integer(1),
)


def malicious_examples(data: LabeledTensors, source: int, target: int) -> LabeledTensors:
    """The attacker's samples of class ``source``, every one labelled ``target``.

    Parameters
    ----------
    data : LabeledTensors
        The attacker's clean data.
    source : int
        The class whose samples the attack wants classified as ``target``.
    target : int
        The target class.
    """
    rows = data.y == source
    return LabeledTensors(data.x[rows], torch.full_like(data.y[rows], target))


def stealth_data(data: LabeledTensors, source: int) -> LabeledTensors:
    """The attacker's clean samples outside class ``source``: the data of the stealth objective.

    Parameters
    ----------
    data : LabeledTensors
        The attacker's clean data.
    source : int
        The attacked class (its samples are the malicious examples).
    """
    rows = data.y != source
    return LabeledTensors(data.x[rows], data.y[rows])


def stealth_term(model: nn.Module, benign_weights: list[torch.Tensor], rho: float) -> torch.Tensor:
    """(ρ/2) ‖δ − δ̄_ben‖² = (ρ/2) Σ ‖w − w_ben‖² over the trainable parameters of ``model``.

    δ − δ̄_ben = (w − w_G) − (w_ben − w_G) = w − w_ben, so the global weights drop out.

    Parameters
    ----------
    model : nn.Module
        The attacker's model, holding w.
    benign_weights : list[torch.Tensor]
        w_ben = w_G + δ̄_ben, in the order of ``model.parameters()``.
    rho : float
        The weight ρ of the term.
    """
    squared = torch.zeros((), device=benign_weights[0].device)
    for weight, benign in zip(model.parameters(), benign_weights, strict=True):
        squared = squared + torch.sum((weight - benign) ** 2)
    return 0.5 * rho * squared


def boosted_malicious_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, examples: LabeledTensors, boost: float
) -> float:
    """One optimizer step on CE(``examples``; w), its displacement then multiplied by ``boost``; returns the CE.

    Parameters
    ----------
    model : nn.Module
        The attacker's model (its parameters are updated in place).
    optimizer : torch.optim.Optimizer
        The optimizer of the malicious objective, over ``model``'s parameters.
    examples : LabeledTensors
        The malicious examples (relabelled target), on the model's device; one full batch.
    boost : float
        λ: the parameters end at w + λ (v − w), v the parameters after the step.
    """
    start = [parameter.detach().clone() for parameter in model.parameters()]
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(examples.x), examples.y)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for parameter, before in zip(model.parameters(), start, strict=True):
            parameter.copy_(before + boost * (parameter - before))
    return float(loss.detach())


def stealth_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: LabeledTensors,
    benign_weights: list[torch.Tensor],
    rho: float,
) -> float:
    """One optimizer step on CE(``batch``; w) + (ρ/2)‖δ − δ̄_ben‖²; returns the CE alone.

    Parameters
    ----------
    model : nn.Module
        The attacker's model (its parameters are updated in place).
    optimizer : torch.optim.Optimizer
        The optimizer of the stealth objective, over ``model``'s parameters.
    batch : LabeledTensors
        A mini-batch of clean data outside the source class, on the model's device.
    benign_weights : list[torch.Tensor]
        w_ben = w_G + δ̄_ben, in the order of ``model.parameters()``.
    rho : float
        The weight ρ of the stealth term.
    """
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(batch.x), batch.y)
    (loss + stealth_term(model, benign_weights, rho)).backward()
    optimizer.step()
    return float(loss.detach())


def benign_estimate(job: TrainingJob) -> list[torch.Tensor]:
    """w_ben = w_G + δ̄_ben: the parameters of a copy of the global model trained honestly on all of ``job``'s data.

    Parameters
    ----------
    job : TrainingJob
        The round's local work; ``job.model`` holds the global weights and is not changed.
    """
    honest = copy.deepcopy(job.model)
    train_locally(honest, job.data, job.training, job.device, job.seed)
    return [parameter.detach().clone() for parameter in honest.parameters()]


def stealth_batches(size: int, training: LocalTraining, seed: int) -> list[torch.Tensor]:
    """Row indices of the stealth objective's mini-batches: ``training.epochs`` seeded passes over ``size`` rows.

    Parameters
    ----------
    size : int
        Number of samples of the stealth objective's data.
    training : LocalTraining
        Epochs and batch size.
    seed : int
        Seeds the order of the rows.
    """
    generator = torch.Generator().manual_seed(seed)
    batches: list[torch.Tensor] = []
    for _ in range(training.epochs):
        order = torch.randperm(size, generator=generator)
        batches.extend(order[start : start + training.batch_size] for start in range(0, size, training.batch_size))
    return batches


@dataclass(frozen=True)
class StealthyClient:
    """An attacker of stealthy targeted model poisoning (see the module's steps).

    Parameters
    ----------
    source : int
        The class whose samples the attack wants classified as ``target``.
    target : int
        The target class.
    boost : float
        λ, the explicit boosting of the malicious steps.
    rho : float
        ρ, the weight of the stealth term.
    benign_steps : int
        Stealth-objective steps per boosted malicious step.
    """

    source: int
    target: int
    boost: float
    rho: float
    benign_steps: int

    def run(self, job: TrainingJob) -> ClientUpdate:
        """Alternate boosted malicious steps and stealth steps from the global model; honest training without source samples."""
        examples = malicious_examples(job.data, self.source, self.target)
        if len(examples) == 0:
            return BenignClient(malicious=True).run(job)
        benign_weights = [weight.to(job.device) for weight in benign_estimate(job)]
        clean = stealth_data(job.data, self.source)
        model = job.model.to(device=job.device)
        model.train()
        examples = LabeledTensors(examples.x.to(job.device), examples.y.to(job.device))
        inputs, labels = clean.x.to(job.device), clean.y.to(job.device)
        malicious_optimizer = make_optimizer(model, job.training)
        stealth_optimizer = make_optimizer(model, job.training)
        batches = stealth_batches(len(clean), job.training, job.seed)
        malicious_losses: list[float] = []
        stealth_losses: list[float] = []
        for block in range(max(1, math.ceil(len(batches) / self.benign_steps))):
            malicious_losses.append(boosted_malicious_step(model, malicious_optimizer, examples, self.boost))
            for rows in batches[block * self.benign_steps : (block + 1) * self.benign_steps]:
                batch = LabeledTensors(inputs[rows.to(job.device)], labels[rows.to(job.device)])
                stealth_losses.append(stealth_step(model, stealth_optimizer, batch, benign_weights, self.rho))
        reported = stealth_losses or malicious_losses
        return ClientUpdate(
            job.model,
            sum(reported) / len(reported),
            len(job.data),
            malicious=True,
            attacked=True,
            attack_target=self.target,
        )


def stealthy_client(context: AttackContext) -> StealthyClient:
    """The behaviour of an attacker: λ from ``stealthy-boost`` or clients per round over attackers sampled this round.

    Parameters
    ----------
    context : AttackContext
        The attacker, the round and the threat model (see :class:`~clients.spec.AttackContext`).
    """
    config = context.config
    boost = config[STEALTHY_BOOST]
    if boost is None:
        boost = context.threat.per_round / context.threat.attackers_sampled(context.server_round)
    return StealthyClient(
        source=config[SOURCE_CLASS],
        target=config[TARGET_CLASS],
        boost=boost,
        rho=config[STEALTHY_RHO],
        benign_steps=config[STEALTHY_BENIGN_STEPS],
    )


def check_settings(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """One source class other than the target, and no update attack on top (one-line :class:`ConfigError`).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered algorithms (unused).
    """
    if config[SOURCE_CLASS] == ALL_CLASSES:
        raise ConfigError.bad_value(SOURCE_CLASS.key, "all", "a class index for stealthy")
    if config[SOURCE_CLASS] == config[TARGET_CLASS]:
        raise ConfigError.bad_value(TARGET_CLASS.key, config[TARGET_CLASS], "a class other than source-class")
    if config.resolved_update_attack != NO_ATTACK:
        raise ConfigError.bad_value(
            "update-attack",
            config.resolved_update_attack,
            "none | auto with attack=stealthy (it boosts its own update)",
        )


ATTACK = AttackSpec(
    name="stealthy",
    kind=CLIENT_BEHAVIOUR,
    summary="Targeted model poisoning by alternating boosted malicious steps and stealth steps near the benign update (Bhagoji et al., 2019).",
    settings=(SOURCE_CLASS, TARGET_CLASS, STEALTHY_BOOST, STEALTHY_RHO, STEALTHY_BENIGN_STEPS),
    check=check_settings,
    behaviour=stealthy_client,
    evaluation=source_target_evaluation,
    check_classes=check_source_and_target_classes,
)
