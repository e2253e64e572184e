"""Deployment helpers without a Flower runtime: certificates, node keys, connections, node configs,
a node's own data folder, and stopping process trees."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.supernode.register import try_load_public_key
from PIL import Image

from clients.targeting import POISON_RATE
from fl_poison.apps.node import NodeIdentity, config_for_node
from fl_poison.cli import main
from fl_poison.core.config import ConfigError
from fl_poison.core.data import DatasetInfo, node_data
from fl_poison.core.processes import descendants, start_process, stop_processes
from fl_poison.deploy.connection import write_connection
from fl_poison.deploy.local_trial import TrialPlan, supernode_command


def test_certificates_name_the_server_hosts_and_chain_to_the_ca(tmp_path: Path) -> None:
    assert (
        main(
            [
                "deploy",
                "certs",
                "--out",
                str(tmp_path),
                "--server-host",
                "10.0.0.5",
                "--server-host",
                "lab.example",
                "--nodes",
                "2",
            ]
        )
        == 0
    )
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for name in ("server", "node-0", "node-1"):
        certificate = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
        certificate.verify_directly_issued_by(ca)
        assert stat.S_IMODE((tmp_path / f"{name}.key").stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "lab.example" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"10.0.0.5", "127.0.0.1"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_node_keys_are_what_flower_reads(tmp_path: Path) -> None:
    assert main(["deploy", "keys", "--out", str(tmp_path), "--nodes", "2"]) == 0
    for index in range(2):
        private = load_ssh_private_key((tmp_path / f"node-{index}-auth.key").read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert try_load_public_key(tmp_path / f"node-{index}-auth.pub")  # what `flwr supernode register` does
        assert stat.S_IMODE((tmp_path / f"node-{index}-auth.key").stat().st_mode) == 0o600


def test_connection_is_read_by_flwr_and_keeps_the_local_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    (tmp_path / "ca.crt").write_text("placeholder")
    assert (
        main(
            [
                "deploy",
                "connection",
                "lab",
                "--address",
                "10.0.0.5:8000",
                "--root-certificates",
                str(tmp_path / "ca.crt"),
            ]
        )
        == 0
    )
    write_connection("closed-lab", "10.0.0.5:8000", None)
    lab = read_superlink_connection("lab")
    assert (lab.address, lab.root_certificates, lab.insecure) == ("10.0.0.5:8000", str(tmp_path / "ca.crt"), False)
    assert read_superlink_connection("closed-lab").insecure
    assert read_superlink_connection().name == "local"  # fl-poison run still uses the simulation SuperLink
    write_connection("lab", "10.0.0.6:8000", None, make_default=True)
    assert read_superlink_connection().address == "10.0.0.6:8000"
    with pytest.raises(ValueError, match="host:port"):
        write_connection("lab", "10.0.0.6", None)


def test_node_identity_from_partition_or_own_folder() -> None:
    assert NodeIdentity.from_node_config({"partition-id": 2, "num-partitions": 5}) == NodeIdentity(2, 5)
    own = NodeIdentity.from_node_config({"partition-id": 4, "data-path": "/data/site4", "malicious": True})
    assert own == NodeIdentity(4, 0, "/data/site4") and own.has_own_data
    with pytest.raises(ConfigError, match="missing num-partitions"):
        NodeIdentity.from_node_config({"partition-id": 2})
    with pytest.raises(ConfigError, match="missing partition-id"):
        NodeIdentity.from_node_config({"data-path": "/data"})
    with pytest.raises(ConfigError, match="unknown key malicous"):
        NodeIdentity.from_node_config({"partition-id": 2, "num-partitions": 5, "malicous": True})
    with pytest.raises(ConfigError, match="malicious: bad value"):
        NodeIdentity.from_node_config({"partition-id": 2, "num-partitions": 5, "malicious": "maybe"})


def test_node_identity_must_fit_the_run() -> None:
    config = config_for_node({"num-clients": 5}, {})
    NodeIdentity(4, 0, "/data").check_against(config)
    with pytest.raises(ConfigError, match="partition-id: bad value 5"):
        NodeIdentity(5, 0, "/data").check_against(config)
    with pytest.raises(ConfigError, match="num-clients"):
        NodeIdentity(1, 4).check_against(config)


def test_node_attack_settings_override_the_run() -> None:
    run = {"num-clients": 5, "attack": "none", "poison-rate": 0.5}
    config = config_for_node(
        run, {"partition-id": 1, "num-partitions": 5, "malicious": True, "attack": "badnets", "poison-rate": 0.9}
    )
    assert (config.attack, config[POISON_RATE], config.num_clients) == ("badnets", 0.9, 5)
    assert config.attacker_epochs is None
    longer = config_for_node(run, {"partition-id": 1, "num-partitions": 5, "malicious": True, "attacker-epochs": 4})
    assert longer.attacker_epochs == 4 and longer.local_epochs == config.local_epochs
    with pytest.raises(ConfigError, match="attacker-epochs: bad value"):
        config_for_node(run, {"attacker-epochs": 0})
    with pytest.raises(ConfigError, match="^node config attack: bad value"):
        config_for_node(run, {"attack": "bogus"})
    with pytest.raises(ConfigError, match="^attack: bad value"):
        config_for_node({**run, "attack": "bogus"}, {})


def write_image_folder(folder: Path, classes: list[int], shape: tuple[int, ...] = (8, 8)) -> None:
    rng = np.random.default_rng(0)
    for label in classes:
        (folder / "train" / str(label)).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode="L").save(
                folder / "train" / str(label) / f"{index}.png"
            )


@pytest.fixture
def private_hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))


def test_own_folder_keeps_numbered_classes(tmp_path: Path, private_hf_cache: None) -> None:
    write_image_folder(tmp_path / "site", [3, 7])
    data = node_data(str(tmp_path / "site"), "auto", "label", DatasetInfo(10, (1, 8, 8)))
    assert data.x.shape == (6, 1, 8, 8)
    assert sorted(set(data.y.tolist())) == [3, 7]
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0


def test_own_folder_with_a_single_class_keeps_its_labels(tmp_path: Path, private_hf_cache: None) -> None:
    write_image_folder(tmp_path / "site", [5])
    data = node_data(str(tmp_path / "site"), "auto", "label", DatasetInfo(10, (1, 8, 8)))
    assert data.y.tolist() == [5, 5, 5]


def test_own_folder_of_another_shape_is_refused(tmp_path: Path, private_hf_cache: None) -> None:
    write_image_folder(tmp_path / "site", [1, 2], shape=(28, 28))
    with pytest.raises(ConfigError, match=r"data-path: images .* shaped \(1, 28, 28\)"):
        node_data(str(tmp_path / "site"), "auto", "label", DatasetInfo(10, (1, 8, 8)))
    with pytest.raises(ConfigError, match="does not exist"):
        node_data(str(tmp_path / "missing"), "auto", "label", DatasetInfo(10, (1, 8, 8)))


def test_trial_node_configs_and_commands(tmp_path: Path) -> None:
    plan = TrialPlan(tmp_path, 3, malicious=(1,), data_paths={2: "/data/site2"}, malicious_config="attack='badnets'")
    assert plan.node_config(0) == "partition-id=0 num-partitions=3"
    assert plan.node_config(1) == "partition-id=1 num-partitions=3 malicious=true attack='badnets'"
    assert plan.node_config(2) == "partition-id=2 data-path='/data/site2'"
    command = supernode_command(plan, 9095, plan.node_config(0), tmp_path / "keys" / "node-0-auth.key")
    assert command[command.index("--root-certificates") + 1] == str(tmp_path / "certs" / "ca.crt")
    assert "--insecure" in supernode_command(
        TrialPlan(tmp_path, 1, secure=False), 9094, "partition-id=0 num-partitions=1"
    )


def test_stop_processes_reaches_children_in_their_own_session(tmp_path: Path) -> None:
    script = "import subprocess, time; subprocess.Popen(['sleep', '300'], start_new_session=True); time.sleep(300)"
    managed = start_process("parent", [sys.executable, "-c", script], tmp_path / "parent.log", dict(os.environ))
    deadline = time.monotonic() + 30
    while not descendants(managed.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = descendants(managed.pid)
    assert children
    stop_processes([managed], grace_seconds=5)
    assert managed.process.returncode is not None
    for pid, _ in children:
        result = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False)
        assert result.stdout.strip()[:1] in ("", "Z"), result.stdout  # gone, or a zombie not yet reaped


def test_trial_options_become_a_plan(tmp_path: Path) -> None:
    from fl_poison.cli import build_parser
    from fl_poison.deploy.commands import trial_plan

    arguments = build_parser().parse_args(
        [
            "deploy",
            "trial",
            "--nodes",
            "5",
            "--folder",
            str(tmp_path),
            "--malicious",
            "3",
            "--malicious-config",
            "attack='badnets'",
            "--data-path",
            f"4={tmp_path / 'site4'}",
            "--port",
            "8123",
        ]
    )
    plan = trial_plan(arguments)
    assert (plan.num_nodes, plan.malicious, plan.superlink_port, plan.secure) == (5, (3,), 8123, True)
    assert plan.node_config(4) == f"partition-id=4 data-path='{tmp_path / 'site4'}'"
    assert plan.node_config(3) == "partition-id=3 num-partitions=5 malicious=true attack='badnets'"
    assert plan.fork_client_apps
    no_fork = build_parser().parse_args(["deploy", "trial", "--nodes", "2", "--folder", str(tmp_path), "--no-fork"])
    assert not trial_plan(no_fork).fork_client_apps


def test_digits_folder_is_a_node_data_folder(tmp_path: Path, private_hf_cache: None) -> None:
    assert (
        main(
            ["deploy", "digits-folder", "--out", str(tmp_path / "site"), "--partition-id", "1", "--num-partitions", "3"]
        )
        == 0
    )
    data = node_data(str(tmp_path / "site"), "auto", "label", DatasetInfo(10, (1, 8, 8)))
    assert len(data) == len(list((tmp_path / "site" / "train").rglob("*.png")))
    assert sorted(set(data.y.tolist())) == list(range(10))
    assert (
        main(
            ["deploy", "digits-folder", "--out", str(tmp_path / "site"), "--partition-id", "1", "--num-partitions", "3"]
        )
        == 1
    )
