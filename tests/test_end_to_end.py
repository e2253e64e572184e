"""End-to-end runs on digits through the real Flower runtime (SuperLink + simulation engine).

The runs go through the session's warm runtime (``warm_env``), except the second run of
the same-seed check, which goes through an ordinary SuperLink (``flower_env``), the path a plain
``fl-poison run`` takes: both paths must give the same results.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import RUN_TIMEOUT, fl_poison_run, read_rows

from fl_poison.core.provenance import processor_description, source_fingerprint
from fl_poison.launch import app_directory

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fedavg_run(warm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-round FedAvg run with 4 IID clients; returns its result folder."""
    out = tmp_path_factory.mktemp("runs")
    completed = fl_poison_run(
        warm_env, "num-clients=4", "num-rounds=6", "seed=7", f"output-dir={out}", "run-name=first"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    folder = Path(completed.stdout.strip().splitlines()[-1])
    assert folder == out / "first"
    return folder


def test_run_writes_every_result_file(fedavg_run: Path) -> None:
    for name in (
        "config.json",
        "rounds.csv",
        "clients.csv",
        "summary.json",
        "model.pt",
        "accuracy_loss.png",
        "flower.log",
        "timings.json",
    ):
        assert (fedavg_run / name).is_file(), name
    config = json.loads((fedavg_run / "config.json").read_text())
    assert config["settings"]["num-clients"] == 4
    assert config["versions"]["flwr"].startswith("1.")
    assert config["source"] == source_fingerprint()  # the run executed this checkout's code
    assert config["processor"] == processor_description()  # on this machine's processor
    rounds = read_rows(fedavg_run / "rounds.csv")
    assert [int(row["round"]) for row in rounds] == list(range(7))
    clients = read_rows(fedavg_run / "clients.csv")
    assert len(clients) == 6 * 4
    assert {int(row["partition_id"]) for row in clients} == {0, 1, 2, 3}
    assert all(row["status"] == "ok" and float(row["norm_before"]) > 0 for row in clients)
    timings = json.loads((fedavg_run / "timings.json").read_text())
    phases = timings["phases"]
    assert {"setup", "nodes", "train", "aggregate", "evaluate", "finish"} <= set(phases)
    assert phases["train"]["count"] == phases["aggregate"]["count"] == 6
    assert phases["evaluate"]["count"] == 7  # round 0 and every round
    summary = json.loads((fedavg_run / "summary.json").read_text())
    assert sum(phase["seconds"] for phase in phases.values()) <= timings["elapsed_seconds"]
    assert timings["elapsed_seconds"] >= summary["wall_seconds"]


def test_run_learns_well_above_chance(fedavg_run: Path) -> None:
    summary = json.loads((fedavg_run / "summary.json").read_text())
    assert summary["rounds"] == 6
    assert summary["accuracy"] > 0.8  # chance is 0.1 on ten digit classes
    assert summary["kappa"] > 0.75
    rounds = read_rows(fedavg_run / "rounds.csv")
    assert float(rounds[-1]["accuracy"]) == pytest.approx(summary["accuracy"])
    assert float(rounds[0]["accuracy"]) < 0.3  # the untrained model


def test_same_seed_gives_identical_metrics_through_an_ordinary_superlink(
    fedavg_run: Path, flower_env: dict[str, str]
) -> None:
    out = fedavg_run.parent
    completed = fl_poison_run(
        flower_env, "num-clients=4", "num-rounds=6", "seed=7", f"output-dir={out}", "run-name=second"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    first = read_rows(fedavg_run / "rounds.csv")
    second = read_rows(out / "second" / "rounds.csv")
    for a, b in zip(first, second, strict=True):
        for column in a:
            if column != "wall_seconds":
                assert a[column] == b[column], column


def test_fedprox_with_partial_participation(warm_env: dict[str, str], tmp_path: Path) -> None:
    completed = fl_poison_run(
        warm_env,
        "strategy=fedprox",
        "proximal-mu=0.1",
        "partitioning=dirichlet",
        "num-clients=5",
        "clients-per-round=2",
        "num-rounds=3",
        f"output-dir={tmp_path}",
        "run-name=prox",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    clients = read_rows(tmp_path / "prox" / "clients.csv")
    per_round = {}
    for row in clients:
        per_round.setdefault(row["round"], set()).add(int(row["partition_id"]))
    assert sorted(per_round) == ["1", "2", "3"]
    assert all(len(ids) == 2 for ids in per_round.values())


def test_flwr_run_with_a_bad_setting_fails_with_its_message(warm_env: dict[str, str], tmp_path: Path) -> None:
    """Plain ``flwr run`` takes the same keys; a bad value fails the run with the one-line message."""
    completed = subprocess.run(
        [
            "flwr",
            "run",
            str(app_directory()),
            "--run-config",
            f"strategy='fedavgx' output-dir='{tmp_path}'",
            "--federation-config",
            "num-supernodes=2",
            "--format",
            "json",
        ],
        env=warm_env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    run_id = str(json.loads(completed.stdout)["run-id"])
    status = {}
    for _ in range(120):
        listing = subprocess.run(
            ["flwr", "list", "--run-id", run_id, "--format", "json"],
            env=warm_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        status = json.loads(listing.stdout)["runs"][0]
        if status["status"].startswith("finished"):
            break
        subprocess.run(["sleep", "1"], check=False)
    assert status["status"] == "finished:failed"
    assert "strategy: bad value 'fedavgx'" in status["status-details"]
    assert list(tmp_path.iterdir()) == []
