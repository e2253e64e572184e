"""A malicious client: a data-poisoning step, local training, then an update transform.

Every attack of fl_poison is such a composition (DESIGN: "an attack is a composition of at most
two steps"): :class:`DataPoisoner` implementations turn the clean local data into the training set
of the attack, :class:`UpdateTransform` implementations rewrite the trained weights before they
are sent. :class:`NanClient` is the faulty client that sends NaN weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch
from flwr.app import RecordDict

from clients.ada import (
    attacking_distances_flame,
    attacking_distances_full,
    choose_target,
    global_model_converged,
    loss_on,
)
from clients.backdoors import poison_with_trigger
from clients.base import NO_TARGET, ClientUpdate, TrainingJob
from clients.label_flipping import flip_source_to_target, random_labels
from clients.triggers import Trigger
from clients.update_transforms import scale_to_norm, scale_update, update_norm_of
from fl_poison.core.data import LabeledTensors
from fl_poison.core.training import train_locally
from fl_poison.core.weights import float_state


@dataclass(frozen=True)
class Poisoned:
    """A poisoned training set and the class it pushes towards (:data:`NO_TARGET` if none)."""

    data: LabeledTensors
    target: int = NO_TARGET


class DataPoisoner(Protocol):
    """Turns the attacker's clean data into its training set; None means "do not attack this round"."""

    def poison(self, job: TrainingJob) -> Poisoned | None:
        """The poisoned training set for ``job``."""
        ...


class UpdateTransform(Protocol):
    """Rewrites the weights an attacker trained before they are sent."""

    def transform(self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The float state to send, given the trained state and the global state ``reference``."""
        ...


@dataclass(frozen=True)
class CleanData:
    """No data poisoning (an update attack alone)."""

    def poison(self, job: TrainingJob) -> Poisoned:
        """The clean data."""
        return Poisoned(job.data)


@dataclass(frozen=True)
class RandomLabelFlip:
    """Random label flipping (seed 000 §2.1.2).

    Parameters
    ----------
    num_classes : int
        Labels are drawn from ``0 .. num_classes - 1``.
    """

    num_classes: int

    def poison(self, job: TrainingJob) -> Poisoned:
        """Every label replaced by a uniform draw."""
        return Poisoned(random_labels(job.data, self.num_classes, job.seed))


@dataclass(frozen=True)
class SourceTargetFlip:
    """Source→target label flipping at injection rate α (seed 004 §III-C1).

    Parameters
    ----------
    source : int
        Source class (-1 = all-to-one).
    target : int
        Target class.
    rate : float
        Injection rate α.
    """

    source: int
    target: int
    rate: float

    def poison(self, job: TrainingJob) -> Poisoned:
        """All source samples relabelled, others kept so that poisoned samples are α of the set."""
        return Poisoned(flip_source_to_target(job.data, self.source, self.target, self.rate, job.seed), self.target)


@dataclass(frozen=True)
class TriggerPoison:
    """Backdoor poisoning with a trigger (blend, BadNets, a DBA part).

    Parameters
    ----------
    trigger : Trigger
        The stamp this attacker uses.
    rate : float
        Share of local samples poisoned.
    target : int
        Backdoor target class.
    """

    trigger: Trigger
    rate: float
    target: int

    def poison(self, job: TrainingJob) -> Poisoned:
        """A share ``rate`` of the samples stamped and relabelled ``target``."""
        return Poisoned(poison_with_trigger(job.data, self.trigger, self.rate, self.target, job.seed), self.target)


@dataclass(frozen=True)
class AdaPoison:
    """ADA's target choice followed by source→target flipping (seed 004 §IV).

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
        """Flip source→c* with c* chosen on the current global model; None before convergence."""
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


@dataclass(frozen=True)
class NoTransform:
    """Send the trained weights as they are."""

    def transform(self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``trained`` unchanged."""
        return trained


@dataclass(frozen=True)
class Scaling:
    """Model replacement X = γ(L − G) + G (Bagdasaryan et al., 2020; seed 001 §2.3.1).

    Parameters
    ----------
    gamma : float
        The scale factor.
    """

    gamma: float

    def transform(self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The update scaled by γ."""
        return scale_update(trained, reference, self.gamma)


@dataclass(frozen=True)
class TrainAndScale:
    """Rescale the update to norm Q (Bagdasaryan et al., 2020; seed 004 eq. 5).

    Parameters
    ----------
    bound : float | None
        Q; None = the norm of an honest update the attacker trains itself from the same global
        model on its clean data (its estimate of the mean honest norm).
    """

    bound: float | None

    def transform(self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The update rescaled to norm Q."""
        return scale_to_norm(trained, reference, self.bound if self.bound is not None else honest_norm(job, reference))


def honest_norm(job: TrainingJob, reference: dict[str, torch.Tensor]) -> float:
    """The update norm an honest client would send: train a copy of the global model on the clean data."""
    honest = copy.deepcopy(job.model)
    honest.load_state_dict(reference, strict=False)
    train_locally(honest, job.data, job.training, job.device, job.seed)
    return update_norm_of(float_state(honest), reference)


@dataclass(frozen=True)
class MaliciousClient:
    """Poison the data, train, transform the update.

    Parameters
    ----------
    poisoner : DataPoisoner
        The data attack.
    transform : UpdateTransform
        The update attack.
    """

    poisoner: DataPoisoner
    transform: UpdateTransform

    def run(self, job: TrainingJob) -> ClientUpdate:
        """Train on the poisoned data and send the transformed update (honest training if no attack this round)."""
        reference = float_state(job.model)
        poisoned = self.poisoner.poison(job)
        if poisoned is None:
            loss = train_locally(job.model, job.data, job.training, job.device, job.seed)
            return ClientUpdate(job.model, loss, len(job.data), malicious=True)
        loss = train_locally(job.model, poisoned.data, job.training, job.device, job.seed)
        sent = self.transform.transform(job, float_state(job.model), reference)
        job.model.load_state_dict(sent, strict=False)
        return ClientUpdate(job.model, loss, len(job.data), malicious=True, attacked=True, attack_target=poisoned.target)


@dataclass(frozen=True)
class NanClient:
    """A faulty client that replies with NaN weights (to exercise the server's robustness)."""

    def run(self, job: TrainingJob) -> ClientUpdate:
        """Every float parameter and buffer set to NaN."""
        with torch.no_grad():
            for tensor in job.model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
        return ClientUpdate(job.model, float("nan"), len(job.data), malicious=True, attacked=True)
