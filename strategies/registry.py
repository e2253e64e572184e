"""Maps the ``strategy`` setting to a configured strategy instance."""

from __future__ import annotations

from collections.abc import Callable

from fl_poison.core.config import ConfigError, ExperimentConfig
from fl_poison.core.round_log import RoundLog
from strategies.fedavg import LabFedAvg, LabFedProx
from strategies.krum import LabMultiKrum
from strategies.lab import LabStrategy
from strategies.loss_filter import LabLossFilter
from strategies.norm_clipping import LabNormClip
from strategies.robust_mean import LabBulyan, LabMedian, LabTrimmedMean
from strategies.sampling import PartitionSampler

StrategyBuilder = Callable[[ExperimentConfig, PartitionSampler, RoundLog], LabStrategy]


def _fedavg(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabFedAvg(sampler=sampler, round_log=round_log)


def _fedprox(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabFedProx(sampler=sampler, round_log=round_log, proximal_mu=config.proximal_mu)


def _krum(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabMultiKrum(
        sampler=sampler, round_log=round_log, num_malicious_nodes=config.assumed_attackers, num_nodes_to_select=1
    )


def _multikrum(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabMultiKrum(
        sampler=sampler, round_log=round_log, num_malicious_nodes=config.assumed_attackers, num_nodes_to_select=config.krum_keep
    )


def _loss_filter(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabLossFilter(sampler=sampler, round_log=round_log, loss_percentile=config.loss_percentile)


def _median(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabMedian(sampler=sampler, round_log=round_log)


def _trimmed_mean(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabTrimmedMean(sampler=sampler, round_log=round_log, beta=config.trim_beta)


def _bulyan(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    return LabBulyan(sampler=sampler, round_log=round_log, num_malicious_nodes=config.assumed_attackers)


def _norm_clip(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    inner = STRATEGY_BUILDERS[config.clip_wrap](config, sampler, round_log)
    return LabNormClip(sampler=sampler, round_log=round_log, clip_norm=config.clip_norm, inner=inner)


STRATEGY_BUILDERS: dict[str, StrategyBuilder] = {
    "fedavg": _fedavg,
    "fedprox": _fedprox,
    "krum": _krum,
    "multikrum": _multikrum,
    "norm-clip": _norm_clip,
    "loss-filter": _loss_filter,
    "median": _median,
    "trimmed-mean": _trimmed_mean,
    "bulyan": _bulyan,
}


def build_strategy(config: ExperimentConfig, sampler: PartitionSampler, round_log: RoundLog) -> LabStrategy:
    """The strategy named by ``config.strategy``, wired to ``sampler`` and ``round_log``."""
    if config.strategy not in STRATEGY_BUILDERS:
        raise ConfigError.bad_value("strategy", config.strategy, " | ".join(STRATEGY_BUILDERS))
    return STRATEGY_BUILDERS[config.strategy](config, sampler, round_log)
