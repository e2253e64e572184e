"""A SuperExec that starts every ClientApp or simulation process by ``fork`` from a warm parent.

On a SuperNode, Flower runs every message (one ``fit`` or ``evaluate`` of one client) in a new
``flwr-clientapp`` process: the SuperNode's SuperExec (``flower-superexec``) acquires the task from
the node's Runtime API and starts ``flwr-clientapp --token ...``, which pulls the message, installs
the run's FAB, loads the ClientApp from it, runs it, pushes the reply and exits. A fresh Python
process spends 4–5 s here importing torch and Flower's client runtime before it reads its message,
in every round, for every client. A SuperLink in simulation mode does the same once per run: its
SuperExec starts ``flwr-simulation``, which imports Flower's simulation engine, Ray and (through
the ServerApp) torch, 3–4 s on two cores, before the run's first round.

This executor takes SuperExec's place for a SuperNode started with ``flower-supernode --isolation
process`` (``--task clientapp``, the default) or for a SuperLink started with ``flower-superlink
--simulation --isolation process`` (``--task simulation``). A parent process imports the heavy
third-party modules once (:data:`DEFAULT_PRELOADS`: torch, numpy and Flower's runtime of the task;
Ray for simulations) and keeps one *spare* child forked from it. The spare polls the Runtime API
for a task of its kind exactly as SuperExec does (``AcquireTask``); when it gets one it tells the
parent (which forks the next spare) and runs Flower's own runtime function with the task's token:
:func:`flwr.supernode.runtime.run_clientapp.run_clientapp`, or
:func:`flwr.simulation.app.run_simulation_process` with its output mirrored to the SuperLink's log
as ``flwr-simulation`` does. So every task still runs in a process of its own that exits afterwards,
and Flower still pulls the task, installs the FAB and loads the apps from the FAB's folder: the
project's own packages (:data:`PROJECT_PACKAGES`) are never preloaded, and each child drops the
ones the executor itself was imported through from ``sys.modules`` before it runs the task, so what
runs is the run's FAB, not the code the executor was started with. What the fork saves is the
import of the libraries.

Each child reseeds numpy's and torch's global generators from the operating system (a fresh process
would start from fresh entropy; a fork would otherwise copy the parent's state) and ends with
``os._exit`` so that it never runs the parent's exit handlers. The parent never opens a connection
(only spares do) and never starts Ray or CUDA, so no socket, driver or device context is shared
across a fork. SIGTERM or SIGINT stops the parent and every child it started. The executor depends
on Flower's Runtime API of the versions ``pyproject.toml`` allows (``AcquireTask``,
``run_clientapp``, ``run_simulation_process``); it fails with one line when they are missing. It
does not sign its requests, so a SuperNode started with Flower's experimental
``--superexec-auth-secret-file`` refuses it.

Usage, next to ``flower-supernode ... --isolation process --port 9094``::

    python -m fl_poison.forking_executor --runtime-api-address 127.0.0.1:9094 --insecure

and next to ``flower-superlink --simulation --isolation process --port 9093`` (what
:mod:`fl_poison.warm_runtime` starts)::

    python -m fl_poison.forking_executor --task simulation --runtime-api-address 127.0.0.1:9093 --insecure
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

# The packages a FAB of this project brings; a child imports them afresh from the FAB's folder.
PROJECT_PACKAGES = ("fl_poison", "clients", "strategies")
CLIENT_APP = "clientapp"
SIMULATION = "simulation"
# What each --task acquires from the Runtime API (Flower's task types) and how its processes are named.
TASK_TYPES = {CLIENT_APP: "flwr-clientapp", SIMULATION: "flwr-simulation"}
TASK_LABELS = {CLIENT_APP: "ClientApp", SIMULATION: "simulation"}
DEFAULT_PRELOAD = ("numpy", "torch", "torch._dynamo", "flwr.supernode.runtime.run_clientapp", "flwr.clientapp")
DEFAULT_PRELOADS = {
    CLIENT_APP: DEFAULT_PRELOAD,
    # and what the ServerApp imports on first use: scikit-learn's metrics (and digits), matplotlib for the plots
    SIMULATION: (
        "numpy",
        "torch",
        "torch._dynamo",
        "ray",
        "flwr.simulation.app",
        "flwr.serverapp",
        "sklearn.metrics",
        "sklearn.datasets",
        "matplotlib",
        "matplotlib.figure",
    ),
}
# The module and function of Flower's runtime that a task process of each kind runs.
RUNTIME_FUNCTIONS = {
    CLIENT_APP: ("flwr.supernode.runtime.run_clientapp", "run_clientapp"),
    SIMULATION: ("flwr.simulation.app", "run_simulation_process"),
}
DEFAULT_POLL_SECONDS = 0.1
# A spare that exits this many times in a row without acquiring a task stops the executor.
MAX_FAILED_SPARES = 5
FAILED_SPARE_PAUSE_SECONDS = 1.0
# How a child that acquired a task names itself on the parent's pipe (writes this small are atomic).
PID_FORMAT = "!i"
EXECUTOR_COMPONENT = "SuperExec"

logger = logging.getLogger("fl_poison.forking_executor")


class ExecutorError(RuntimeError):
    """The executor cannot start or cannot keep a spare alive."""


@dataclass(frozen=True)
class ExecutorSettings:
    """Where the node's Runtime API is and how to reach it.

    Attributes
    ----------
    runtime_api_address : str
        ``host:port`` of the SuperNode's Runtime API (its ``--host`` / ``--port``).
    insecure : bool
        Plain HTTP to the Runtime API (what Flower's own SuperExec uses when the node has no
        ``--ssl-certfile``).
    root_certificates : str | None
        CA certificate file to check the Runtime API's TLS certificate; None with ``insecure``.
    poll_seconds : float
        Pause between two ``AcquireTask`` calls of the spare.
    preload : tuple[str, ...] | None
        Modules the parent imports before it forks; None for the task's :data:`DEFAULT_PRELOADS`.
    threads : int | None
        torch's intra-op threads in every task process (``torch.set_num_threads``, set in the
        parent before it forks); None keeps torch's default (one per core). Several nodes on one
        machine each need a share of the cores, or their threads spin against each other.
    task : str
        ``clientapp`` (a SuperNode's ClientApp tasks) or ``simulation`` (a simulation SuperLink's runs).
    """

    runtime_api_address: str
    insecure: bool = True
    root_certificates: str | None = None
    poll_seconds: float = DEFAULT_POLL_SECONDS
    preload: tuple[str, ...] | None = None
    threads: int | None = None
    task: str = CLIENT_APP

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise ValueError(f"--task {self.task!r}: allowed {' | '.join(TASK_TYPES)}")
        host, separator, port = self.runtime_api_address.rpartition(":")
        if not separator or not host or not port.isdigit():
            raise ValueError(f"--runtime-api-address {self.runtime_api_address!r}: expected HOST:PORT")
        if self.insecure == (self.root_certificates is not None):
            raise ValueError("exactly one of --insecure and --root-certificates is needed")
        if not 0.01 <= self.poll_seconds <= 60:
            raise ValueError(f"--poll-seconds {self.poll_seconds}: allowed 0.01 .. 60")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads}: allowed an integer >= 1")

    @property
    def modules_to_preload(self) -> tuple[str, ...]:
        """``preload``, or the task's default when it is None."""
        return DEFAULT_PRELOADS[self.task] if self.preload is None else self.preload

    @property
    def label(self) -> str:
        """How the task's processes are named in the executor's lines (``ClientApp``, ``simulation``)."""
        return TASK_LABELS[self.task]


