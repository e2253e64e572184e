"""Defense settings: one-line ConfigErrors naming the key, defaults of f and m, and the registry."""

from __future__ import annotations

import dataclasses

import pytest

from fl_poison.core.config import CLIP_WRAPPABLE, STRATEGIES, ConfigError, parse_config
from fl_poison.core.round_log import RoundLog
from strategies.fedavg import LabFedAvg, LabFedProx
from strategies.krum import LabMultiKrum
from strategies.lab import LabStrategy
from strategies.loss_filter import LabLossFilter
from strategies.norm_clipping import LabNormClip
from strategies.registry import build_strategy
from strategies.robust_mean import LabBulyan, LabMedian, LabTrimmedMean
from strategies.sampling import PartitionSampler

BAD = [
    # Krum needs 2f + 2 < clients per round.
    ({"strategy": "krum", "num-clients": 6, "krum-f": 2}, "krum-f"),
    ({"strategy": "multikrum", "num-clients": 6, "krum-f": 2}, "krum-f"),
    ({"strategy": "norm-clip", "clip-wrap": "krum", "num-clients": 6, "krum-f": 2}, "krum-f"),
    ({"strategy": "krum", "num-clients": 3}, "krum-f"),  # f = 1 by default: 4 < 3 fails
    ({"strategy": "krum", "num-clients": 10, "clients-per-round": 4}, "krum-f"),  # n is clients per round
    ({"strategy": "krum", "krum-f": 0}, "krum-f"),
    # Multi-Krum keeps 1 .. n.
    ({"strategy": "multikrum", "krum-m": 0}, "krum-m"),
    ({"strategy": "multikrum", "num-clients": 6, "krum-m": 7}, "krum-m"),
    ({"strategy": "multikrum", "num-clients": 10, "clients-per-round": 5, "krum-m": 6}, "krum-m"),
    ({"strategy": "norm-clip", "clip-wrap": "multikrum", "num-clients": 6, "krum-m": 7}, "krum-m"),
    # Trimmed mean trims a fraction in [0, 0.5).
    ({"strategy": "trimmed-mean", "trim-beta": -0.1}, "trim-beta"),
    ({"strategy": "trimmed-mean", "trim-beta": 0.5}, "trim-beta"),
    ({"trim-beta": 0.7}, "trim-beta"),
    # Bulyan needs 4f + 3 clients per round.
    ({"strategy": "bulyan", "num-clients": 6}, "krum-f"),
    ({"strategy": "bulyan", "num-clients": 10, "krum-f": 2}, "krum-f"),
    ({"strategy": "norm-clip", "clip-wrap": "bulyan", "num-clients": 6}, "krum-f"),
    # Clipping bound > 0 (or auto).
    ({"strategy": "norm-clip", "clip-norm": 0}, "clip-norm"),
    ({"strategy": "norm-clip", "clip-norm": -1}, "clip-norm"),
    ({"strategy": "norm-clip", "clip-norm": "big"}, "clip-norm"),
    # Loss percentile in (0, 100].
    ({"strategy": "loss-filter", "loss-percentile": 0}, "loss-percentile"),
    ({"strategy": "loss-filter", "loss-percentile": 101}, "loss-percentile"),
    ({"strategy": "loss-filter", "loss-percentile": -5}, "loss-percentile"),
    # clip-wrap names a strategy norm-clip can wrap.
    ({"strategy": "norm-clip", "clip-wrap": "nope"}, "clip-wrap"),
    ({"strategy": "norm-clip", "clip-wrap": "norm-clip"}, "clip-wrap"),
    # plot-round within the run.
    ({"plot-round": 21}, "plot-round"),
    ({"num-rounds": 3, "plot-round": 4}, "plot-round"),
    ({"plot-round": -1}, "plot-round"),
]


@pytest.mark.parametrize("raw,key", BAD, ids=[f"{key}-{i}" for i, (_, key) in enumerate(BAD)])
def test_bad_defense_settings_give_one_line_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message


GOOD = [
    ({"strategy": "krum", "num-clients": 7, "krum-f": 2}, "krum_f", 2),  # 2*2 + 2 = 6 < 7
    ({"strategy": "krum", "num-clients": 5}, "assumed_attackers", 1),  # 2*1 + 2 = 4 < 5
    ({"strategy": "multikrum", "num-clients": 6, "krum-m": 6}, "krum_keep", 6),
    ({"strategy": "multikrum", "krum-m": 1}, "krum_keep", 1),
    ({"strategy": "bulyan", "num-clients": 7}, "assumed_attackers", 1),  # 4*1 + 3 = 7
    ({"strategy": "bulyan", "num-clients": 11, "krum-f": 2}, "krum_f", 2),
    ({"strategy": "norm-clip", "clip-norm": "auto"}, "clip_norm", None),
    ({"strategy": "norm-clip", "clip-norm": "AUTO"}, "clip_norm", None),
    ({"strategy": "norm-clip", "clip-norm": 2.5}, "clip_norm", 2.5),
    ({"strategy": "norm-clip", "clip-norm": "0.001"}, "clip_norm", 0.001),
    ({"strategy": "trimmed-mean", "trim-beta": 0.0}, "trim_beta", 0.0),
    ({"strategy": "trimmed-mean", "trim-beta": 0.49}, "trim_beta", 0.49),
    ({"strategy": "loss-filter", "loss-percentile": 100}, "loss_percentile", 100.0),
    ({"strategy": "loss-filter", "loss-percentile": 0.5}, "loss_percentile", 0.5),
    ({"plot-round": 20}, "plot_round", 20),
    ({"strategy": "norm-clip", "clip-wrap": "bulyan"}, "clip_wrap", "bulyan"),
]


