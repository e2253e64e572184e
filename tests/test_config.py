"""Settings: defaults, pyproject.toml parity, casting, validation messages and the fingerprint."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fl_poison.apps.algorithms import catalogue
from fl_poison.apps.algorithms import experiment_config as parse_config
from fl_poison.core.settings import ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SETTINGS = catalogue().settings()
DEFAULTS = {setting.key: setting.default for setting in SETTINGS}


def test_defaults_parse_to_the_declared_values():
    config = parse_config({})
    assert config.to_dict() == DEFAULTS
    assert config.dataset == "digits"
    assert config.num_clients == 10
    assert config.sampled_per_round == 10  # 1.0 = every client


def test_pyproject_run_config_matches_settings_exactly():
    with open(PYPROJECT, "rb") as stream:
        table = tomllib.load(stream)["tool"]["flwr"]["app"]["config"]
    assert set(table) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        # Same value and same type: clients-per-round 1 (one client) is not 1.0 (all clients).
        assert table[key] == default, key
        assert type(table[key]) is type(default), key


def test_pyproject_defaults_parse():
    with open(PYPROJECT, "rb") as stream:
        table = tomllib.load(stream)["tool"]["flwr"]["app"]["config"]
    assert parse_config(table).to_dict() == DEFAULTS


BAD_VALUES = [
    ("strategy", "fedavgx"),
    ("dataset", "nope"),
    ("dataset", "./does-not-exist"),
    ("partitioning", "x"),
    ("dirichlet-alpha", 0),
    ("dirichlet-alpha", -1),
    ("num-rounds", 0),
    ("local-epochs", 0),
    ("batch-size", 0),
    ("learning-rate", 0),
    ("optimizer", "x"),
    ("run-name", "a/b"),
    ("test-fraction", 1),
    ("test-fraction", 0),
    ("clients-per-round", 0),
    ("clients-per-round", 11),  # more than the 10 default clients
    ("clients-per-round", 1.5),
    ("num-clients", 0),
    ("seed", -1),
    ("num-rounds", 2.5),
    ("num-rounds", "twenty"),
    ("save-model", "maybe"),
    ("momentum", float("nan")),
]


def assert_one_line_naming(error: ConfigError, key: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.split(":")[0] == key, message


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_bad_value_raises_one_line_error_naming_the_key(key, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # './does-not-exist' must really not exist
    with pytest.raises(ConfigError) as caught:
        parse_config({key: value})
    assert_one_line_naming(caught.value, key)
    assert repr(value) in str(caught.value) or str(value) in str(caught.value)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as caught:
        parse_config({"num-round": 3})
    assert_one_line_naming(caught.value, "num-round")


def test_clients_per_round_more_than_num_clients():
    with pytest.raises(ConfigError) as caught:
        parse_config({"num-clients": 4, "clients-per-round": 5})
    assert_one_line_naming(caught.value, "clients-per-round")
    assert parse_config({"num-clients": 5, "clients-per-round": 5}).sampled_per_round == 5


def test_local_dataset_folder_is_accepted_as_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_config({"dataset": "./data"}).dataset == str(tmp_path / "data")


@pytest.mark.parametrize(
    ("given", "num_clients", "expected"),
    [
        (5, 10, 5),
        ("5", 10, 5),
        (0.5, 10, 5),
        ("0.5", 10, 5),
        (1.0, 10, 10),
        (1.0, 7, 7),
        (0.3, 10, 3),
        (0.01, 10, 1),  # a fraction never rounds down to zero clients
        (1, 10, 1),  # the integer 1 is a count, not "all"
        (3.0, 10, 3),  # a whole float above 1 is a count
    ],
)
def test_clients_per_round_count_or_fraction(given, num_clients, expected):
    config = parse_config({"clients-per-round": given, "num-clients": num_clients})
    assert config.sampled_per_round == expected


def test_string_values_are_cast():
    config = parse_config(
        {
            "num-rounds": "20",
            "learning-rate": "0.01",
            "save-model": "false",
            "seed": " 7 ",
            "strategy": "FedProx",
            "dataset": "MNIST",
        }
    )
    assert config.num_rounds == 20 and type(config.num_rounds) is int
    assert config.learning_rate == 0.01 and type(config.learning_rate) is float
    assert config.save_model is False
    assert config.seed == 7
    assert config.strategy == "fedprox"
    assert config.dataset == "mnist"


def test_hub_id_is_kept_verbatim():
    assert parse_config({"dataset": "uoft-cs/cifar10"}).dataset == "uoft-cs/cifar10"


def test_fingerprint_is_stable_and_ignores_where_results_go():
    base = parse_config({"seed": 3, "num-rounds": 4})
    same = parse_config({"num-rounds": 4, "seed": 3})  # other key order
    moved = parse_config({"seed": 3, "num-rounds": 4, "output-dir": "/elsewhere", "run-name": "named"})
    assert base.fingerprint() == same.fingerprint() == moved.fingerprint()
    assert len(base.fingerprint()) == 8
    int(base.fingerprint(), 16)  # hex
    assert parse_config({"seed": 4, "num-rounds": 4}).fingerprint() != base.fingerprint()
    assert parse_config({"seed": 3, "num-rounds": 5}).fingerprint() != base.fingerprint()


def test_fingerprint_is_the_same_in_another_process():
    code = (
        "from fl_poison.apps.algorithms import experiment_config; print(experiment_config({'seed': 3}).fingerprint())"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert other.stdout.strip() == parse_config({"seed": 3}).fingerprint()


def test_a_parsed_configuration_is_remembered_but_types_are_not_confused():
    assert parse_config({"seed": 3}) is parse_config({"seed": 3})
    assert parse_config({"clients-per-round": 1}).sampled_per_round == 1
    assert parse_config({"clients-per-round": 1.0}).sampled_per_round == 10
    assert parse_config({"clients-per-round": 1}).sampled_per_round == 1


def _v1_fingerprint(config) -> str:
    """The first fingerprint rule, transcribed: every v1 setting, none added since, as sorted JSON."""
    import hashlib
    import json

    from fl_poison.core.config import FINGERPRINT_V1_KEYS

    values = {
        key: value
        for key, value in config.to_dict().items()
        if key in FINGERPRINT_V1_KEYS and key not in ("output-dir", "run-name")
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def test_settings_added_since_v1_leave_a_cell_id_unchanged_until_set():
    from fl_poison.core.config import FINGERPRINT_V1_KEYS

    added = sorted(set(DEFAULTS) - FINGERPRINT_V1_KEYS)
    assert "train-rows" in added  # one added after v1: the rule below is exercised
    base = parse_config({"seed": 3, "num-rounds": 5})
    assert base.fingerprint() == _v1_fingerprint(base)
    # The cells of a sweep run before the settings were added (ids written by the v1 rule) keep their ids.
    import csv

    from experiments.sweep import expand_sweep, load_sweep

    root = PYPROJECT.parent
    base_settings, grids = load_sweep(root / "experiments/sweeps/weight-inflation.toml", {})
    with open(root / "experiments/results/weight-inflation/sweep.csv", newline="") as stream:
        recorded = {row["cell_id"] for row in csv.DictReader(stream)}
    assert len(recorded) == 60
    assert {cell.cell_id for cell in expand_sweep(base_settings, grids)} == recorded
    assert parse_config({"seed": 3, "num-rounds": 5, "train-rows": 0}).fingerprint() == base.fingerprint()
    assert parse_config({"seed": 3, "num-rounds": 5, "train-rows": 100}).fingerprint() != base.fingerprint()
