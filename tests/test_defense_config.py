"""Defense settings: one-line ConfigErrors naming the key, defaults of f and m, and the registry."""

from __future__ import annotations

import dataclasses

import pytest

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.round_log import RoundLog
from fl_poison.core.settings import ConfigError
from strategies.bulyan import LabBulyan
from strategies.fedavg import LabFedAvg
from strategies.fedprox import LabFedProx
from strategies.krum import KRUM_F, LabMultiKrum, assumed_attackers
from strategies.lab import LabStrategy
from strategies.loss_filter import LOSS_PERCENTILE, LabLossFilter
from strategies.median import LabMedian
from strategies.multikrum import KRUM_M, krum_keep
from strategies.norm_clip import CLIP_NORM, CLIP_WRAP, LabNormClip
from strategies.registry import build_strategy, registered_defenses
from strategies.sampling import PartitionSampler
from strategies.trimmed_mean import TRIM_BETA, LabTrimmedMean

STRATEGIES = tuple(spec.name for spec in registered_defenses())
CLIP_WRAPPABLE = tuple(name for name in STRATEGIES if name != "norm-clip")

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
        experiment_config(raw)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message


GOOD = [
    ({"strategy": "krum", "num-clients": 7, "krum-f": 2}, KRUM_F, 2),  # 2*2 + 2 = 6 < 7
    ({"strategy": "krum", "num-clients": 5}, assumed_attackers, 1),  # 2*1 + 2 = 4 < 5
    ({"strategy": "multikrum", "num-clients": 6, "krum-m": 6}, krum_keep, 6),
    ({"strategy": "multikrum", "krum-m": 1}, krum_keep, 1),
    ({"strategy": "bulyan", "num-clients": 7}, assumed_attackers, 1),  # 4*1 + 3 = 7
    ({"strategy": "bulyan", "num-clients": 11, "krum-f": 2}, KRUM_F, 2),
    ({"strategy": "norm-clip", "clip-norm": "auto"}, CLIP_NORM, None),
    ({"strategy": "norm-clip", "clip-norm": "AUTO"}, CLIP_NORM, None),
    ({"strategy": "norm-clip", "clip-norm": 2.5}, CLIP_NORM, 2.5),
    ({"strategy": "norm-clip", "clip-norm": "0.001"}, CLIP_NORM, 0.001),
    ({"strategy": "trimmed-mean", "trim-beta": 0.0}, TRIM_BETA, 0.0),
    ({"strategy": "trimmed-mean", "trim-beta": 0.49}, TRIM_BETA, 0.49),
    ({"strategy": "loss-filter", "loss-percentile": 100}, LOSS_PERCENTILE, 100.0),
    ({"strategy": "loss-filter", "loss-percentile": 0.5}, LOSS_PERCENTILE, 0.5),
    ({"plot-round": 20}, "plot_round", 20),
    ({"strategy": "norm-clip", "clip-wrap": "bulyan"}, CLIP_WRAP, "bulyan"),
]


def read(config, what):
    """A core attribute (by name), an algorithm setting (``config[SETTING]``) or a derived value (a function)."""
    if isinstance(what, str):
        return getattr(config, what)
    if callable(what) and not hasattr(what, "key"):
        return what(config)
    return config[what]


@pytest.mark.parametrize("raw,what,value", GOOD)
def test_boundary_values_are_accepted(raw, what, value):
    assert read(experiment_config(raw), what) == value


def test_krum_needs_at_least_five_clients_with_one_attacker():
    # f = 1: 2f + 2 = 4 < n requires n >= 5.
    with pytest.raises(ConfigError, match="^krum-f: "):
        experiment_config({"strategy": "krum", "num-clients": 4})
    assert assumed_attackers(experiment_config({"strategy": "krum", "num-clients": 5})) == 1


def test_krum_settings_are_not_checked_for_other_strategies():
    config = experiment_config({"strategy": "fedavg", "num-clients": 3, "krum-f": 5, "krum-m": 50})
    assert (config[KRUM_F], config[KRUM_M]) == (5, 50)


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
    assert assumed_attackers(experiment_config(raw)) == f


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
    assert krum_keep(experiment_config(raw)) == m


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
    strategy = build_strategy(experiment_config({"strategy": name}), sampler, log)
    assert type(strategy) is EXPECTED_CLASSES[name]
    assert isinstance(strategy, LabStrategy)
    assert strategy.sampler is sampler and strategy.round_log is log


def test_registry_passes_the_defense_settings():
    sampler, log = sampler_and_log()
    krum = build_strategy(experiment_config({"strategy": "krum", "num-malicious": 2}), sampler, log)
    assert (krum.num_malicious_nodes, krum.num_nodes_to_select) == (2, 1)
    multi = build_strategy(experiment_config({"strategy": "multikrum", "num-malicious": 2}), sampler, log)
    assert (multi.num_malicious_nodes, multi.num_nodes_to_select) == (2, 8)
    multi_m = build_strategy(experiment_config({"strategy": "multikrum", "krum-f": 3, "krum-m": 4}), sampler, log)
    assert (multi_m.num_malicious_nodes, multi_m.num_nodes_to_select) == (3, 4)
    assert build_strategy(experiment_config({"strategy": "bulyan", "krum-f": 1}), sampler, log).num_malicious_nodes == 1
    assert build_strategy(experiment_config({"strategy": "trimmed-mean", "trim-beta": 0.3}), sampler, log).beta == 0.3
    assert (
        build_strategy(
            experiment_config({"strategy": "loss-filter", "loss-percentile": 60}), sampler, log
        ).loss_percentile
        == 60.0
    )
    assert (
        build_strategy(experiment_config({"strategy": "fedprox", "proximal-mu": 0.7}), sampler, log).proximal_mu == 0.7
    )
    clip = build_strategy(experiment_config({"strategy": "norm-clip", "clip-norm": 3}), sampler, log)
    assert clip.clip_norm == 3.0
    assert build_strategy(experiment_config({"strategy": "norm-clip"}), sampler, log).clip_norm is None


@pytest.mark.parametrize("wrap", CLIP_WRAPPABLE)
def test_norm_clip_wraps_every_wrappable_strategy(wrap):
    sampler, log = sampler_and_log()
    strategy = build_strategy(experiment_config({"strategy": "norm-clip", "clip-wrap": wrap}), sampler, log)
    assert type(strategy) is LabNormClip
    assert type(strategy.inner) is EXPECTED_CLASSES[wrap]
    assert strategy.inner.round_log is log and strategy.inner.sampler is sampler


def test_build_strategy_rejects_an_unknown_name():
    config = dataclasses.replace(experiment_config({}), strategy="nope")
    with pytest.raises(ConfigError, match="^strategy: "):
        build_strategy(config, *sampler_and_log())


def test_a_dba_trigger_narrower_than_the_attackers_is_refused():
    with pytest.raises(ConfigError) as caught:
        experiment_config({"attack": "dba", "num-malicious": 3, "trigger-size": 2})
    message = str(caught.value)
    assert message.startswith("trigger-size: bad value 2;") and "\n" not in message
    experiment_config(
        {"attack": "dba", "malicious-ids": "1,4,5", "trigger-size": 3}
    )  # one column per attacker: accepted
