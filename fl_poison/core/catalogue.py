"""The catalogue of registered algorithms, and parsing a run config against it.

An attack module in :mod:`clients` and a defense module in :mod:`strategies` each declare one
:class:`AlgorithmSpec` (subclassed there with what the layer needs to build it): its name, kind,
one-line summary, its own settings and the checks of their relations to other settings. The
layer above (:mod:`fl_poison.apps.algorithms`) gathers the declarations into a
:class:`Catalogue`; from it come the allowed ``attack``, ``update-attack`` and ``strategy``
names, every setting with its default (``fl-poison settings``, the README table, the
``[tool.flwr.app.config]`` table of ``pyproject.toml``) and :func:`parse_config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fl_poison.core.config import (
    ATTACK_NAMES,
    AUTO_UPDATE_ATTACK,
    CORE_SETTINGS,
    NO_ATTACK,
    STRATEGY_NAMES,
    THREAT_BEHAVIOUR_KEYS,
    UPDATE_ATTACK_NAMES,
    ExperimentConfig,
    check_core_relations,
)
from fl_poison.core.settings import ConfigError, Setting

# Attack kinds: what an attack module builds for a malicious client.
DATA_POISONING = "data-poisoning"  # turns the clean local data into the training set
CLIENT_BEHAVIOUR = "client-behaviour"  # replaces the whole round of local work (e.g. a faulty client)
UPDATE_TRANSFORM = "update-transform"  # rewrites the trained weights before they are sent
# The attackers train honestly; a server-side adversary stage (simulation only) replaces their
# updates using what its knowledge level lets it see of the round's updates (ALIE, MinMax, ...).
MODEL_POISONING = "model-poisoning"
ATTACK_KINDS = (DATA_POISONING, CLIENT_BEHAVIOUR, UPDATE_TRANSFORM, MODEL_POISONING)
# What update-attack selects: a transform the attacker applies itself, or a server-side forgery.
UPDATE_ATTACK_KINDS = (UPDATE_TRANSFORM, MODEL_POISONING)
# Defense kinds.
AGGREGATION_RULE = "aggregation-rule"  # turns the round's accepted updates into the new model
PRE_AGGREGATOR = "pre-aggregator"  # rewrites or filters updates, then hands them to a rule
DEFENSE_KINDS = (AGGREGATION_RULE, PRE_AGGREGATOR)

RelationCheck = Callable[[ExperimentConfig, "Catalogue"], None]


@dataclass(frozen=True, kw_only=True)
class AlgorithmSpec:
    """What a registered attack or defense declares about itself.

    Parameters
    ----------
    name : str
        The value of ``attack`` / ``update-attack`` / ``strategy`` that selects it (kebab-case).
    kind : str
        One of :data:`ATTACK_KINDS` or :data:`DEFENSE_KINDS`.
    summary : str
        One line for tables: what it does and its paper.
    settings : tuple[Setting, ...]
        Its own settings. Two algorithms may share a setting by declaring the same
        :class:`~fl_poison.core.settings.Setting` object (e.g. ``target-class``).
    check : Callable[[ExperimentConfig, Catalogue], None] | None
        Checks the relations of its settings to the others when the run uses it; raises
        :class:`~fl_poison.core.settings.ConfigError` with one line.
    default_update_attack : str
        For an attack: the update transform ``update-attack=auto`` resolves to (``none`` for
        most; ADA pairs with train-and-scale as in its paper). Unused by defenses.
    """

    name: str
    kind: str
    summary: str
    settings: tuple[Setting[Any], ...] = ()
    check: RelationCheck | None = None
    default_update_attack: str = NO_ATTACK


@dataclass(frozen=True)
class Catalogue:
    """The registered attacks and defenses.

    Parameters
    ----------
    attacks : tuple[AlgorithmSpec, ...]
        Every attack (data poisoning, client behaviour and update transform kinds).
    defenses : tuple[AlgorithmSpec, ...]
        Every defense (aggregation rules and pre-aggregators).

    Raises
    ------
    ValueError
        When two algorithms share a name, a kind is unknown, two algorithms declare different
        settings under one key, or an algorithm's setting reuses a core key.
    """

    attacks: tuple[AlgorithmSpec, ...]
    defenses: tuple[AlgorithmSpec, ...]

    def __post_init__(self) -> None:
        for specs, kinds, what in ((self.attacks, ATTACK_KINDS, "attack"), (self.defenses, DEFENSE_KINDS, "defense")):
            names = [spec.name for spec in specs]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"two {what}s are registered as {duplicates[0]!r}")
            for spec in specs:
                if spec.kind not in kinds:
                    raise ValueError(f"{what} {spec.name!r}: unknown kind {spec.kind!r}; allowed: {', '.join(kinds)}")
                if spec.name in (NO_ATTACK, AUTO_UPDATE_ATTACK):
                    raise ValueError(f"{what} {spec.name!r}: the name is reserved")
        core_keys = {setting.key for setting in CORE_SETTINGS}
        declared: dict[str, Setting[Any]] = {}
        for spec in self.attacks + self.defenses:
            for setting in spec.settings:
                if setting.key in core_keys:
                    raise ValueError(f"{spec.name!r} declares {setting.key!r}, a core setting")
                known = declared.setdefault(setting.key, setting)
                if known is not setting:
                    raise ValueError(f"{spec.name!r} declares {setting.key!r} differently from another algorithm")

    def attack_names(self, *kinds: str) -> tuple[str, ...]:
        """Names of the attacks of ``kinds`` (all kinds when none is given), in registration order."""
        return tuple(spec.name for spec in self.attacks if not kinds or spec.kind in kinds)

    def defense_names(self, *kinds: str) -> tuple[str, ...]:
        """Names of the defenses of ``kinds`` (all kinds when none is given), in registration order."""
        return tuple(spec.name for spec in self.defenses if not kinds or spec.kind in kinds)

    def attack(self, name: str) -> AlgorithmSpec:
        """The attack registered as ``name``."""
        return _find(self.attacks, name, "attack")

    def defense(self, name: str) -> AlgorithmSpec:
        """The defense registered as ``name``."""
        return _find(self.defenses, name, "strategy")

    def algorithm_settings(self) -> tuple[Setting[Any], ...]:
        """Every algorithm's own settings, once each, labelled with the first algorithm declaring them."""
        gathered: dict[str, Setting[Any]] = {}
        for spec in self.attacks + self.defenses:
            for setting in spec.settings:
                gathered.setdefault(setting.key, dataclasses.replace(setting, group=spec.name))
        return tuple(gathered.values())

    def settings(self) -> tuple[Setting[Any], ...]:
        """Every setting: the core ones (with the registered names in their help), then each algorithm's."""
        names = {
            ATTACK_NAMES: ", ".join(self.attack_names(DATA_POISONING, CLIENT_BEHAVIOUR)),
            UPDATE_ATTACK_NAMES: ", ".join(self.attack_names(*UPDATE_ATTACK_KINDS)),
            STRATEGY_NAMES: ", ".join(self.defense_names()),
        }
        core = []
        for setting in CORE_SETTINGS:
            text = setting.help
            for placeholder, value in names.items():
                text = text.replace(placeholder, value)
            core.append(dataclasses.replace(setting, help=text))
        return tuple(core) + self.algorithm_settings()

    def node_attack_keys(self) -> tuple[str, ...]:
        """The keys a compromised SuperNode may set in its node config: how it attacks, and every attack setting."""
        attack_keys = [setting.key for spec in self.attacks for setting in spec.settings]
        return tuple(dict.fromkeys([*THREAT_BEHAVIOUR_KEYS, *attack_keys]))

    def in_use(self, config: ExperimentConfig) -> tuple[AlgorithmSpec, ...]:
        """The attack, update transform and defense a configuration runs (their checks apply)."""
        used = [self.defense(config.strategy)]
        if config.attack != NO_ATTACK:
            used.append(self.attack(config.attack))
        if config.resolved_update_attack != NO_ATTACK:
            used.append(self.attack(config.resolved_update_attack))
        return tuple(used)


