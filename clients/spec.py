"""What an attack module declares: :class:`AttackSpec`, the catalogue's entry plus what the client
layer needs to build and measure the attack.

Every module of :mod:`clients.attacks` ends with ``ATTACK = AttackSpec(...)``; the registry
(:mod:`clients.registry`) discovers them. An attack of kind

- ``data-poisoning`` gives ``poisoner``: it builds the :class:`~clients.malicious.DataPoisoner`
  that turns the attacker's clean data into its training set;
- ``update-transform`` gives ``transform``: it builds the :class:`~clients.malicious.UpdateTransform`
  that rewrites the trained weights before they are sent;
- ``client-behaviour`` gives ``behaviour``: it builds a whole :class:`~clients.base.ClientBehaviour`
  (for instance a faulty client that sends NaN weights);
- ``model-poisoning`` gives ``adversary`` and ``knowledge``: the attackers train honestly and the
  server-side adversary stage (simulation only) replaces their updates with what the
  :class:`~clients.adversary.Adversary` forges from the round's updates it may see
  (see :mod:`clients.adversary`). Such a spec gets ``attack-knowledge`` among its settings and a
  check of it against ``knowledge`` (:class:`KnowledgeCheck`) without declaring either.

Each builder receives an :class:`AttackContext`: the settings, the client, the round, the data's
shape, the threat model and the client's ``context.state``. Following BackFed, a poison owns its
evaluation: an attack with metrics of its own gives ``evaluation``, which the ServerApp builds
once and asks every round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import RecordDict

from clients.adversary import ATTACK_KNOWLEDGE, KNOWLEDGE_LEVELS, AdversaryBuilder, resolve_knowledge
from clients.attack_metrics import AttackEvaluation
from clients.base import ClientBehaviour
from clients.malicious import DataPoisoner, UpdateTransform
from clients.threat_model import ThreatModel
from clients.triggers import Trigger
from fl_poison.core.catalogue import (
    CLIENT_BEHAVIOUR,
    DATA_POISONING,
    MODEL_POISONING,
    UPDATE_TRANSFORM,
    AlgorithmSpec,
    Catalogue,
    RelationCheck,
)
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import DatasetInfo, LabeledTensors


@dataclass(frozen=True)
class AttackContext:
    """What an attack's builder may use to build a malicious client's behaviour for one round.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (the attack's own ones are read with ``config[SETTING]``).
    partition_id : int
        The attacking client.
    server_round : int
        The round.
    info : DatasetInfo
        Number of classes and input shape of the data.
    threat : ThreatModel
        The attackers of the run and their schedule.
    state : RecordDict
        The client's ``context.state``, kept by Flower between rounds (ADA's convergence record).
    """

    config: ExperimentConfig
    partition_id: int
    server_round: int
    info: DatasetInfo
    threat: ThreatModel
    state: RecordDict


PoisonerBuilder = Callable[[AttackContext], DataPoisoner]
TransformBuilder = Callable[[AttackContext], UpdateTransform]
BehaviourBuilder = Callable[[AttackContext], ClientBehaviour]
TriggerBuilder = Callable[[ExperimentConfig, tuple[int, int, int]], Trigger]
EvaluationBuilder = Callable[[ExperimentConfig, LabeledTensors, int], AttackEvaluation]
ClassCheck = Callable[[ExperimentConfig, int], None]


@dataclass(frozen=True, kw_only=True)
class AttackSpec(AlgorithmSpec):
    """A registered attack: the catalogue's fields (see :class:`~fl_poison.core.catalogue.AlgorithmSpec`) and its builders.

    Parameters
    ----------
    poisoner : Callable[[AttackContext], DataPoisoner] | None
        For kind ``data-poisoning`` (and only for it): builds the data poisoner.
    transform : Callable[[AttackContext], UpdateTransform] | None
        For kind ``update-transform`` (and only for it): builds the update transform.
    behaviour : Callable[[AttackContext], ClientBehaviour] | None
        For kind ``client-behaviour`` (and only for it): builds the whole round's behaviour.
    adversary : Callable[[AdversaryContext], Adversary] | None
        For kind ``model-poisoning`` (and only for it): builds the server-side adversary.
    knowledge : tuple[str, ...]
        For kind ``model-poisoning``: the ``attack-knowledge`` levels it supports, the first one
        being what ``auto`` means (see :mod:`clients.adversary`); empty for the other kinds.
    trigger : Callable[[ExperimentConfig, tuple[int, int, int]], Trigger] | None
        For a backdoor: its full trigger for a run's settings and an input shape ``(C, H, W)``.
    evaluation : Callable[[ExperimentConfig, LabeledTensors, int], AttackEvaluation] | None
        Builds, from the settings, the clean test set and the number of classes, the object that
        computes the attack's metrics of the global model every round; None when the attack has
        no metrics of its own.
    check_classes : Callable[[ExperimentConfig, int], None] | None
        Checks the attack's class settings against the data's number of classes (known only once
        the data is read); raises a one-line :class:`~fl_poison.core.settings.ConfigError`.

    Raises
    ------
    ValueError
        When the builder of the spec's kind is missing or a builder of another kind is given.
    """

    poisoner: PoisonerBuilder | None = None
    transform: TransformBuilder | None = None
    behaviour: BehaviourBuilder | None = None
    adversary: AdversaryBuilder | None = None
    knowledge: tuple[str, ...] = ()
    trigger: TriggerBuilder | None = None
    evaluation: EvaluationBuilder | None = None
    check_classes: ClassCheck | None = None

    def __post_init__(self) -> None:
        builders = {
            DATA_POISONING: "poisoner",
            UPDATE_TRANSFORM: "transform",
            CLIENT_BEHAVIOUR: "behaviour",
            MODEL_POISONING: "adversary",
        }
        given = [field for field in builders.values() if getattr(self, field) is not None]
        expected = builders.get(self.kind)
        if given != [expected]:
            raise ValueError(
                f"attack {self.name!r} of kind {self.kind!r} gives the builders {given}; allowed: exactly {expected!r}"
            )
        if (self.kind == MODEL_POISONING) != bool(self.knowledge):
            raise ValueError(f"attack {self.name!r}: knowledge levels are declared by model-poisoning attacks only")
        unknown = [level for level in self.knowledge if level not in KNOWLEDGE_LEVELS]
        if unknown:
            raise ValueError(
                f"attack {self.name!r}: unknown knowledge level {unknown[0]!r}; allowed: {', '.join(KNOWLEDGE_LEVELS)}"
            )
        if self.kind == MODEL_POISONING:
            # Every model-poisoning attack reads attack-knowledge and has it checked against its levels.
            if ATTACK_KNOWLEDGE not in self.settings:
                object.__setattr__(self, "settings", (*self.settings, ATTACK_KNOWLEDGE))
            object.__setattr__(self, "check", KnowledgeCheck(self.name, self.knowledge, self.check))


@dataclass(frozen=True)
class KnowledgeCheck:
    """The relation check of a model-poisoning attack: ``attack-knowledge`` against its levels, then its own check.

    :class:`AttackSpec` installs it as the ``check`` of every model-poisoning attack, so that a level
    the attack does not declare fails when the config is parsed (one line naming
    ``attack-knowledge``), whatever the attack's module declares.

    Parameters
    ----------
    attack : str
        The attack's name.
    levels : tuple[str, ...]
        The knowledge levels it supports (the first is what ``auto`` means).
    own : Callable[[ExperimentConfig, Catalogue], None] | None
        The check the attack's module declared, run after the knowledge check.
    """

    attack: str
    levels: tuple[str, ...]
    own: RelationCheck | None

    def __call__(self, config: ExperimentConfig, catalogue: Catalogue) -> None:
        """Check ``config`` (see :attr:`AlgorithmSpec.check <fl_poison.core.catalogue.AlgorithmSpec>`).

        Parameters
        ----------
        config : ExperimentConfig
            The parsed settings.
        catalogue : Catalogue
            The registered algorithms.
        """
        resolve_knowledge(self.attack, self.levels, config[ATTACK_KNOWLEDGE])
        if self.own is not None:
            self.own(config, catalogue)
