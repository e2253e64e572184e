"""The registered defenses, found in the modules of :mod:`strategies`, and building the one a run uses.

A module of this package registers a defense by defining ``DEFENSE = DefenseSpec(...)``; there is
no list to edit. Modules without ``DEFENSE`` hold shared code and are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping

import strategies
from fl_poison.core.adversary_stage import AdversaryStage
from fl_poison.core.client_weighting import ClientWeighting
from fl_poison.core.config import ConfigError, ExperimentConfig
from fl_poison.core.round_log import RoundLog
from fl_poison.core.timings import PhaseClock
from fl_poison.core.training import resolve_device
from strategies.lab import LabStrategy
from strategies.sampling import PartitionSampler
from strategies.spec import BuildContext, Defense, DefenseSpec, ServerUpdate


def registered_defenses() -> tuple[DefenseSpec, ...]:
    """Every ``DEFENSE`` declared by a module of :mod:`strategies`, ordered by name."""
    specs = []
    for module_info in pkgutil.iter_modules(strategies.__path__):
        module = importlib.import_module(f"{strategies.__name__}.{module_info.name}")
        spec = getattr(module, "DEFENSE", None)
        if isinstance(spec, DefenseSpec):
            specs.append(spec)
    return tuple(sorted(specs, key=lambda spec: spec.name))


def build_defense(config: ExperimentConfig, root_training: Callable[[int], ServerUpdate] | None = None) -> Defense:
    """The defense named by ``config.strategy`` (with the rule it wraps, for a pre-aggregator).

    Parameters
    ----------
    config : ExperimentConfig
        A configuration parsed against the catalogue (its defense settings are present).
    root_training : Callable[[int], ServerUpdate] | None
        The server's training on a root dataset of a given size (see
        :class:`~strategies.spec.BuildContext`); None where the server cannot train.

    Raises
    ------
    ConfigError
        When ``strategy`` (or a wrapped rule) names no registered defense.
    """
    specs = {spec.name: spec for spec in registered_defenses()}

    def build(name: str) -> Defense:
        if name not in specs:
            raise ConfigError.bad_value("strategy", name, " | ".join(specs))
        return specs[name].build(config, context)

    context = BuildContext(wrapped=build, root_training=root_training)
    return build(config.strategy)


def build_strategy(
    config: ExperimentConfig,
    sampler: PartitionSampler,
    round_log: RoundLog,
    justified_examples: Mapping[int, int] | None = None,
    clock: PhaseClock | None = None,
    adversary: AdversaryStage | None = None,
    root_training: Callable[[int], ServerUpdate] | None = None,
) -> LabStrategy:
    """The Flower strategy running the defense ``config.strategy`` names, on the device ``config.device`` resolves to.

    Client weights follow ``client-weighting`` (capped at ``justified_examples`` where known, else
    at ``weight-cap-multiple`` times the round's median report).

    Parameters
    ----------
    config : ExperimentConfig
        A configuration parsed against the catalogue.
    sampler : PartitionSampler
        Draws the partitions of each round.
    round_log : RoundLog
        Receives one row per sampled client per round.
    justified_examples : Mapping[int, int] | None
        The example count the server can justify for each partition id (see
        :class:`~fl_poison.core.client_weighting.ClientWeighting`); None when it knows none.
    clock : PhaseClock | None
        The run's clock (the strategy adds its ``train`` and ``aggregate`` times to it).
    adversary : AdversaryStage | None
        The run's model-poisoning adversary (simulation only), which rewrites the attackers'
        replies before screening; None when the run has none.
    root_training : Callable[[int], ServerUpdate] | None
        The server's training on a root dataset, for a defense that needs it (FLTrust; see
        :class:`~strategies.spec.BuildContext`); the ServerApp always provides it.
    """
    weighting = ClientWeighting(config.client_weighting, justified_examples or {}, config.weight_cap_multiple)
    return LabStrategy(
        sampler=sampler,
        round_log=round_log,
        defense=build_defense(config, root_training),
        device=resolve_device(config.device),
        weighting=weighting,
        clock=clock,
        adversary=adversary,
    )
