"""Defense settings: one-line ConfigErrors naming the key, defaults of f and m, the exact messages moved
out of the core, and the registry (discovery, specs, building every defense)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from strategy_helpers import root_training

import strategies
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.catalogue import AGGREGATION_RULE, PRE_AGGREGATOR
from fl_poison.core.round_log import RoundLog
from fl_poison.core.settings import ConfigError
from strategies import (
    bucketing,
    bulyan,
    centered_clipping,
    dnc,
    fedavg,
    fedprox,
    flame,
    fltrust,
    foolsgold,
    geomed,
    krum,
    loss_filter,
    median,
    multikrum,
    nnm,
    norm_clip,
    rlr,
    trimmed_mean,
)
from strategies.bucketing import Bucketing
from strategies.bulyan import BULYAN_SELECTION, Bulyan
from strategies.centered_clipping import CenteredClipping
from strategies.dnc import DivideAndConquer
from strategies.fedavg import FedAvg
from strategies.fedprox import PROXIMAL_MU, FedProx
from strategies.flame import Flame
from strategies.fltrust import FLTrust
from strategies.foolsgold import FoolsGold
from strategies.geomed import GeometricMedian
from strategies.krum import KRUM_F, Krum, assumed_attackers
from strategies.lab import LabStrategy
from strategies.loss_filter import LOSS_PERCENTILE, LossFilter
from strategies.median import Median
from strategies.multikrum import KRUM_M, MultiKrum, krum_keep
from strategies.nnm import NearestNeighborMixing
from strategies.norm_clip import CLIP_NORM, CLIP_WRAP, NormClip
from strategies.registry import build_defense, build_strategy, registered_defenses
from strategies.rlr import RobustLearningRate
from strategies.sampling import PartitionSampler
from strategies.spec import DefenseSpec
from strategies.trimmed_mean import TRIM_BETA, TrimmedMean

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
    # Bulyan's selection rule.
    ({"strategy": "bulyan", "bulyan-selection": "repeated"}, "bulyan-selection"),
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
    ({"strategy": "norm-clip", "clip-wrap": "Median"}, CLIP_WRAP, "median"),
    ({"strategy": "bulyan"}, BULYAN_SELECTION, "krum-repeated"),
    ({"strategy": "bulyan", "bulyan-selection": "MultiKrum"}, BULYAN_SELECTION, "multikrum"),
    ({"strategy": "fedprox", "proximal-mu": 0}, PROXIMAL_MU, 0.0),
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


MESSAGES = [
    # The messages the core gave before the defense settings moved into their modules.
    (
        {"strategy": "krum", "num-clients": 6, "krum-f": 2},
        "krum-f: bad value 2; allowed: f with 2f + 2 < clients per round (6), i.e. at most 1",
    ),
    (
        {"strategy": "multikrum", "num-clients": 6, "krum-m": 7},
        "krum-m: bad value 7; allowed: 1 .. clients per round (6)",
    ),
    (
        {"strategy": "bulyan", "num-clients": 10, "krum-f": 2},
        "krum-f: bad value 2; allowed: f with 4f + 3 <= clients per round (10) for bulyan",
    ),
    ({"strategy": "krum", "krum-f": 0}, "krum-f: bad value 0; allowed: auto | an integer >= 1"),
    ({"strategy": "norm-clip", "clip-norm": 0}, "clip-norm: bad value 0; allowed: auto | a number > 0"),
    ({"trim-beta": 0.5}, "trim-beta: bad value 0.5; allowed: a number in [0, 0.5)"),
    ({"loss-percentile": 0}, "loss-percentile: bad value 0; allowed: a number in (0, 100]"),
    ({"proximal-mu": -1}, "proximal-mu: bad value -1; allowed: a number >= 0"),
    (
        {"strategy": "norm-clip", "clip-wrap": "nope"},
        "clip-wrap: bad value 'nope'; allowed: " + " | ".join(CLIP_WRAPPABLE),
    ),
]


@pytest.mark.parametrize("raw,message", MESSAGES)
def test_messages(raw, message):
    with pytest.raises(ConfigError) as caught:
        experiment_config(raw)
    assert str(caught.value) == message


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

EXPECTED = {
    "bucketing": (bucketing, Bucketing, PRE_AGGREGATOR),
    "bulyan": (bulyan, Bulyan, AGGREGATION_RULE),
    "centered-clipping": (centered_clipping, CenteredClipping, AGGREGATION_RULE),
    "dnc": (dnc, DivideAndConquer, AGGREGATION_RULE),
    "fedavg": (fedavg, FedAvg, AGGREGATION_RULE),
    "fedprox": (fedprox, FedProx, AGGREGATION_RULE),
    "flame": (flame, Flame, AGGREGATION_RULE),
    "fltrust": (fltrust, FLTrust, AGGREGATION_RULE),
    "foolsgold": (foolsgold, FoolsGold, AGGREGATION_RULE),
    "geomed": (geomed, GeometricMedian, AGGREGATION_RULE),
    "krum": (krum, Krum, AGGREGATION_RULE),
    "loss-filter": (loss_filter, LossFilter, AGGREGATION_RULE),
    "median": (median, Median, AGGREGATION_RULE),
    "multikrum": (multikrum, MultiKrum, AGGREGATION_RULE),
    "nnm": (nnm, NearestNeighborMixing, PRE_AGGREGATOR),
    "norm-clip": (norm_clip, NormClip, PRE_AGGREGATOR),
    "rlr": (rlr, RobustLearningRate, AGGREGATION_RULE),
    "trimmed-mean": (trimmed_mean, TrimmedMean, AGGREGATION_RULE),
}


def sampler_and_log(n=10):
    sampler = PartitionSampler({pid: 100 + pid for pid in range(n)}, per_round=n, seed=0)
    return sampler, RoundLog(sampler.partition_of_node)


def test_discovery_finds_every_defense_module_ordered_by_name():
    specs = registered_defenses()
    assert [spec.name for spec in specs] == sorted(EXPECTED)
    for spec in specs:
        module, _, kind = EXPECTED[spec.name]
        assert spec is module.DEFENSE and isinstance(spec, DefenseSpec)
        assert spec.kind == kind and spec.summary and "\n" not in spec.summary
        assert module.__doc__ and module.__doc__.split("\n", 1)[0].strip()  # the paper on top


def test_shared_modules_register_nothing():
    import importlib
    import pkgutil

    names = {info.name for info in pkgutil.iter_modules(strategies.__path__)}
    shared = {name for name in names if getattr(importlib.import_module(f"strategies.{name}"), "DEFENSE", None) is None}
    assert shared == {
        "coordinatewise",
        "cosine",
        "distances",
        "lab",
        "mixing",
        "registry",
        "sampling",
        "spec",
        "weighted_average",
        "wrapping",
    }


def test_krum_f_is_one_setting_shared_by_krum_multikrum_and_bulyan():
    by_name = {spec.name: spec for spec in registered_defenses()}
    for name in ("krum", "multikrum", "bulyan"):
        assert any(setting is KRUM_F for setting in by_name[name].settings)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registry_builds_every_strategy(name):
    sampler, log = sampler_and_log()
    strategy = build_strategy(experiment_config({"strategy": name}), sampler, log, root_training=root_training)
    assert type(strategy) is LabStrategy
    assert type(strategy.defense) is EXPECTED[name][1]
    assert strategy.sampler is sampler and strategy.round_log is log
    assert strategy.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert strategy.defense.describe()


def test_the_device_setting_is_followed():
    sampler, log = sampler_and_log()
    assert build_strategy(experiment_config({"device": "cpu"}), sampler, log).device.type == "cpu"


def test_registry_passes_the_defense_settings():
    def defense(raw):
        return build_defense(experiment_config(raw))

    assert defense({"strategy": "krum", "num-malicious": 2}).num_byzantine == 2
    multi = defense({"strategy": "multikrum", "num-malicious": 2})
    assert (multi.num_byzantine, multi.keep) == (2, 8)
    multi_m = defense({"strategy": "multikrum", "krum-f": 3, "krum-m": 4})
    assert (multi_m.num_byzantine, multi_m.keep) == (3, 4)
    bulyan_rule = defense({"strategy": "bulyan", "krum-f": 1, "bulyan-selection": "multikrum"})
    assert (bulyan_rule.num_byzantine, bulyan_rule.selection) == (1, "multikrum")
    assert defense({"strategy": "bulyan"}).selection == "krum-repeated"
    assert defense({"strategy": "trimmed-mean", "trim-beta": 0.3}).beta == 0.3
    assert defense({"strategy": "loss-filter", "loss-percentile": 60}).percentile == 60.0
    assert defense({"strategy": "fedprox", "proximal-mu": 0.7}).train_config() == {"proximal-mu": 0.7}
    assert defense({"strategy": "fedavg"}).train_config() == {}
    assert defense({"strategy": "norm-clip", "clip-norm": 3}).clip_norm == 3.0
    assert defense({"strategy": "norm-clip"}).clip_norm is None


@pytest.mark.parametrize("wrap", CLIP_WRAPPABLE)
def test_norm_clip_wraps_every_other_registered_defense(wrap):
    sampler, log = sampler_and_log()
    strategy = build_strategy(
        experiment_config({"strategy": "norm-clip", "clip-wrap": wrap}), sampler, log, root_training=root_training
    )
    assert type(strategy.defense) is NormClip
    assert type(strategy.defense.inner) is EXPECTED[wrap][1]


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
