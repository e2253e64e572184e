"""The fl-poison command line: KEY=VALUE parsing, TOML literals, validation before any run."""

from __future__ import annotations

import math

import pytest

from fl_poison import launch
from fl_poison.apps.algorithms import catalogue
from fl_poison.cli import main
from fl_poison.core.settings import ConfigError, toml_literal
from fl_poison.launch import parse_assignments, parse_value
from fl_poison.warm_runtime import FORK_BY_DEFAULT

SETTINGS = catalogue().settings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fedprox", "fedprox"),  # a bare word is a string
        ("20", 20),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        ("true", True),
        ("false", False),
        ('"x"', "x"),
        ('"20"', "20"),  # quoted stays a string
        ("'single'", "single"),
        ("/tmp/some path", "/tmp/some path"),
        ("owner/name", "owner/name"),
        ("", ""),
    ],
)
def test_parse_value(raw, expected):
    value = parse_value(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_assignments_types_and_keys():
    parsed = parse_assignments(
        ["num-rounds=20", "strategy=fedprox", "learning-rate=0.5", "save-model=true", 'run-name="a b"', " seed = 3 "]
    )
    assert parsed == {
        "num-rounds": 20,
        "strategy": "fedprox",
        "learning-rate": 0.5,
        "save-model": True,
        "run-name": "a b",
        "seed": 3,
    }
    assert type(parsed["num-rounds"]) is int and type(parsed["learning-rate"]) is float


def test_parse_assignments_splits_on_the_first_equals_only():
    assert parse_assignments(["run-name=a=b"]) == {"run-name": "a=b"}


@pytest.mark.parametrize("item", ["num-rounds", "=5", ""])
def test_item_without_key_value_raises(item):
    with pytest.raises(ConfigError) as caught:
        parse_assignments([item])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "fedavg",
        'with "quotes" and \\ backslash',
        "tab\there",
        "line\nbreak",
        "",
        "20",
        "true",
        "/tmp/a folder/data",
        "ä",
        "emoji 😀",  # beyond U+FFFF: JSON's surrogate-pair escapes are not valid TOML
        "del\x7f",  # TOML requires DEL escaped
        0,
        20,
        -7,
        0.5,
        1e-5,
        1e20,
        600.0,
        True,
        False,
    ],
)
def test_toml_literal_round_trips_through_parse_value(value):
    back = parse_value(toml_literal(value))
    assert back == value
    assert type(back) is type(value)


def test_toml_literal_of_special_floats():
    assert parse_value(toml_literal(float("inf"))) == float("inf")
    assert math.isnan(parse_value(toml_literal(float("nan"))))


def test_toml_literal_of_every_default_round_trips():
    for setting in SETTINGS:
        back = parse_value(toml_literal(setting.default))
        assert back == setting.default and type(back) is type(setting.default), setting.key


def test_run_with_bad_setting_fails_before_anything_runs(tmp_path, capsys, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("flwr must not be started for an invalid config")

    monkeypatch.setattr(launch, "follow", must_not_run)
    monkeypatch.setattr(launch.subprocess, "Popen", must_not_run)
    monkeypatch.setattr(launch.subprocess, "run", must_not_run)
    output = tmp_path / "out"

    code = main(["run", "strategy=fedavgx", f"output-dir={output}"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "strategy" in lines[0] and "fedavgx" in lines[0]
    assert not output.exists()


def test_run_with_malformed_item_fails_with_code_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch, "follow", lambda *a, **k: pytest.fail("flwr must not be started"))
    code = main(["run", "num-rounds", f"output-dir={tmp_path / 'out'}"])
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1
    assert "num-rounds" in captured.err
    assert not (tmp_path / "out").exists()


def test_settings_lists_every_key_with_its_default(capsys):
    assert main(["settings"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(SETTINGS)
    by_key = {line.split()[0]: line for line in lines}
    assert set(by_key) == {setting.key for setting in SETTINGS}
    for setting in SETTINGS:
        assert by_key[setting.key].split()[1] == toml_literal(setting.default) or setting.default == ""


@pytest.mark.parametrize(("extra", "forks"), [([], FORK_BY_DEFAULT), (["--no-fork"], False)])
def test_sweep_and_runtime_pass_no_fork_on(monkeypatch, tmp_path, extra, forks):
    import experiments.sweep
    from fl_poison import warm_runtime

    asked: dict[str, object] = {}

    class Table:
        rows: dict[str, dict[str, str]] = {}
        path = tmp_path / "sweep.csv"

    def fake_sweep(*args, **kwargs):
        asked["sweep"] = kwargs["fork_simulations"]
        return Table()

    def fake_serve(emit, fork_simulations):
        asked["runtime"] = fork_simulations
        return 0

    monkeypatch.setattr(experiments.sweep, "run_sweep", fake_sweep)
    monkeypatch.setattr(warm_runtime, "serve", fake_serve)
    assert main(["sweep", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "out"), *extra]) == 0
    assert main(["runtime", *extra]) == 0
    assert asked == {"sweep": forks, "runtime": forks}


def test_the_command_line_parser_imports_no_scikit_learn():
    """Every ``fl-poison`` command builds the whole parser (the audit's options show their defaults):
    the audit modules it reads them from must not import scikit-learn (seconds on a busy machine) at
    import time, only when an audit clusters or scores."""
    import subprocess
    import sys

    probe = (
        "import sys; from fl_poison.cli import build_parser; build_parser(); "
        "print(sorted(name for name in ('sklearn', 'scipy', 'pandas') if name in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"
