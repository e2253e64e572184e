"""What a defense module declares: :class:`DefenseSpec`, and what its builder gets: :class:`BuildContext`.

Every module of :mod:`strategies` that holds a defense ends with ``DEFENSE = DefenseSpec(...)``;
:func:`strategies.registry.registered_defenses` finds them. The name, kind, summary, settings and
relation check are those of :class:`~fl_poison.core.catalogue.AlgorithmSpec`; ``build`` turns a
parsed configuration into the server strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fl_poison.core.catalogue import AlgorithmSpec
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_log import RoundLog
from strategies.sampling import PartitionSampler

if TYPE_CHECKING:
    from strategies.lab import LabStrategy


@dataclass(frozen=True)
class BuildContext:
    """What a defense's builder may use besides the configuration.

    Parameters
    ----------
    sampler : PartitionSampler
        Draws the partitions of each round (seeded).
    round_log : RoundLog
        Receives one row per sampled client per round.
    wrapped : Callable[[str], LabStrategy]
        Builds the registered defense of that name with the same configuration and context; a
        pre-aggregator (norm-clip) builds the rule it hands its updates to with it.
    """

    sampler: PartitionSampler
    round_log: RoundLog
    wrapped: Callable[[str], LabStrategy]


@dataclass(frozen=True, kw_only=True)
class DefenseSpec(AlgorithmSpec):
    """A registered defense: an aggregation rule or a pre-aggregator.

    Parameters
    ----------
    name, kind, summary, settings, check :
        See :class:`~fl_poison.core.catalogue.AlgorithmSpec`; ``kind`` is
        :data:`~fl_poison.core.catalogue.AGGREGATION_RULE` or
        :data:`~fl_poison.core.catalogue.PRE_AGGREGATOR`.
    build : Callable[[ExperimentConfig, BuildContext], LabStrategy]
        Builds the strategy from a configuration that the catalogue has parsed and checked.
    """

    build: Callable[[ExperimentConfig, BuildContext], LabStrategy]
