"""A malicious client: a data-poisoning step, local training, then an update transform.

Every attack of fl_poison that trains is such a composition (DESIGN: "an attack is a composition
of at most two steps"): a data-poisoning attack (:class:`DataPoisoner`) turns the clean local
data into its training set, an update-transform attack (:class:`UpdateTransform`) rewrites the
trained weights (and may forge the example count) before they are sent. Each attack lives in its own module of
:mod:`clients.attacks`; this module holds the composition, the two "no attack" steps, and
the attacker's own number of local epochs (``attacker-epochs``) for the composition and for
an attack's own client behaviour (:class:`AttackerEpochs`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

from clients.base import NO_TARGET, ClientBehaviour, ClientUpdate, TrainingJob
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


def with_epochs(job: TrainingJob, epochs: int | None) -> TrainingJob:
    """``job`` with its local training running ``epochs`` epochs (``job`` itself for None).

    Parameters
    ----------
    job : TrainingJob
        The round's job.
    epochs : int | None
        Local epochs (``attacker-epochs``), or None for the run's ``local-epochs``.
    """
    if epochs is None:
        return job
    return replace(job, training=replace(job.training, epochs=epochs))


@dataclass(frozen=True)
class MaliciousClient:
    """Poison the data, train, transform the update.

    Parameters
    ----------
    poisoner : DataPoisoner
        The data attack.
    transform : UpdateTransform
        The update attack.
    epochs : int | None
        Local epochs of the poisoned training and of the transform's own training (``attacker-epochs``);
        None for the run's ``local-epochs``. A round in which the poisoner does not attack is
        trained like a benign client's, with ``local-epochs``.
    """

    poisoner: DataPoisoner
    transform: UpdateTransform
    epochs: int | None = None

    def run(self, job: TrainingJob) -> ClientUpdate:
        """Train on the poisoned data and send the transformed update (honest training if no attack this round)."""
        reference = float_state(job.model)
        poisoned = self.poisoner.poison(job)
        if poisoned is None:
            loss = train_locally(job.model, job.data, job.training, job.device, job.seed)
            return ClientUpdate(job.model, loss, len(job.data), malicious=True)
        attack_job = with_epochs(job, self.epochs)
        loss = train_locally(attack_job.model, poisoned.data, attack_job.training, attack_job.device, attack_job.seed)
        sent = self.transform.transform(attack_job, float_state(attack_job.model), reference)
        job.model.load_state_dict(sent, strict=False)
        return ClientUpdate(
            job.model,
            loss,
            self.transform.reported_examples(job, len(job.data)),
            malicious=True,
            attacked=True,
            attack_target=poisoned.target,
        )


@dataclass(frozen=True)
class AttackerEpochs:
    """An attack's own client behaviour (kind ``client-behaviour``) run with ``epochs`` local epochs.

    The behaviour reads its epochs from the job, so every local training it does in the round
    runs ``epochs`` epochs; batch size, optimizer and FedProx mu stay the run's.

    Parameters
    ----------
    behaviour : ClientBehaviour
        The attacker's behaviour in an attack round.
    epochs : int
        Local epochs (``attacker-epochs``).
    """

    behaviour: ClientBehaviour
    epochs: int

    def run(self, job: TrainingJob) -> ClientUpdate:
        """``behaviour`` run on ``job`` with its training epochs replaced."""
        return self.behaviour.run(with_epochs(job, self.epochs))
