"""The registered attacks, and the behaviour of a client in a round built from them.

:func:`registered_attacks` imports every module of :mod:`clients.attacks` and collects its
``ATTACK``; nothing lists the attacks by hand. :func:`behaviour_for` turns the threat model and
the run's attack and update transform into a client's behaviour, and :func:`evaluation_for`
gives the server the run's attack metrics; both ask the attacks' specs, never their names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from functools import cache

from flwr.app import RecordDict

import clients.attacks
from clients.attack_metrics import AttackEvaluation, NoAttackMetrics
from clients.base import ClientBehaviour
from clients.benign import BenignClient
from clients.malicious import (
    AttackerEpochs,
    CleanData,
    DataPoisoner,
    MaliciousClient,
    NoTransform,
    UpdateTransform,
)
from clients.spec import AttackContext, AttackSpec
from clients.threat_model import ThreatModel
from fl_poison.core.catalogue import CLIENT_BEHAVIOUR, DATA_POISONING, MODEL_POISONING, UPDATE_TRANSFORM
from fl_poison.core.config import NO_ATTACK, ExperimentConfig
from fl_poison.core.data import DatasetInfo, LabeledTensors


@cache
def registered_attacks() -> tuple[AttackSpec, ...]:
    """Every attack of :mod:`clients.attacks` (the ``ATTACK`` of each of its modules), sorted by name.

    Raises
    ------
    TypeError
        When a module of the package has no ``ATTACK`` that is an :class:`AttackSpec`.
    """
    specs = []
    for module_info in pkgutil.iter_modules(clients.attacks.__path__):
        module = importlib.import_module(f"{clients.attacks.__name__}.{module_info.name}")
        spec = getattr(module, "ATTACK", None)
        if not isinstance(spec, AttackSpec):
            raise TypeError(
                f"{module.__name__}: no ATTACK = AttackSpec(...); every module of clients.attacks is an attack"
            )
        specs.append(spec)
    return tuple(sorted(specs, key=lambda spec: spec.name))


def attack_named(name: str, attacks: Sequence[AttackSpec] | None = None) -> AttackSpec | None:
    """The attack registered as ``name``; None for ``none``.

    Parameters
    ----------
    name : str
        An ``attack`` or ``update-attack`` value (``update-attack`` resolved, not ``auto``).
    attacks : Sequence[AttackSpec] | None
        The attacks to look in; None for :func:`registered_attacks`.

    Raises
    ------
    KeyError
        For a name no attack is registered as (a parsed configuration never has one).
    """
    if name == NO_ATTACK:
        return None
    for spec in registered_attacks() if attacks is None else attacks:
        if spec.name == name:
            return spec
    raise KeyError(f"attack {name!r} is not registered")


def behaviour_for(
    config: ExperimentConfig,
    partition_id: int,
    server_round: int,
    info: DatasetInfo,
    node_config: Mapping[str, object] | None = None,
    state: RecordDict | None = None,
    attacks: Sequence[AttackSpec] | None = None,
) -> ClientBehaviour:
    """The behaviour of ``partition_id`` in ``server_round``.

    A benign client trains honestly; so does an attacker outside its attack rounds (marked
    malicious for forensics). An attacker in an attack round gets the behaviour its attack
    builds (kind ``client-behaviour``), or a :class:`~clients.malicious.MaliciousClient` that
    composes the attack's data poisoner (kind ``data-poisoning``; clean data for ``none``) with
    the update transform of ``update-attack`` (none for ``none`` and for a model-poisoning attack,
    whose attacker sends its honestly trained weights marked ``attacked`` for the server-side
    adversary stage to forge). With ``attacker-epochs`` set, the attacker's local training in
    its attack rounds runs that many epochs (``MaliciousClient.epochs``,
    :class:`~clients.malicious.AttackerEpochs`).

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
        The client's ``context.state`` (ADA keeps its convergence record there); None for a
        fresh one.
    attacks : Sequence[AttackSpec] | None
        The attacks to build from; None for :func:`registered_attacks`.
    """
    threat = ThreatModel.from_config(config)
    if not threat.is_malicious(partition_id, node_config):
        return BenignClient()
    if config.attack == NO_ATTACK and config.resolved_update_attack == NO_ATTACK:
        return BenignClient(malicious=True)
    if not threat.attacks(partition_id, server_round, node_config):
        return BenignClient(malicious=True)
    context = AttackContext(
        config=config,
        partition_id=partition_id,
        server_round=server_round,
        info=info,
        threat=threat,
        state=state if state is not None else RecordDict(),
    )
    attack = attack_named(config.attack, attacks)
    if attack is not None and attack.kind == CLIENT_BEHAVIOUR and attack.behaviour is not None:
        behaviour = attack.behaviour(context)
        return behaviour if config.attacker_epochs is None else AttackerEpochs(behaviour, config.attacker_epochs)
    return MaliciousClient(
        data_poisoner(attack, context),
        update_transform(attack_named(config.resolved_update_attack, attacks), context),
        config.attacker_epochs,
    )


def data_poisoner(attack: AttackSpec | None, context: AttackContext) -> DataPoisoner:
    """The data poisoner ``attack`` builds for ``context``; clean data when there is no attack.

    Parameters
    ----------
    attack : AttackSpec | None
        A data-poisoning attack, or None.
    context : AttackContext
        The attacker and the round.

    Raises
    ------
    ValueError
        When ``attack`` is not a data-poisoning attack.
    """
    if attack is None:
        return CleanData()
    if attack.kind != DATA_POISONING or attack.poisoner is None:
        raise ValueError(f"attack {attack.name!r} is of kind {attack.kind!r}; allowed: {DATA_POISONING}")
    return attack.poisoner(context)


def update_transform(attack: AttackSpec | None, context: AttackContext) -> UpdateTransform:
    """The update transform ``attack`` builds for ``context``; the trained weights as they are when there is none.

    A model-poisoning attack sends the trained weights as they are too: its attacker trains
    honestly (on the poisoned data of ``attack``, when one is given) and replies ``attacked``; the
    server-side adversary stage forges its update (:mod:`clients.adversary_stage`).

    Parameters
    ----------
    attack : AttackSpec | None
        An update-transform or model-poisoning attack, or None.
    context : AttackContext
        The attacker and the round.

    Raises
    ------
    ValueError
        When ``attack`` is neither an update-transform nor a model-poisoning attack.
    """
    if attack is None or attack.kind == MODEL_POISONING:
        return NoTransform()
    if attack.kind != UPDATE_TRANSFORM or attack.transform is None:
        raise ValueError(
            f"update-attack {attack.name!r} is of kind {attack.kind!r}; allowed: {UPDATE_TRANSFORM}, {MODEL_POISONING}"
        )
    return attack.transform(context)


def evaluation_for(
    config: ExperimentConfig, test_set: LabeledTensors, num_classes: int, attacks: Sequence[AttackSpec] | None = None
) -> AttackEvaluation:
    """The evaluation of the run's attack (no metrics when it has none or the run has no attack).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    test_set : LabeledTensors
        The server's clean test set.
    num_classes : int
        Number of classes of the data.
    attacks : Sequence[AttackSpec] | None
        The attacks to look in; None for :func:`registered_attacks`.
    """
    attack = attack_named(config.attack, attacks)
    if attack is None or attack.evaluation is None:
        return NoAttackMetrics()
    return attack.evaluation(config, test_set, num_classes)
