"""The interface between the ClientApp and a client behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.training import LocalTraining

NO_TARGET = -1


@dataclass(frozen=True)
class TrainingJob:
    """Everything a behaviour needs for one round of local work.

    Attributes
    ----------
    model : SplitClassifier
        A fresh model holding the global weights of this round.
    data : LabeledTensors
        The client's own partition (never modified in place).
    training : LocalTraining
        Local training hyper-parameters, including the FedProx mu the server sent.
    device : torch.device
        Where to train.
    seed : int
        Seed for this client and round (mini-batch order, poisoning draws).
    server_round : int
        The current round.
    partition_id : int
        The client's partition id.
    """

    model: SplitClassifier
    data: LabeledTensors
    training: LocalTraining
    device: torch.device
    seed: int
    server_round: int
    partition_id: int


@dataclass
class ClientUpdate:
    """What a behaviour returns: the trained model and what to report.

    Attributes
    ----------
    model : SplitClassifier
        The model after local work (its float state is sent to the server).
    train_loss : float
        Mean training loss on the data actually used.
    num_examples : int
        The example count reported to the server (FedAvg weights by it).
    malicious : bool
        Ground truth for forensics: the client is one of the attackers.
    attacked : bool
        Ground truth for forensics: this update is poisoned.
    attack_target : int
        The class the attack pushes towards this round (ADA's choice), or :data:`NO_TARGET`.
    """

    model: SplitClassifier
    train_loss: float
    num_examples: int
    malicious: bool = False
    attacked: bool = False
    attack_target: int = NO_TARGET


class ClientBehaviour(Protocol):
    """A client's conduct in one round."""

    def run(self, job: TrainingJob) -> ClientUpdate:
        """Do the round's local work and return the update to send."""
        ...