@pytest.mark.parametrize("raw,field,value", GOOD)
def test_boundary_values_are_accepted(raw, field, value):
    assert getattr(parse_config(raw), field) == value


def test_krum_needs_at_least_five_clients_with_one_attacker():
    # f = 1: 2f + 2 = 4 < n requires n >= 5.
    with pytest.raises(ConfigError, match="^krum-f: "):
        parse_config({"strategy": "krum", "num-clients": 4})
    assert parse_config({"strategy": "krum", "num-clients": 5}).assumed_attackers == 1


def test_krum_settings_are_not_checked_for_other_strategies():
    config = parse_config({"strategy": "fedavg", "num-clients": 3, "krum-f": 5, "krum-m": 50})
    assert (config.krum_f, config.krum_m) == (5, 50)


# ---------------------------------------------------------------- defaults of f and m


@pytest.mark.parametrize(
    "raw,f",
    [
        ({}, 1),  # nobody malicious: still 1
        ({"num-malicious": 3}, 3),
        ({"malicious-ids": "2,5"}, 2),
        ({"num-malicious": 3, "krum-f": 2}, 2),
        ({"num-malicious": 0, "krum-f": 4}, 4),
    ],
)
def test_assumed_attackers(raw, f):
    assert parse_config(raw).assumed_attackers == f


@pytest.mark.parametrize(
    "raw,m",
    [
        ({"strategy": "multikrum"}, 10 - 1),
        ({"strategy": "multikrum", "num-malicious": 3}, 10 - 3),
        ({"strategy": "multikrum", "clients-per-round": 0.5}, 5 - 1),
        ({"strategy": "multikrum", "num-clients": 20, "clients-per-round": 8, "num-malicious": 2}, 8 - 2),
        ({"strategy": "multikrum", "krum-m": 4}, 4),
    ],
)
def test_krum_keep(raw, m):
    assert parse_config(raw).krum_keep == m


# ---------------------------------------------------------------- the registry

EXPECTED_CLASSES = {
    "fedavg": LabFedAvg,
    "fedprox": LabFedProx,
    "krum": LabMultiKrum,
    "multikrum": LabMultiKrum,
    "norm-clip": LabNormClip,
    "loss-filter": LabLossFilter,
    "median": LabMedian,
    "trimmed-mean": LabTrimmedMean,
    "bulyan": LabBulyan,
}


def sampler_and_log(n=10):
    sampler = PartitionSampler({pid: 100 + pid for pid in range(n)}, per_round=n, seed=0)
    return sampler, RoundLog(sampler.partition_of_node)


def test_every_strategy_name_is_covered():
    assert set(EXPECTED_CLASSES) == set(STRATEGIES)


@pytest.mark.parametrize("name", STRATEGIES)
def test_registry_builds_every_strategy(name):
    sampler, log = sampler_and_log()
    strategy = build_strategy(parse_config({"strategy": name}), sampler, log)
    assert type(strategy) is EXPECTED_CLASSES[name]
    assert isinstance(strategy, LabStrategy)
    assert strategy.sampler is sampler and strategy.round_log is log


def test_registry_passes_the_defense_settings():
    sampler, log = sampler_and_log()
    krum = build_strategy(parse_config({"strategy": "krum", "num-malicious": 2}), sampler, log)
    assert (krum.num_malicious_nodes, krum.num_nodes_to_select) == (2, 1)
    multi = build_strategy(parse_config({"strategy": "multikrum", "num-malicious": 2}), sampler, log)
    assert (multi.num_malicious_nodes, multi.num_nodes_to_select) == (2, 8)
    multi_m = build_strategy(parse_config({"strategy": "multikrum", "krum-f": 3, "krum-m": 4}), sampler, log)
    assert (multi_m.num_malicious_nodes, multi_m.num_nodes_to_select) == (3, 4)
    assert build_strategy(parse_config({"strategy": "bulyan", "krum-f": 1}), sampler, log).num_malicious_nodes == 1
    assert build_strategy(parse_config({"strategy": "trimmed-mean", "trim-beta": 0.3}), sampler, log).beta == 0.3
    assert build_strategy(parse_config({"strategy": "loss-filter", "loss-percentile": 60}), sampler, log).loss_percentile == 60.0
    assert build_strategy(parse_config({"strategy": "fedprox", "proximal-mu": 0.7}), sampler, log).proximal_mu == 0.7
    clip = build_strategy(parse_config({"strategy": "norm-clip", "clip-norm": 3}), sampler, log)
    assert clip.clip_norm == 3.0
    assert build_strategy(parse_config({"strategy": "norm-clip"}), sampler, log).clip_norm is None


@pytest.mark.parametrize("wrap", CLIP_WRAPPABLE)
def test_norm_clip_wraps_every_wrappable_strategy(wrap):
    sampler, log = sampler_and_log()
    strategy = build_strategy(parse_config({"strategy": "norm-clip", "clip-wrap": wrap}), sampler, log)
    assert type(strategy) is LabNormClip
    assert type(strategy.inner) is EXPECTED_CLASSES[wrap]
    assert strategy.inner.round_log is log and strategy.inner.sampler is sampler


def test_build_strategy_rejects_an_unknown_name():
    config = dataclasses.replace(parse_config({}), strategy="nope")
    with pytest.raises(ConfigError, match="^strategy: "):
        build_strategy(config, *sampler_and_log())


def test_a_dba_trigger_narrower_than_the_attackers_is_refused():
    from fl_poison.core.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config({"attack": "dba", "num-malicious": 3, "trigger-size": 2})
    message = str(caught.value)
    assert message.startswith("trigger-size: bad value 2;") and "\n" not in message
    assert parse_config({"attack": "dba", "malicious-ids": "1,4,5", "trigger-size": 3}).trigger_size == 3
