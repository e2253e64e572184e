"""A SuperLink and N SuperNodes on this machine: a rehearsal of a deployment across machines.

With ``secure`` (the default) the trial does what an operator does on real machines: it creates a
CA and certificates (:mod:`fl_poison.deploy.certificates`) and node keys
(:mod:`fl_poison.deploy.node_keys`), starts the SuperLink with TLS and node authentication,
writes the ``flwr`` connection (:mod:`fl_poison.deploy.connection`), registers every node's
public key with ``flwr supernode register`` and starts the SuperNodes, each with its own
ClientAppIo port and node config (``partition-id``, ``num-partitions``, plus ``malicious=true``
or ``data-path`` where asked). Without ``secure`` everything runs with ``--insecure``.
With ``fork_client_apps`` (the default) every SuperNode runs with ``--isolation process`` beside a
:mod:`fl_poison.forking_executor`, which starts each ClientApp process by forking a parent
that has imported torch and Flower's client runtime once, with torch's threads set to the node's
share of this machine's cores; without it Flower's own SuperExec starts a fresh ``flwr-clientapp``
per message with torch's defaults.
Every process runs in its own session with a log file in the trial folder; stop them with
:func:`fl_poison.core.processes.stop_processes`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fl_poison.core.processes import ManagedProcess, start_process, stop_processes, wait_for_log
from fl_poison.core.ray_head import address_answers
from fl_poison.deploy.certificates import write_certificates
from fl_poison.deploy.connection import write_connection
from fl_poison.deploy.node_keys import write_node_keys
from fl_poison.forking_executor import command_line as executor_command
from fl_poison.launch import FLOWER_ENVIRONMENT

STARTUP_SECONDS = 60.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class TrialPlan:
    """What to start.

    Attributes
    ----------
    folder : Path
        Receives ``certs/``, ``keys/`` and one log file per process.
    num_nodes : int
        SuperNodes to start; node ``i`` gets ``partition-id=i num-partitions=num_nodes``.
    secure : bool
        TLS and node authentication (True) or ``--insecure`` everywhere (False).
    superlink_port : int
        The SuperLink's one HTTP port (Fleet, Control and ServerAppIo APIs).
    first_node_port : int
        ClientAppIo port of node 0; node ``i`` uses ``first_node_port + i``.
    connection : str
        Name of the ``flwr`` connection written for the trial (``flwr run . <connection>``).
    malicious : tuple[int, ...]
        Nodes whose node config says ``malicious=true``.
    data_paths : Mapping[int, str]
        Nodes that train on their own data folder (``data-path``) instead of a partition.
    extra_node_config : str
        Appended to every node's node config.
    malicious_config : str
        Appended to the node config of the malicious nodes (attack settings of their own, e.g.
        ``attack="badnets" poison-rate=0.8``).
    fork_client_apps : bool
        Run the nodes with ``--isolation process`` and one forking executor each (True), or let
        each node's own SuperExec start every ClientApp process afresh (False).
    """

    folder: Path
    num_nodes: int
    secure: bool = True
    superlink_port: int = 8000
    first_node_port: int = 9094
    connection: str = "fl-poison-trial"
    malicious: tuple[int, ...] = ()
    data_paths: Mapping[int, str] = field(default_factory=dict)
    extra_node_config: str = ""
    malicious_config: str = ""
    fork_client_apps: bool = True

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink."""
        return f"{LOOPBACK}:{self.superlink_port}"

    @property
    def certs(self) -> Path:
        """Folder of the CA and server certificates."""
        return self.folder / "certs"

    @property
    def keys(self) -> Path:
        """Folder of the node key pairs."""
        return self.folder / "keys"

    def node_config(self, index: int) -> str:
        """The ``--node-config`` value of node ``index``."""
        parts = [f"partition-id={index}"]
        if index in self.data_paths:
            parts.append(f"data-path={_toml_string(str(self.data_paths[index]))}")
        else:
            parts.append(f"num-partitions={self.num_nodes}")
        if index in self.malicious:
            parts.append("malicious=true")
            parts.append(self.malicious_config)
        parts.append(self.extra_node_config)
        return " ".join(part for part in parts if part)


def _toml_string(value: str) -> str:
    """``value`` as a TOML literal string (node configs are parsed as TOML)."""
    if "'" in value:
        raise ValueError(f"a path with a single quote cannot go into a node config: {value!r}")
    return f"'{value}'"


