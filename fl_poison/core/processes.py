"""Starting long-running processes (Flower's SuperLink and SuperNodes, a Ray head) and stopping every one of them, by PID.

Each process is started in a new session (its own process group) with its output in a log file.
Stopping sends SIGTERM to the group and to every descendant found under ``/proc`` (Flower's
SuperLink starts its SuperExec in a process group of its own), waits, then sends SIGKILL to
whatever is left. Nothing is looked up by name, so other users' Flower processes are never hit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_SECONDS = 10.0


@dataclass
class ManagedProcess:
    """A started process, its name and its log file.

    Attributes
    ----------
    name : str
        A label such as ``superlink`` or ``supernode-3``.
    process : subprocess.Popen
        The process (leader of its own process group).
    log_path : Path
        Where its stdout and stderr go.
    """

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.process.pid

    def log_text(self) -> str:
        """What the process has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""


def start_process(name: str, command: Sequence[str], log_path: Path, environment: Mapping[str, str]) -> ManagedProcess:
    """Start ``command`` in a new session with stdout and stderr appended to ``log_path``.

    Parameters
    ----------
    name : str
        A label for messages.
    command : Sequence[str]
        The command line.
    log_path : Path
        The log file (its folder must exist).
    environment : Mapping[str, str]
        The complete environment of the process.
    """
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=dict(environment), start_new_session=True
        )
    return ManagedProcess(name, process, log_path)


def _process_table(proc_root: Path = Path("/proc")) -> dict[int, tuple[int, str]]:
    """Parent pid and start time of every process, from ``proc_root`` (empty where there is none)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in proc_root.glob("[0-9]*/stat") if proc_root.is_dir() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int, proc_root: Path = Path("/proc")) -> list[tuple[int, str]]:
    """Every process below ``pid`` in the process tree, as (pid, start time) pairs.

    Parameters
    ----------
    pid : int
        The process at the top.
    proc_root : Path
        The process table (``/proc``; tests give a constructed one).
    """
    table = _process_table(proc_root)
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: list[tuple[int, str]] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append((child, table[child][1]))
            pending.append(child)
    return found


def _signal_all(process_groups: Iterable[int], processes: Iterable[tuple[int, str]], signum: int) -> None:
    """Signal the groups, and every (pid, start time) that is still the same process."""
    for group in process_groups:
        try:
            os.killpg(group, signum)
        except (ProcessLookupError, PermissionError):
            pass
    table = _process_table()
    for pid, started in processes:
        if pid in table and table[pid][1] != started:
            continue  # the pid now belongs to another process
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def stop_processes(processes: Sequence[ManagedProcess], grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """Stop ``processes``, their process groups and their descendants: SIGTERM, then SIGKILL after the grace time."""
    running = [managed for managed in processes if managed.process.poll() is None]
    below = [pid for managed in running for pid in descendants(managed.pid)]
    groups = [managed.pid for managed in processes]
    _signal_all(groups, below, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for managed in processes:
        try:
            managed.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    _signal_all(groups, below, signal.SIGKILL)
    for managed in processes:
        try:
            managed.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def wait_for_log(managed: ManagedProcess, text: str, timeout: float) -> None:
    """Wait until ``text`` appears in the process's log; fail when it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while text not in managed.log_text():
        if managed.process.poll() is not None:
            raise RuntimeError(f"{managed.name} exited with code {managed.process.returncode}; see {managed.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{managed.name} did not log {text!r} within {timeout:g}s; see {managed.log_path}")
        time.sleep(0.3)
