"""Every registered attack and defense, gathered into the catalogue the apps, the launcher and the
sweep tools parse settings with.

Attacks declare themselves in their modules in :mod:`clients` (``ATTACK = AttackSpec(...)``) and
defenses in theirs in :mod:`strategies` (``DEFENSE = DefenseSpec(...)``); nothing here lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, lru_cache

from clients.registry import registered_attacks
from clients.spec import AttackSpec
from fl_poison.core.catalogue import Catalogue, parse_config
from fl_poison.core.config import NO_ATTACK, ExperimentConfig
from strategies.registry import registered_defenses


@cache
def catalogue() -> Catalogue:
    """The catalogue of every attack module in :mod:`clients` and defense module in :mod:`strategies`."""
    return Catalogue(attacks=registered_attacks(), defenses=registered_defenses())


def experiment_config(raw: Mapping[str, object]) -> ExperimentConfig:
    """Parse and validate a flat kebab-case run config against the catalogue (see :func:`parse_config`).

    A process parses the same settings once: the ClientApp is called for every message of a run
    with the same run config, so parsed configurations are remembered by their items (values that
    cannot be hashed, which only a bad config holds, are parsed each time and fail).

    Parameters
    ----------
    raw : Mapping[str, object]
        Setting values by kebab-case key; missing keys take their defaults.
    """
    # The type is part of the key: 1 == 1.0 == True in Python, but clients-per-round=1 is one
    # client and 1.0 all of them.
    try:
        items = tuple(sorted((key, type(value).__name__, value) for key, value in raw.items()))
        hash(items)
    except TypeError:
        return parse_config(raw, catalogue())
    return _parsed(items)


@lru_cache(maxsize=64)
def _parsed(items: tuple[tuple[str, str, object], ...]) -> ExperimentConfig:
    """:func:`parse_config` of the ``(key, type name, value)`` items against the catalogue, remembered."""
    return parse_config({key: value for key, _, value in items}, catalogue())


def check_attack_classes(config: ExperimentConfig, num_classes: int) -> None:
    """Check the run's attack settings against the dataset's number of classes (one-line ConfigError).

    Parameters
    ----------
    config : ExperimentConfig
        The validated settings.
    num_classes : int
        Number of classes of the run's dataset.
    """
    if config.attack == NO_ATTACK:
        return
    spec = attack_spec(config.attack)
    if spec.check_classes is not None:
        spec.check_classes(config, num_classes)


def attack_spec(name: str) -> AttackSpec:
    """The registered attack ``name``."""
    spec = catalogue().attack(name)
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"attack {name!r} is registered without an AttackSpec")
    return spec