def _find(specs: tuple[AlgorithmSpec, ...], name: str, key: str) -> AlgorithmSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise ConfigError.bad_value(key, name, " | ".join(spec.name for spec in specs))


def parse_config(raw: Mapping[str, object], catalogue: Catalogue) -> ExperimentConfig:
    """Build a validated :class:`~fl_poison.core.config.ExperimentConfig` from a flat kebab-case mapping.

    Parameters
    ----------
    raw : Mapping[str, object]
        Run config values (Flower's ``context.run_config`` or parsed ``KEY=VALUE`` pairs).
        Missing keys take their defaults.
    catalogue : Catalogue
        The registered algorithms: the allowed names and the algorithms' own settings.

    Raises
    ------
    ConfigError
        For an unknown key, a value that cannot be cast or is out of range, an unregistered
        algorithm name, or settings that contradict each other (one line naming the key).
    """
    settings = catalogue.settings()
    known = [setting.key for setting in settings]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting; allowed: {', '.join(known)}")
    values = {setting.key: setting.cast(setting.key, raw.get(setting.key, setting.default)) for setting in settings}
    core_keys = {setting.key for setting in CORE_SETTINGS}
    attack = str(values["attack"])
    if attack != NO_ATTACK and attack not in catalogue.attack_names(DATA_POISONING, CLIENT_BEHAVIOUR):
        allowed = " | ".join((NO_ATTACK, *catalogue.attack_names(DATA_POISONING, CLIENT_BEHAVIOUR)))
        raise ConfigError.bad_value("attack", raw.get("attack"), allowed)
    update_attack = str(values["update-attack"])
    update_names = catalogue.attack_names(*UPDATE_ATTACK_KINDS)
    if update_attack not in (AUTO_UPDATE_ATTACK, NO_ATTACK, *update_names):
        raise ConfigError.bad_value(
            "update-attack", raw.get("update-attack"), " | ".join((AUTO_UPDATE_ATTACK, NO_ATTACK, *update_names))
        )
    if str(values["strategy"]) not in catalogue.defense_names():
        raise ConfigError.bad_value("strategy", raw.get("strategy"), " | ".join(catalogue.defense_names()))
    resolved = update_attack
    if update_attack == AUTO_UPDATE_ATTACK:
        resolved = catalogue.attack(attack).default_update_attack if attack != NO_ATTACK else NO_ATTACK
    config = ExperimentConfig(
        **{setting.field: values[setting.key] for setting in CORE_SETTINGS},
        resolved_update_attack=resolved,
        options=MappingProxyType({key: value for key, value in values.items() if key not in core_keys}),
        at_default=frozenset(
            setting.key for setting in settings if values[setting.key] == setting.cast(setting.key, setting.default)
        ),
    )
    check_core_relations(config)
    for spec in catalogue.in_use(config):
        if spec.check is not None:
            spec.check(config, catalogue)
    return config