@dataclass
class ExecutorState:
    """The parent's children.

    Attributes
    ----------
    spare : int | None
        PID of the child waiting for a task, if any.
    running : dict[int, float]
        Children that acquired a task and have not been reaped: PID to the ``time.monotonic()`` at
        which the task was acquired.
    failed_spares : int
        Spares in a row that exited without acquiring a task.
    """

    spare: int | None = None
    running: dict[int, float] = field(default_factory=dict)
    failed_spares: int = 0


def preload_modules(names: Sequence[str]) -> list[str]:
    """Import ``names``; return the ones that could not be imported (each logged in one line).

    Parameters
    ----------
    names : Sequence[str]
        Module names.
    """
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            logger.warning("fl-poison executor: cannot preload %s (%s); each ClientApp imports it", name, error)
            missing.append(name)
    return missing


def forget_project_modules(packages: Sequence[str] = PROJECT_PACKAGES) -> list[str]:
    """Drop ``packages`` and their submodules from ``sys.modules``; return the names dropped.

    The next ``import`` of them then reads the files on ``sys.path`` at that time (the FAB's
    folder, which Flower puts first), not those the executor was imported from. Objects already
    created (this module's functions, running now) are unaffected.

    Parameters
    ----------
    packages : Sequence[str]
        Top-level package names.
    """
    dropped = [name for name in sys.modules if name.split(".")[0] in packages]
    for name in dropped:
        del sys.modules[name]
    return dropped


