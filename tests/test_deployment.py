"""A real deployment on loopback: a SuperLink with TLS and node authentication and five SuperNodes.

One node is malicious by its own node config, one trains on its own data folder; the run is two
rounds of Krum (f = 1, so five clients per round) under BadNets. Two more SuperNodes, one with a
key the SuperLink does not know and one that trusts another CA, must be refused. Every process
is started in its own session and stopped by PID in the fixtures' teardown, even when a test
fails; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import read_rows

from fl_poison.core.processes import ManagedProcess, start_process, stop_processes
from fl_poison.core.ray_head import free_loopback_port
from fl_poison.deploy.certificates import write_certificates
from fl_poison.deploy.local_trial import TrialPlan, flower_environment, start_trial, supernode_command
from fl_poison.deploy.node_keys import write_node_key_pair
from fl_poison.deploy.sample_data import write_digits_folder
from fl_poison.launch import app_directory

pytestmark = pytest.mark.e2e

NUM_NODES = 5
NUM_ROUNDS = 2
MALICIOUS_NODE = 3
OWN_DATA_NODE = 4
RUN_SECONDS = 480
REFUSAL_SECONDS = 90


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrialPlan, dict[str, str]]]:
    """The SuperLink and five SuperNodes; yields the plan and the environment of ``flwr`` commands."""
    root = tmp_path_factory.mktemp("deployment")
    environment = flower_environment()
    environment.update(
        {
            "FLWR_HOME": str(root / "flwr_home"),
            "HF_DATASETS_CACHE": str(root / "hf_cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }
    )
    own_data = root / "site4"
    write_digits_folder(own_data, OWN_DATA_NODE, NUM_NODES)
    first_node_port = free_loopback_port()
    plan = TrialPlan(
        folder=root / "trial",
        num_nodes=NUM_NODES,
        secure=True,
        superlink_port=free_loopback_port(),
        first_node_port=first_node_port,
        connection="loopback",
        malicious=(MALICIOUS_NODE,),
        data_paths={OWN_DATA_NODE: str(own_data)},
        malicious_config="attack='badnets'",
    )
    processes = start_trial(plan, environment)
    try:
        yield plan, environment
    finally:
        stop_processes(processes)


@pytest.fixture
def extra_nodes() -> Iterator[list[ManagedProcess]]:
    """SuperNodes a test starts on top of the federation; all stopped afterwards."""
    started: list[ManagedProcess] = []
    try:
        yield started
    finally:
        stop_processes(started)


def run_status(run_id: str, plan: TrialPlan, environment: dict[str, str]) -> dict:
    listing = subprocess.run(
        ["flwr", "list", plan.connection, "--run-id", run_id, "--format", "json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(listing.stdout)["runs"][0]


def test_krum_under_badnets_across_tls_supernodes(federation, tmp_path: Path) -> None:
    plan, environment = federation
    settings = (
        f"num-clients={NUM_NODES} num-rounds={NUM_ROUNDS} strategy='krum' krum-f=1 attack='badnets' local-epochs=1 "
        f"seed=3 node-wait-timeout=120 output-dir='{tmp_path}' run-name='krum-badnets'"
    )
    started = time.monotonic()
    submitted = subprocess.run(
        ["flwr", "run", str(app_directory()), plan.connection, "--run-config", settings, "--format", "json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = str(json.loads(submitted.stdout)["run-id"])
    status: dict = {}
    while time.monotonic() - started < RUN_SECONDS:
        status = run_status(run_id, plan, environment)
        if status["status"].startswith("finished"):
            break
        time.sleep(2)
    else:
        subprocess.run(
            ["flwr", "stop", run_id, plan.connection], env=environment, capture_output=True, timeout=60, check=False
        )
    wall = time.monotonic() - started
    print(
        f"\n{NUM_ROUNDS}-round Krum run over TLS + node authentication with {NUM_NODES} SuperNodes: {wall:.1f} s wall time"
    )
    assert status.get("status") == "finished:completed", (
        f"{status}\n{(plan.folder / 'superlink.log').read_text()[-3000:]}"
    )

    folder = tmp_path / "krum-badnets"
    for name in ("config.json", "rounds.csv", "clients.csv", "summary.json", "model.pt", "update_norms.png"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["own_data_partitions"] == [OWN_DATA_NODE]
    rounds = read_rows(folder / "rounds.csv")
    assert [int(row["round"]) for row in rounds] == list(range(NUM_ROUNDS + 1))
    assert "asr" in rounds[-1]
    clients = read_rows(folder / "clients.csv")
    assert len(clients) == NUM_ROUNDS * NUM_NODES
    assert {int(row["partition_id"]) for row in clients} == set(range(NUM_NODES))
    assert {int(row["partition_id"]) for row in clients if row["malicious"] == "1"} == {MALICIOUS_NODE}
    assert all(row["attacked"] == "1" for row in clients if int(row["partition_id"]) == MALICIOUS_NODE)
    for server_round in map(str, range(1, NUM_ROUNDS + 1)):
        decisions = sorted(row["decision"] for row in clients if row["round"] == server_round)
        assert decisions == ["accepted"] + ["rejected"] * (NUM_NODES - 1), decisions
    summary = json.loads((folder / "summary.json").read_text())
    print(
        f"ServerApp wall_seconds {summary['wall_seconds']}, accuracy {summary['accuracy']:.3f}, asr {summary['asr']:.3f}"
    )
    seconds = [float(row["wall_seconds"]) for row in rounds]
    phases = json.loads((folder / "timings.json").read_text())["phases"]
    print(
        "round seconds (evaluation to evaluation): "
        + ", ".join(f"{later - earlier:.1f}" for earlier, later in zip(seconds, seconds[1:], strict=False))
        + "; ServerApp phases: "
        + ", ".join(f"{name} {phase['seconds']:.1f} s" for name, phase in phases.items())
    )


def wait_for_exit(node: ManagedProcess, timeout: float) -> int:
    """The exit code of ``node``, which must stop on its own within ``timeout`` seconds."""
    try:
        return node.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{node.name} still running after {timeout:g}s:\n{node.log_text()[-2000:]}")


def test_supernode_with_unregistered_key_is_refused(federation, extra_nodes, tmp_path: Path) -> None:
    plan, environment = federation
    write_node_key_pair(tmp_path / "stranger.key", tmp_path / "stranger.pub", "stranger")
    command = supernode_command(
        plan, free_loopback_port(), f"partition-id=0 num-partitions={NUM_NODES}", tmp_path / "stranger.key"
    )
    node = start_process("stranger", command, tmp_path / "stranger.log", environment)
    extra_nodes.append(node)
    assert wait_for_exit(node, REFUSAL_SECONDS) != 0
    assert "Failed to activate SuperNode" in node.log_text()


def test_supernode_trusting_another_ca_is_refused(federation, extra_nodes, tmp_path: Path) -> None:
    plan, environment = federation
    write_certificates(tmp_path / "other_ca", ["127.0.0.1"])
    command = supernode_command(
        plan,
        free_loopback_port(),
        f"partition-id=0 num-partitions={NUM_NODES}",
        plan.keys / "node-0-auth.key",
        root_certificates=tmp_path / "other_ca" / "ca.crt",
    )
    node = start_process("wrong-ca", command, tmp_path / "wrong-ca.log", environment)
    extra_nodes.append(node)
    assert wait_for_exit(node, REFUSAL_SECONDS) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in node.log_text()
