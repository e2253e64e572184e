"""Maps the ``strategy`` setting to a configured strategy instance."""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp.strategy import Strategy

from fl_poison.config import ConfigError, ExperimentConfig
from fl_poison.round_log import RoundLog
from strategies.fedavg import LabFedAvg, LabFedProx
from strategies.sampling import PartitionSampler

StrategyBuilder = Callable[[ExperimentConfig, PartitionSampler, RoundLog], Strategy]


def _fedavg(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> Strategy:
    return LabFedAvg(sampler=sampler, round_log=round_log)


def _fedprox(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> Strategy:
    return LabFedProx(sampler=sampler, round_log=round_log, proximal_mu=config.proximal_mu)


STRATEGY_BUILDERS: dict[str, StrategyBuilder] = {
    "fedavg": _fedavg,
    "fedprox": _fedprox,
}


def build_strategy(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> Strategy:
    """The strategy named by ``config.strategy``, wired to ``sampler`` and ``round_log``."""
    if config.strategy not in STRATEGY_BUILDERS:
        raise ConfigError.bad_value("strategy", config.strategy, " | ".join(STRATEGY_BUILDERS))
    return STRATEGY_BUILDERS[config.strategy](config, sampler, round_log)
