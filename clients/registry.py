"""Chooses the behaviour of a client in a round from the experiment config and the threat model."""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import RecordDict

from clients.base import ClientBehaviour
from clients.benign import BenignClient
from clients.malicious import (
    AdaPoison,
    CleanData,
    DataPoisoner,
    MaliciousClient,
    NanClient,
    NoTransform,
    RandomLabelFlip,
    Scaling,
    SourceTargetFlip,
    TrainAndScale,
    TriggerPoison,
    UpdateTransform,
)
from clients.threat_model import ThreatModel
from clients.triggers import attack_trigger, dba_triggers
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import DatasetInfo


def behaviour_for(
    config: ExperimentConfig,
    partition_id: int,
    server_round: int,
    info: DatasetInfo,
    node_config: Mapping[str, object] | None = None,
    state: RecordDict | None = None,
) -> ClientBehaviour:
    """The behaviour of ``partition_id`` in ``server_round``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings, including the threat model and the attack.
    partition_id : int
        The client.
    server_round : int
        The round.
    info : DatasetInfo
        Number of classes and input shape (triggers and label draws need them).
    node_config : Mapping[str, object] | None
        The node's own config (``malicious=true`` makes it an attacker).
    state : RecordDict | None
        The client's ``context.state`` (ADA keeps its convergence record there).
    """
    threat = ThreatModel.from_config(config)
    if not threat.is_malicious(partition_id, node_config):
        return BenignClient()
    if config.attack == "none" and config.resolved_update_attack == "none":
        return BenignClient(malicious=True)
    if not threat.attacks(partition_id, server_round, node_config):
        return BenignClient(malicious=True)
    if config.attack == "nan-weights":
        return NanClient()
    poisoner = data_poisoner(config, partition_id, threat, info, state if state is not None else RecordDict())
    return MaliciousClient(poisoner, update_transform(config, server_round, threat))


def data_poisoner(
    config: ExperimentConfig, partition_id: int, threat: ThreatModel, info: DatasetInfo, state: RecordDict
) -> DataPoisoner:
    """The data attack named by ``attack``."""
    if config.attack == "label-flip-random":
        return RandomLabelFlip(info.num_classes)
    if config.attack == "label-flip":
        return SourceTargetFlip(config.source_class, config.target_class, config.poison_rate)
    if config.attack in ("blend", "badnets"):
        return TriggerPoison(attack_trigger(config, info.input_shape), config.poison_rate, config.target_class)
    if config.attack == "dba":
        _, parts = dba_triggers(config, info.input_shape)
        return TriggerPoison(parts[threat.attacker_rank(partition_id) % len(parts)], config.poison_rate, config.target_class)
    if config.attack == "ada":
        return AdaPoison(
            knowledge=config.ada_knowledge,
            source=config.source_class,
            rate=config.poison_rate,
            num_classes=info.num_classes,
            wait_for_convergence=config.ada_start == "converged",
            patience=config.ada_patience,
            state=state,
        )
    return CleanData()


def update_transform(config: ExperimentConfig, server_round: int, threat: ThreatModel) -> UpdateTransform:
    """The update attack in force (``update-attack``, with ``auto`` resolved)."""
    kind = config.resolved_update_attack
    if kind == "scaling":
        gamma = config.scale_factor
        if gamma is None:
            gamma = threat.per_round / threat.attackers_sampled(server_round)
        return Scaling(gamma)
    if kind == "train-and-scale":
        return TrainAndScale(config.norm_bound)
    return NoTransform()