def reseed_global_generators() -> None:
    """Fresh OS entropy for numpy's and torch's global generators, as a new process would have."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def acquire_task_token(settings: ExecutorSettings) -> str:
    """Poll the Runtime API until it hands out a task of ``settings.task``; return the task's token.

    Parameters
    ----------
    settings : ExecutorSettings
        The Runtime API's address, security, polling pause and task kind.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    client = RuntimeHttpClient.from_server_address(
        server_address=settings.runtime_api_address,
        insecure=settings.insecure,
        root_certificates=validate_and_resolve_root_certificates(settings.root_certificates, settings.insecure),
        interceptors=[RuntimeVersionHttpInterceptor(component_name=EXECUTOR_COMPONENT)],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    try:
        while True:
            response = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TASK_TYPES[settings.task]]))
            if response.HasField("task") and response.token:
                return str(response.token)
            time.sleep(settings.poll_seconds)
    finally:
        client.close()


def run_task(settings: ExecutorSettings, token: str) -> None:
    """Run Flower's runtime of ``settings.task`` for the task of ``token`` in this process.

    Parameters
    ----------
    settings : ExecutorSettings
        How to reach the Runtime API, and the task kind.
    token : str
        The token :func:`acquire_task_token` got.
    """
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    # what both runtimes take, as Flower's SuperExec passes it on their command lines
    arguments: dict[str, Any] = {
        "runtime_api_address": settings.runtime_api_address,
        "token": token,
        "insecure": settings.insecure,
        "certificates": validate_and_resolve_root_certificates(settings.root_certificates, settings.insecure),
        "parent_pid": os.getppid(),
        "runtime_dependency_install": False,
    }
    if settings.task == CLIENT_APP:
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(**arguments)
        return
    from queue import Queue

    from flwr.simulation.app import run_simulation_process
    from flwr.supercore.logger import mirror_output_to_queue, restore_output

    # as flwr-simulation does: what the run prints goes to the SuperLink's log of the run too
    log_queue: Queue[str | None] = Queue()
    mirror_output_to_queue(log_queue)
    try:
        run_simulation_process(log_queue=log_queue, **arguments)
    finally:
        restore_output()


def run_spare(settings: ExecutorSettings, notify_fd: int) -> int:
    """The child's work: wait for a task, tell the parent, run it; return the exit code.

    Parameters
    ----------
    settings : ExecutorSettings
        How to reach the Runtime API, and the task kind.
    notify_fd : int
        Write end of the parent's pipe; the child's PID (:data:`PID_FORMAT`) is written when it
        has acquired a task.
    """
    token = acquire_task_token(settings)
    os.write(notify_fd, struct.pack(PID_FORMAT, os.getpid()))
    os.close(notify_fd)
    forget_project_modules()
    reseed_global_generators()
    try:
        run_task(settings, token)
    except SystemExit as exit_request:
        code = exit_request.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def fork_spare(settings: ExecutorSettings, read_fd: int, write_fd: int) -> int:
    """Fork a spare child; return its PID in the parent (the child never returns).

    Parameters
    ----------
    settings : ExecutorSettings
        Passed to :func:`run_spare`.
    read_fd : int
        The parent's end of the pipe (closed in the child).
    write_fd : int
        The child's end of the pipe.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.close(read_fd)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        code = run_spare(settings, write_fd)
    except BaseException as error:  # the child must reach os._exit whatever happens
        print(f"fl-poison executor: {settings.label} process {os.getpid()} failed: {error!r}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def reap_children(state: ExecutorState, label: str = TASK_LABELS[CLIENT_APP]) -> None:
    """Collect exited children; count a spare that exited before acquiring a task as failed.

    Parameters
    ----------
    state : ExecutorState
        Updated in place.
    label : str
        How the task processes are named in the line printed for each one that ended.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == state.spare:
            state.spare = None
            state.failed_spares += 1
            logger.warning(
                "fl-poison executor: spare %d exited (status %d) before it got a task",
                pid,
                os.waitstatus_to_exitcode(status),
            )
        acquired = state.running.pop(pid, None)
        if acquired is not None:
            print(
                f"fl-poison executor: {label} process {pid} ran its task in {time.monotonic() - acquired:.1f} s "
                f"(exit code {os.waitstatus_to_exitcode(status)})",
                flush=True,
            )


