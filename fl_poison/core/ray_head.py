"""One Ray head for many runs: the runs of a sweep connect to it instead of each starting Ray.

Flower's simulation engine calls ``ray.init()`` in every run. Without an address that starts a
whole Ray instance (GCS server, raylet, dashboard and runtime-env agents, log monitor) for the
run and shuts it down at its end: 3 s of a 25 s digits run on two quiet cores, 9-10 s on busy
ones (``ray.init`` measured alone). ``ray.init()`` connects instead to the cluster that the
``RAY_ADDRESS`` environment variable names (Ray's documented behaviour), which costs a fraction
of a second; each run then still creates its own client actors, and Flower still terminates them
at its end, so no state is carried from one run to the next beyond the Ray processes themselves.

The head this module starts listens on loopback only, keeps its files in a temporary folder of
its own, and runs in a process group of its own: stopping it touches no other Ray instance on the
machine (``ray stop`` would stop every one, including other sweeps' runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fl_poison.core.processes import ManagedProcess, start_process, stop_processes

RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"
READY_TEXT = "Ray runtime started"
# Ray keeps Unix sockets under its temporary folder (``<folder>/session_<time>_<pid>/sockets/...``,
# about 70 characters), and Linux limits a socket's path to 107 bytes.
LONGEST_TEMP_FOLDER = 36
# Ray's GCS server and raylet were seen to ignore SIGTERM for more than 10 s on busy cores; nothing
# of the head is kept, so they get SIGKILL after this grace.
HEAD_STOP_GRACE_SECONDS = 3.0
# The worker ports that Ray heads side by side share out (see worker_port_range).
SIDE_BY_SIDE_PORTS = (20000, 31999)


class RayHeadError(RuntimeError):
    """The Ray head did not start."""


@dataclass
class RayHead:
    """A running Ray head started by :func:`start_ray_head`.

    Attributes
    ----------
    address : str
        Its GCS address (``127.0.0.1:PORT``), the value of ``RAY_ADDRESS`` for the runs.
    temp_folder : Path
        Ray's temporary folder for this head (sessions, logs, sockets), removed when it stops.
    process : ManagedProcess
        The ``ray start --head --block`` process, leader of the head's process group.
    """

    address: str
    temp_folder: Path
    process: ManagedProcess


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def address_answers(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``address`` (``HOST:PORT``).

    Parameters
    ----------
    address : str
        ``HOST:PORT``; anything else does not answer.
    timeout : float
        Seconds to wait for the connection.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def short_temp_folder() -> Path:
    """A new, empty folder for Ray's files whose path leaves room for Ray's socket names."""
    base = tempfile.gettempdir()
    if len(base) > LONGEST_TEMP_FOLDER - len("/flp-ray-xxxxxxxx"):
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="flp-ray-", dir=base))


def ray_start_command(port: int, temp_folder: Path, worker_ports: tuple[int, int] | None = None) -> list[str]:
    """The ``ray start`` command line of the head.

    Parameters
    ----------
    port : int
        The GCS port on 127.0.0.1.
    temp_folder : Path
        Ray's temporary folder.
    worker_ports : tuple[int, int] | None
        The lowest and highest port of its workers and drivers (None: Ray's default range).
    """
    command = [
        "ray",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--temp-dir={temp_folder}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if worker_ports is not None:
        command += [f"--min-worker-port={worker_ports[0]}", f"--max-worker-port={worker_ports[1]}"]
    return command


def worker_port_range(slot: int, slots: int) -> tuple[int, int]:
    """The worker ports of head ``slot`` of ``slots`` Ray heads that run side by side on one machine.

    Each head hands its workers and drivers ports from its own range without asking the system,
    so two heads with Ray's default range (10002-19999) give the first driver of each the same
    port, and the second to bind it crashes. The heads split 20000-31999 (above Ray's default
    range, below Linux's ephemeral ports) into disjoint ranges.

    Parameters
    ----------
    slot : int
        The head's number, 0 to ``slots`` - 1.
    slots : int
        How many heads share the range.
    """
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} is not one of 0..{slots - 1}")
    size = (SIDE_BY_SIDE_PORTS[1] - SIDE_BY_SIDE_PORTS[0] + 1) // slots
    first = SIDE_BY_SIDE_PORTS[0] + slot * size
    return first, first + size - 1


def start_ray_head(
    environment: Mapping[str, str], timeout: float = 120.0, worker_ports: tuple[int, int] | None = None
) -> RayHead:
    """Start a Ray head on loopback and wait until it is ready.

    It takes every CPU and GPU Ray finds, as the ``ray.init()`` of a single run does.

    Parameters
    ----------
    environment : Mapping[str, str]
        The head's environment; the workers it starts for the runs inherit it.
    timeout : float
        Seconds to wait for ``ray start`` to report the head ready.
    worker_ports : tuple[int, int] | None
        The lowest and highest port of its workers (None: Ray's default range; see
        :func:`worker_port_range` for heads side by side).

    Raises
    ------
    RayHeadError
        When ``ray`` is missing, exits early, or is not ready within ``timeout``.
    """
    temp_folder = short_temp_folder()
    port = free_loopback_port()
    command = ray_start_command(port, temp_folder, worker_ports)
    log_path = temp_folder / "ray-start.log"
    environment = {**environment, "RAY_USAGE_STATS_ENABLED": "0"}
    environment.pop(RAY_ADDRESS_VARIABLE, None)
    try:
        process = start_process("ray head", command, log_path, environment)
    except OSError as error:
        shutil.rmtree(temp_folder, ignore_errors=True)
        raise RayHeadError(f"cannot start `ray start`: {error}") from None
    head = RayHead(f"127.0.0.1:{port}", temp_folder, process)
    deadline = time.monotonic() + timeout
    while READY_TEXT not in process.log_text() or not address_answers(head.address):
        failure = ""
        if process.process.poll() is not None:
            failure = f"ray start exited with code {process.process.returncode}"
        elif time.monotonic() > deadline:
            failure = f"the Ray head was not ready within {timeout:g}s"
        if failure:
            last = [line for line in process.log_text().splitlines() if line.strip()][-1:]
            stop_ray_head(head)
            raise RayHeadError(f"{failure}{': ' + last[0] if last else ''}")
        time.sleep(0.2)
    return head


def stop_ray_head(head: RayHead) -> None:
    """Stop every process of the head (its process group and descendants) and remove its temporary folder.

    Parameters
    ----------
    head : RayHead
        The head.
    """
    stop_processes([head.process], grace_seconds=HEAD_STOP_GRACE_SECONDS)
    shutil.rmtree(head.temp_folder, ignore_errors=True)


@contextmanager
def shared_ray_head(
    environment: Mapping[str, str] | None = None, worker_ports: tuple[int, int] | None = None
) -> Iterator[RayHead]:
    """A Ray head for the duration of the ``with`` block, stopped on leaving it (an exception too).

    Parameters
    ----------
    environment : Mapping[str, str] | None
        The head's environment (None: this process's).
    worker_ports : tuple[int, int] | None
        The lowest and highest port of its workers (None: Ray's default range).
    """
    head = start_ray_head(os.environ if environment is None else environment, worker_ports=worker_ports)
    try:
        yield head
    finally:
        stop_ray_head(head)