def flower_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with :data:`fl_poison.launch.FLOWER_ENVIRONMENT` over it."""
    return {**(os.environ if base is None else base), **FLOWER_ENVIRONMENT}


def superlink_command(plan: TrialPlan) -> list[str]:
    """The ``flower-superlink`` command line of the trial."""
    security = (
        [
            "--ssl-ca-certfile",
            str(plan.certs / "ca.crt"),
            "--ssl-certfile",
            str(plan.certs / "server.crt"),
            "--ssl-keyfile",
            str(plan.certs / "server.key"),
            "--enable-supernode-auth",
        ]
        if plan.secure
        else ["--insecure"]
    )
    return [
        "flower-superlink",
        *security,
        "--host",
        LOOPBACK,
        "--port",
        str(plan.superlink_port),
        "--disable-runtime-dependency-installation",
    ]


def supernode_command(
    plan: TrialPlan, port: int, node_config: str, private_key: Path | None = None, root_certificates: Path | None = None
) -> list[str]:
    """A ``flower-supernode`` command line connecting to the trial's SuperLink.

    Parameters
    ----------
    plan : TrialPlan
        The trial (address, security).
    port : int
        The node's ClientAppIo port (one per SuperNode on a host).
    node_config : str
        The ``--node-config`` value.
    private_key : Path | None
        The node's authentication key (secure trials).
    root_certificates : Path | None
        The CA certificate to check the SuperLink with; default the trial's ``ca.crt``.
    """
    command = ["flower-supernode", "--superlink", plan.address, "--port", str(port), "--node-config", node_config]
    if plan.fork_client_apps:
        command += ["--isolation", "process"]
    if not plan.secure:
        return [*command, "--insecure"]
    command += ["--root-certificates", str(root_certificates or plan.certs / "ca.crt")]
    if private_key is not None:
        command += ["--auth-supernode-private-key", str(private_key)]
    return command


def wait_for_port(port: int, process: ManagedProcess, timeout: float = STARTUP_SECONDS) -> None:
    """Wait until something accepts TCP connections on ``127.0.0.1:port``; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while not address_answers(f"{LOOPBACK}:{port}"):
        if process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited with code {process.process.returncode}; see {process.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not open port {port} within {timeout:g}s; see {process.log_path}")
        time.sleep(0.3)


def register_node(plan: TrialPlan, public_key: Path, environment: Mapping[str, str]) -> None:
    """``flwr supernode register PUBLIC_KEY <connection>`` (bounded in time; fails on an error)."""
    completed = subprocess.run(
        ["flwr", "supernode", "register", str(public_key), plan.connection],
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"flwr supernode register {public_key} failed: {(completed.stdout + completed.stderr).strip()}"
        )


def start_trial(plan: TrialPlan, environment: Mapping[str, str] | None = None) -> list[ManagedProcess]:
    """Prepare the credentials, start the SuperLink and the SuperNodes; return the processes.

    On any failure the processes started so far are stopped before the error propagates.

    Parameters
    ----------
    plan : TrialPlan
        What to start.
    environment : Mapping[str, str] | None
        Environment of every process and ``flwr`` command (``FLWR_HOME`` decides where the
        connection is written); default this process's, with dependency installation off.
    """
    if plan.num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {plan.num_nodes}")
    if any(not 0 <= index < plan.num_nodes for index in [*plan.malicious, *plan.data_paths]):
        raise ValueError(f"malicious and data-path nodes must be in 0 .. {plan.num_nodes - 1}")
    if shutil.which("flower-superlink") is None:
        raise RuntimeError("flower-superlink is not on PATH; install the project (pip install -e .)")
    environment = flower_environment(environment)
    plan.folder.mkdir(parents=True, exist_ok=True)
    public_keys: list[Path] = []
    if plan.secure:
        write_certificates(plan.certs, [LOOPBACK, "localhost"])
        public_keys = write_node_keys(plan.keys, plan.num_nodes)
    processes: list[ManagedProcess] = []
    nodes: list[ManagedProcess] = []
    threads = max(1, (os.cpu_count() or 1) // plan.num_nodes)
    try:
        superlink = start_process("superlink", superlink_command(plan), plan.folder / "superlink.log", environment)
        processes.append(superlink)
        wait_for_port(plan.superlink_port, superlink)
        write_connection(
            plan.connection,
            plan.address,
            plan.certs / "ca.crt" if plan.secure else None,
            home=Path(environment["FLWR_HOME"]).expanduser() if environment.get("FLWR_HOME") else None,
        )
        for public_key in public_keys:
            register_node(plan, public_key, environment)
        for index in range(plan.num_nodes):
            key = plan.keys / f"node-{index}-auth.key" if plan.secure else None
            command = supernode_command(plan, plan.first_node_port + index, plan.node_config(index), key)
            node = start_process(f"supernode-{index}", command, plan.folder / f"supernode-{index}.log", environment)
            processes.append(node)
            nodes.append(node)
            if plan.fork_client_apps:
                executor = executor_command(f"{LOOPBACK}:{plan.first_node_port + index}", threads=threads)
                processes.append(
                    start_process(f"executor-{index}", executor, plan.folder / f"executor-{index}.log", environment)
                )
        for node in nodes:
            wait_for_log(node, "SuperNode ID", STARTUP_SECONDS)
    except BaseException:
        stop_processes(processes)
        raise
    return processes
