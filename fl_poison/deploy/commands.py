"""``fl-poison deploy ...``: the command-line side of :mod:`fl_poison.deploy`.

``certs`` writes a CA and TLS certificates, ``keys`` node authentication key pairs,
``connection`` a ``flwr`` connection, ``digits-folder`` a node data folder to try ``data-path``
with, ``executor`` serves a SuperNode's ClientApp tasks from forked processes
(:mod:`fl_poison.forking_executor`), and ``trial`` starts a SuperLink and N SuperNodes on
this machine until Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from flwr.common.config import parse_config_args

from fl_poison.apps.node import refuse_server_side_attack
from fl_poison.core.processes import ManagedProcess, stop_processes
from fl_poison.deploy.certificates import write_certificates
from fl_poison.deploy.connection import write_connection
from fl_poison.deploy.local_trial import TrialPlan, start_trial
from fl_poison.deploy.node_keys import write_node_keys
from fl_poison.deploy.sample_data import write_digits_folder
from fl_poison.forking_executor import add_arguments as add_executor_arguments
from fl_poison.forking_executor import run_executor, settings_from


def add_deploy_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and its sub-commands to the ``fl-poison`` parser."""
    deploy = commands.add_parser(
        "deploy", help="helpers to run across machines: certificates, node keys, connection, local trial"
    )
    actions = deploy.add_subparsers(dest="deploy_command", required=True)

    certs = actions.add_parser("certs", help="create a CA, a SuperLink TLS certificate and SuperNode certificates")
    certs.add_argument(
        "--out", type=Path, required=True, help="folder for ca.crt/.key, server.crt/.key, node-<i>.crt/.key"
    )
    certs.add_argument(
        "--server-host",
        action="append",
        required=True,
        metavar="HOST",
        help="a host name or IP address nodes use to reach the SuperLink (repeat for several; loopback is always added)",
    )
    certs.add_argument(
        "--nodes", type=int, default=0, help="SuperNode certificates for their ClientAppIo API (default 0)"
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (default 365)")

    keys = actions.add_parser("keys", help="create node authentication key pairs (ECDSA P-384, OpenSSH format)")
    keys.add_argument("--out", type=Path, required=True, help="folder for node-<i>-auth.key and node-<i>-auth.pub")
    keys.add_argument("--nodes", type=int, required=True, help="number of key pairs")

    connection = actions.add_parser("connection", help="write a SuperLink connection into $FLWR_HOME/config.toml")
    connection.add_argument("name", help="connection name, used as `flwr run . NAME`")
    connection.add_argument("--address", required=True, help="SuperLink host:port, e.g. 10.0.0.5:8000")
    security = connection.add_mutually_exclusive_group(required=True)
    security.add_argument("--root-certificates", type=Path, help="the CA certificate (ca.crt) for TLS")
    security.add_argument("--insecure", action="store_true", help="no TLS (a closed lab only)")
    connection.add_argument("--default", action="store_true", help="also make it the default connection")

    digits = actions.add_parser(
        "digits-folder", help="write one partition of digits as an image folder (a node's own data)"
    )
    digits.add_argument("--out", type=Path, required=True, help="the new folder (train/<class>/<i>.png)")
    digits.add_argument("--partition-id", type=int, required=True, help="which partition")
    digits.add_argument("--num-partitions", type=int, required=True, help="into how many partitions digits is divided")

    executor = actions.add_parser(
        "executor",
        help="run a SuperNode's ClientApp tasks in processes forked from a preloaded parent "
        "(start the node with --isolation process)",
    )
    add_executor_arguments(executor)

    trial = actions.add_parser("trial", help="start a SuperLink and N SuperNodes on this machine until Ctrl-C")
    trial.add_argument("--nodes", type=int, required=True, help="number of SuperNodes (node i gets partition-id=i)")
    trial.add_argument(
        "--folder", type=Path, default=Path("trial"), help="certificates, keys and logs (default ./trial)"
    )
    trial.add_argument("--insecure", action="store_true", help="no TLS and no node authentication")
    trial.add_argument(
        "--no-fork",
        action="store_true",
        help="let each node's own SuperExec start every ClientApp process afresh instead of forking "
        "it from a preloaded executor (slower; Flower's default)",
    )
    trial.add_argument("--port", type=int, default=8000, help="the SuperLink's HTTP port (default 8000)")
    trial.add_argument(
        "--node-port", type=int, default=9094, help="ClientAppIo port of node 0; node i uses it + i (default 9094)"
    )
    trial.add_argument(
        "--connection", default="fl-poison-trial", help="name of the flwr connection written (default fl-poison-trial)"
    )
    trial.add_argument(
        "--malicious",
        default="",
        metavar="IDS",
        help='nodes declared malicious by their node config, e.g. "3" or "3,4"',
    )
    trial.add_argument(
        "--malicious-config",
        default="",
        metavar="KEY=VALUE ...",
        help="attack settings of the malicious nodes, e.g. \"attack='badnets'\"",
    )
    trial.add_argument(
        "--data-path",
        action="append",
        default=[],
        metavar="ID=FOLDER",
        help="node ID trains on its own FOLDER (repeatable)",
    )


def deploy_command(arguments: argparse.Namespace) -> int:
    """Run the ``deploy`` sub-command in ``arguments``; returns the exit code."""
    try:
        if arguments.deploy_command == "certs":
            for path in write_certificates(arguments.out, arguments.server_host, arguments.nodes, arguments.days):
                print(path)
        elif arguments.deploy_command == "keys":
            if arguments.nodes < 1:
                raise ValueError("--nodes: bad value; allowed: an integer >= 1")
            for public_key in write_node_keys(arguments.out, arguments.nodes):
                print(public_key.with_suffix(".key"))
                print(public_key)
        elif arguments.deploy_command == "digits-folder":
            if not 0 <= arguments.partition_id < arguments.num_partitions:
                raise ValueError("--partition-id: bad value; allowed: 0 .. --num-partitions - 1")
            count = write_digits_folder(arguments.out, arguments.partition_id, arguments.num_partitions)
            print(f"{count} images in {arguments.out.resolve() / 'train'}")
        elif arguments.deploy_command == "executor":
            return run_executor(settings_from(arguments))
        elif arguments.deploy_command == "connection":
            root = None if arguments.insecure else arguments.root_certificates
            print(write_connection(arguments.name, arguments.address, root, arguments.default))
        else:
            return trial_command(trial_plan(arguments))
    except (ValueError, RuntimeError, OSError) as error:
        print(f"fl-poison: error: {error}", file=sys.stderr)
        return 1
    return 0


def trial_plan(arguments: argparse.Namespace) -> TrialPlan:
    """The :class:`TrialPlan` the ``trial`` options describe."""
    malicious = tuple(int(part) for part in arguments.malicious.split(",") if part.strip())
    data_paths: dict[int, str] = {}
    for item in arguments.data_path:
        index, separator, folder = item.partition("=")
        if not separator or not index.strip().isdigit() or not folder:
            raise ValueError(f"--data-path {item!r}: expected ID=FOLDER, e.g. 4=/data/site4")
        data_paths[int(index)] = str(Path(folder).expanduser().resolve())
    if arguments.malicious_config.strip():
        try:
            node_settings = parse_config_args([arguments.malicious_config])
        except ValueError as error:
            raise ValueError(f"--malicious-config: {error}") from None
        refuse_server_side_attack(node_settings)
    return TrialPlan(
        folder=arguments.folder.resolve(),
        num_nodes=arguments.nodes,
        secure=not arguments.insecure,
        superlink_port=arguments.port,
        first_node_port=arguments.node_port,
        connection=arguments.connection,
        malicious=malicious,
        data_paths=data_paths,
        malicious_config=arguments.malicious_config,
        fork_client_apps=not arguments.no_fork,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def trial_command(plan: TrialPlan) -> int:
    """Start the trial, print its processes and the ``flwr run`` line, and stop everything on Ctrl-C.

    SIGINT, SIGTERM and SIGHUP all stop the trial (SIGINT explicitly: a shell that starts the
    command in the background makes it ignore SIGINT).
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    processes: list[ManagedProcess] = []
    try:
        processes = start_trial(plan)
        for managed in processes:
            print(f"{managed.name:<14} pid {managed.pid:<8} log {managed.log_path}", flush=True)
        print(
            f"\nready: connection '{plan.connection}' ({'TLS + node authentication' if plan.secure else 'insecure'}). "
            f"In another terminal, from the repository:\n"
            f'  flwr run . {plan.connection} --stream --run-config "num-clients={plan.num_nodes} '
            f"output-dir='{Path.cwd() / 'results'}'\"\n"
            f"Results are written there by the ServerApp; `flwr list {plan.connection}` shows the run's status.\n"
            "Ctrl-C here stops every process.",
            flush=True,
        )
        while True:
            exited = [managed for managed in processes if managed.process.poll() is not None]
            if exited:
                names = ", ".join(f"{m.name} (exit {m.process.returncode}, log {m.log_path})" for m in exited)
                print(f"fl-poison: error: stopped unexpectedly: {names}; stopping the rest", file=sys.stderr)
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping ...", file=sys.stderr, flush=True)
        return 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop_processes(processes)