def record_acquired(state: ExecutorState, messages: bytes) -> None:
    """Move the children named in ``messages`` (PIDs, :data:`PID_FORMAT`) from spare to running.

    Parameters
    ----------
    state : ExecutorState
        Updated in place; a spare that took a task leaves ``state.spare`` empty, so that the
        parent forks the next one.
    messages : bytes
        What the pipe held: whole PID records.
    """
    size = struct.calcsize(PID_FORMAT)
    for offset in range(0, len(messages) - size + 1, size):
        (pid,) = struct.unpack_from(PID_FORMAT, messages, offset)
        state.running[pid] = time.monotonic()
        state.failed_spares = 0
        if pid == state.spare:
            state.spare = None


def stop_children(state: ExecutorState) -> None:
    """SIGTERM to every child still alive, then wait for them (at most 10 s, then SIGKILL).

    Parameters
    ----------
    state : ExecutorState
        The children to stop.
    """
    children = set(state.running) | ({state.spare} if state.spare else set())
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        for pid in list(children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                children.discard(pid)
        time.sleep(0.05)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(settings: ExecutorSettings) -> int:
    """Preload, keep one spare forked, fork the next whenever a spare takes a task; until a signal.

    Returns the exit code: 0 after SIGTERM / SIGINT, 1 when spares keep failing.

    Parameters
    ----------
    settings : ExecutorSettings
        The Runtime API and what to preload.
    """
    runtime = RUNTIME_FUNCTIONS[settings.task]
    try:
        module = importlib.import_module(runtime[0])
        getattr(module, runtime[1])
    except (ImportError, AttributeError) as error:
        raise ExecutorError(
            f"this Flower has no {settings.label} runtime to fork ({error}); use --isolation subprocess"
        ) from None
    started = time.monotonic()
    preload = settings.modules_to_preload
    if any(name.split(".")[0] in PROJECT_PACKAGES for name in preload):
        raise ExecutorError(f"--preload: the project's own packages {PROJECT_PACKAGES} come from each run's FAB")
    preload_modules(preload)
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)
    # The preloaded objects never need collecting: kept out of the collector's generations, a child's
    # collections do not walk them, and so do not write to (and copy) the pages the fork shares.
    gc.freeze()
    print(
        f"fl-poison executor: preloaded {', '.join(preload)} in {time.monotonic() - started:.1f} s; "
        f"serving {settings.label} tasks of {settings.runtime_api_address}",
        flush=True,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_interrupt)
    read_fd, write_fd = os.pipe()
    state = ExecutorState()
    try:
        while True:
            reap_children(state, settings.label)
            if state.failed_spares >= MAX_FAILED_SPARES:
                print(
                    f"fl-poison executor: error: {MAX_FAILED_SPARES} spares in a row exited without a task; "
                    f"is the SuperNode's Runtime API at {settings.runtime_api_address}?",
                    file=sys.stderr,
                )
                return 1
            if state.spare is None:
                if state.failed_spares:
                    time.sleep(FAILED_SPARE_PAUSE_SECONDS)
                state.spare = fork_spare(settings, read_fd, write_fd)
            readable, _, _ = select.select([read_fd], [], [], 0.5)
            if readable:
                record_acquired(state, os.read(read_fd, 4096))
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        stop_children(state)
        os.close(read_fd)
        os.close(write_fd)


