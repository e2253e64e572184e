"""A malicious client: a data-poisoning step, local training, then an update transform.

Every attack of fl_poison that trains is such a composition (DESIGN: "an attack is a composition
of at most two steps"): a data-poisoning attack (:class:`DataPoisoner`) turns the clean local
data into its training set, an update-transform attack (:class:`UpdateTransform`) rewrites the
trained weights (and may forge the example count) before they are sent. Each attack lives in its own module of
:mod:`clients.attacks`; this module holds the composition and the two "no attack" steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from clients.base import NO_TARGET, ClientUpdate, TrainingJob
from fl_poison.core.data import LabeledTensors
from fl_poison.core.training import train_locally
from fl_poison.core.weights import float_state


@dataclass(frozen=True)
class Poisoned:
    """A poisoned training set and the class it pushes towards.

    Parameters
    ----------
    data : LabeledTensors
        The training set of the attack.
    target : int
        The class the poisoning pushes towards, or :data:`~clients.base.NO_TARGET`.
    """

    data: LabeledTensors
    target: int = NO_TARGET


class DataPoisoner(Protocol):
    """Turns the attacker's clean data into its training set; None means "do not attack this round"."""

    def poison(self, job: TrainingJob) -> Poisoned | None:
        """The poisoned training set for ``job`` (its data, model, seed and round)."""
        ...


class UpdateTransform(Protocol):
    """Rewrites what an attacker sends after training: its weights, and the example count it reports."""

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The float state to send.

        Parameters
        ----------
        job : TrainingJob
            The round's local work (model, clean data, training settings, seed).
        trained : dict[str, torch.Tensor]
            The float state after training on the poisoned data.
        reference : dict[str, torch.Tensor]
            The float state of the global model of the round.
        """
        ...

    def reported_examples(self, job: TrainingJob, count: int) -> int:
        """The example count to report for a clean training set of ``count`` examples.

        Parameters
        ----------
        job : TrainingJob
            The round's local work.
        count : int
            The size of the attacker's clean partition (what an honest client reports).
        """
        ...


class HonestCount:
    """Report the true example count (every update transform but a forged-count one)."""

    def reported_examples(self, job: TrainingJob, count: int) -> int:
        """``count`` unchanged (see :meth:`UpdateTransform.reported_examples` for the parameters)."""
        return count


@dataclass(frozen=True)
class CleanData:
    """No data poisoning (an update attack alone)."""

    def poison(self, job: TrainingJob) -> Poisoned:
        """The clean data of ``job``."""
        return Poisoned(job.data)


@dataclass(frozen=True)
class NoTransform(HonestCount):
    """Send the trained weights as they are."""

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``trained`` unchanged (see :meth:`UpdateTransform.transform` for the parameters)."""
        return trained


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
        return ClientUpdate(
            job.model,
            loss,
            self.transform.reported_examples(job, len(job.data)),
            malicious=True,
            attacked=True,
            attack_target=poisoned.target,
        )