def command_line(
    runtime_api_address: str,
    root_certificates: str | None = None,
    threads: int | None = None,
    task: str = CLIENT_APP,
) -> list[str]:
    """The command that runs this executor for a Runtime API.

    Parameters
    ----------
    runtime_api_address : str
        ``host:port`` of the node's (or the simulation SuperLink's) Runtime API.
    root_certificates : str | None
        CA certificate of the Runtime API's TLS; None for plain HTTP (``--insecure``).
    threads : int | None
        torch threads per task process; None for torch's default.
    task : str
        ``clientapp`` or ``simulation``.
    """
    command = [sys.executable, "-m", "fl_poison.forking_executor", "--runtime-api-address", runtime_api_address]
    if task != CLIENT_APP:
        command += ["--task", task]
    if threads is not None:
        command += ["--threads", str(threads)]
    return [*command, "--root-certificates", root_certificates] if root_certificates else [*command, "--insecure"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the executor's options to ``parser`` (this module's command and ``fl-poison deploy executor``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.
    """
    parser.add_argument(
        "--runtime-api-address", required=True, help="the node's (or simulation SuperLink's) Runtime API, HOST:PORT"
    )
    parser.add_argument(
        "--task",
        choices=tuple(TASK_TYPES),
        default=CLIENT_APP,
        help="what to run: a SuperNode's ClientApp tasks (default) or a simulation SuperLink's runs",
    )
    security = parser.add_mutually_exclusive_group(required=True)
    security.add_argument("--insecure", action="store_true", help="plain HTTP to the Runtime API")
    security.add_argument("--root-certificates", help="CA certificate of the Runtime API's TLS")
    parser.add_argument(
        "--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS, help="pause between task polls (default 0.1)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per task process (default: torch's, one per core)"
    )
    parser.add_argument(
        "--preload",
        default=None,
        help="comma-separated modules to import before forking (never the project's own packages; default: "
        + "; ".join(f"{task}: {','.join(modules)}" for task, modules in DEFAULT_PRELOADS.items())
        + ")",
    )


def settings_from(arguments: argparse.Namespace) -> ExecutorSettings:
    """The :class:`ExecutorSettings` of parsed options (:func:`add_arguments`); ValueError on a bad one.

    Parameters
    ----------
    arguments : argparse.Namespace
        What the parser returned.
    """
    return ExecutorSettings(
        runtime_api_address=arguments.runtime_api_address,
        insecure=arguments.insecure,
        root_certificates=arguments.root_certificates,
        poll_seconds=arguments.poll_seconds,
        threads=arguments.threads,
        preload=None
        if arguments.preload is None
        else tuple(name.strip() for name in arguments.preload.split(",") if name.strip()),
        task=arguments.task,
    )


def parse_arguments(argv: Sequence[str] | None = None) -> ExecutorSettings:
    """The :class:`ExecutorSettings` of a command line (a bad value exits with one line).

    Parameters
    ----------
    argv : Sequence[str] | None
        The arguments; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fl_poison.forking_executor",
        description="Run a SuperNode's ClientApp tasks, or a simulation SuperLink's runs, in processes forked "
        "from a preloaded parent (start the node or the SuperLink with --isolation process).",
    )
    add_arguments(parser)
    arguments = parser.parse_args(argv)
    try:
        return settings_from(arguments)
    except ValueError as error:
        parser.error(str(error))
        raise


def run_executor(settings: ExecutorSettings) -> int:
    """Serve with ``settings`` (logging set up); returns the exit code, printing an error in one line.

    Parameters
    ----------
    settings : ExecutorSettings
        What to serve.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return serve(settings)
    except ExecutorError as error:
        print(f"fl-poison executor: error: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code.

    Parameters
    ----------
    argv : Sequence[str] | None
        The arguments; default ``sys.argv[1:]``.
    """
    return run_executor(parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
