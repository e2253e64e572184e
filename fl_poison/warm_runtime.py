"""A runtime kept warm across many runs: one SuperLink and one Ray head that a sweep's runs share.

Every ``fl-poison run`` pays Flower's and Ray's fixed costs: the local SuperLink (started on
first use), and in every run Ray's start and stop inside the simulation process (``ray.init``:
3 s on two quiet cores, 9-10 s on busy ones; its shutdown 1-1.5 s). A sweep of small cells spends
much of its time there. :func:`warm_runtime` starts, for the duration of a ``with`` block,

- a Ray head on loopback (:mod:`fl_poison.core.ray_head`) that every run's ``ray.init()``
  connects to through ``RAY_ADDRESS`` (Ray's documented behaviour) instead of starting Ray;
- a SuperLink of its own, in simulation mode, on a free loopback port, with a private
  ``FLWR_HOME``, started with that ``RAY_ADDRESS`` so that the simulations it launches inherit
  it. It is never another process's SuperLink, so nothing else on the machine (another sweep, a
  user's ``flwr run``) is redirected to this Ray head or disturbed when it stops;
- by default (``fork_simulations``) the SuperLink runs with ``--isolation process`` and the
  forking executor (:mod:`fl_poison.forking_executor`, ``--task simulation``) takes the
  place of the SuperExec it would start: each run's simulation process is forked from a parent
  that has already imported Flower's simulation engine, Ray and torch (3-4 s of every run on two
  cores), and runs Flower's own ``run_simulation_process``. Without it, the SuperLink's own
  SuperExec starts a fresh ``flwr-simulation`` process per run.

It yields what it started (:class:`WarmRuntime`), with the environment a run is launched with
(:func:`fl_poison.launch.run_experiment`'s ``environment``). Each run still goes through
``flwr run``, the real SuperLink, SuperExec and simulation engine, creates its own client actors
and has Flower terminate them at its end; only the Ray processes and the SuperLink outlive a run.
Leaving the block stops every process it started (by process group and PID) and removes its
folders.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fl_poison.core.processes import ManagedProcess, start_process, stop_processes
from fl_poison.core.ray_head import (
    RAY_ADDRESS_VARIABLE,
    RayHead,
    address_answers,
    free_loopback_port,
    shared_ray_head,
)
from fl_poison.forking_executor import SIMULATION
from fl_poison.forking_executor import command_line as executor_command
from fl_poison.launch import run_environment

SUPERLINK_STARTUP_SECONDS = 60.0
# The executor imports torch, Ray and Flower's simulation engine before it serves: 3-10 s on two cores.
EXECUTOR_STARTUP_SECONDS = 120.0
EXECUTOR_READY_TEXT = "serving simulation tasks"
# Forking a process that has imported torch and matplotlib is safe on Linux; on macOS the system
# frameworks they load may abort a forked child, so the SuperLink's own SuperExec is used there.
FORK_BY_DEFAULT = sys.platform.startswith("linux")


class WarmRuntimeError(RuntimeError):
    """The warm runtime did not start."""


def superlink_answers(port: int) -> bool:
    """Whether a SuperLink answers its health check on ``127.0.0.1:port``.

    Parameters
    ----------
    port : int
        The SuperLink's HTTP port.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def simulation_superlink_command(port: int, isolation: str = "subprocess") -> list[str]:
    """The command line of a local SuperLink in simulation mode on ``127.0.0.1:port`` (its one HTTP port).

    Parameters
    ----------
    port : int
        The HTTP port of its Fleet, Control and Runtime APIs.
    isolation : str
        ``subprocess`` (the SuperLink starts its own SuperExec) or ``process`` (an executor of our
        own serves its Runtime API).
    """
    return [
        "flower-superlink",
        "--insecure",
        "--simulation",
        "--isolation",
        isolation,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]


@dataclass
class WarmRuntime:
    """What :func:`warm_runtime` started.

    Attributes
    ----------
    environment : dict[str, str]
        The environment to launch runs with (``FLWR_HOME``, the SuperLink's port, ``RAY_ADDRESS``).
    superlink : ManagedProcess
        The SuperLink (leader of its process group; without an executor the simulations run below it).
    executor : ManagedProcess | None
        The forking executor that runs the simulations (None when the SuperLink starts them itself).
    ray_head : RayHead
        The Ray head the runs connect to.
    home : Path
        The private ``FLWR_HOME`` (the SuperLink's log, the installed app), removed at the end.
    """

    environment: dict[str, str]
    superlink: ManagedProcess
    executor: ManagedProcess | None
    ray_head: RayHead
    home: Path

    def answers(self) -> bool:
        """Whether the SuperLink, the executor (if any) and the Ray head still run and accept connections."""
        port = int(self.environment["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])
        if self.superlink.process.poll() is not None or not superlink_answers(port):
            return False
        if self.executor is not None and self.executor.process.poll() is not None:
            return False
        head = self.ray_head
        return head.process.process.poll() is None and address_answers(head.address)


@contextmanager
def warm_runtime(
    base: Mapping[str, str] | None = None,
    fork_simulations: bool = FORK_BY_DEFAULT,
    worker_ports: tuple[int, int] | None = None,
) -> Iterator[WarmRuntime]:
    """A private SuperLink and Ray head (and forking executor) for the ``with`` block; yields what it started.

    Parameters
    ----------
    base : Mapping[str, str] | None
        The environment to start from (None: this process's).
    fork_simulations : bool
        Run each simulation in a process forked from a preloaded executor (see the module's
        docstring); False lets the SuperLink start a fresh ``flwr-simulation`` per run. The default
        forks on Linux only (:data:`FORK_BY_DEFAULT`).
    worker_ports : tuple[int, int] | None
        The lowest and highest port of the Ray head's workers (None: Ray's default range); runtimes
        side by side need disjoint ranges (:func:`fl_poison.core.ray_head.worker_port_range`).

    Raises
    ------
    RayHeadError
        When the Ray head does not start.
    WarmRuntimeError
        When the SuperLink does not start.
    """
    environment = run_environment(os.environ if base is None else base)
    environment.pop(RAY_ADDRESS_VARIABLE, None)
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="fl-poison-runtime-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        head = stack.enter_context(shared_ray_head(environment, worker_ports))
        environment[RAY_ADDRESS_VARIABLE] = head.address
        port = free_loopback_port()
        environment.update(
            {
                "FLWR_HOME": str(home),
                "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
                "FLWR_LOCAL_CONTROL_API_PORT": str(port),
            }
        )
        isolation = "process" if fork_simulations else "subprocess"
        superlink = start_process(
            "superlink", simulation_superlink_command(port, isolation), home / "superlink.log", environment
        )
        stack.callback(stop_processes, [superlink])
        deadline = time.monotonic() + SUPERLINK_STARTUP_SECONDS
        while not superlink_answers(port):
            if superlink.process.poll() is not None or time.monotonic() > deadline:
                raise WarmRuntimeError(f"the SuperLink did not start: {last_line(superlink)}")
            time.sleep(0.2)
        executor = None
        if fork_simulations:
            command = executor_command(f"127.0.0.1:{port}", task=SIMULATION)
            executor = start_process("executor", command, home / "executor.log", environment)
            stack.callback(stop_processes, [executor])
            deadline = time.monotonic() + EXECUTOR_STARTUP_SECONDS
            while EXECUTOR_READY_TEXT not in executor.log_text():
                if executor.process.poll() is not None or time.monotonic() > deadline:
                    raise WarmRuntimeError(f"the simulation executor did not start: {last_line(executor)}")
                time.sleep(0.2)
        yield WarmRuntime(environment, superlink, executor, head, home)


def last_line(process: ManagedProcess) -> str:
    """The last non-empty line of ``process``'s log, or ``no output``.

    Parameters
    ----------
    process : ManagedProcess
        A process started with a log.
    """
    lines = [line for line in process.log_text().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def shell_exports(environment: Mapping[str, str]) -> str:
    """The ``export`` line that points ``fl-poison run`` (and ``flwr run``) in another shell at a runtime.

    Parameters
    ----------
    environment : Mapping[str, str]
        The runtime's environment (:attr:`WarmRuntime.environment`).
    """
    names = ("FLWR_HOME", "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "FLWR_LOCAL_CONTROL_API_PORT")
    return "export " + " ".join(f"{name}={shlex.quote(environment[name])}" for name in names)


def serve(emit: Callable[[str], None], check_seconds: float = 5.0, fork_simulations: bool = FORK_BY_DEFAULT) -> int:
    """``fl-poison runtime``: start a warm runtime, say how to use it, and hold it until interrupted.

    Returns 1 when the runtime stops answering on its own (it is then stopped, with one line);
    Ctrl-C (``KeyboardInterrupt``) stops it and propagates.

    Parameters
    ----------
    emit : Callable[[str], None]
        Receives the lines to show.
    check_seconds : float
        Seconds between two checks that the SuperLink and the Ray head still answer.
    fork_simulations : bool
        Fork each run's simulation process from a preloaded executor (see :func:`warm_runtime`).
    """
    with warm_runtime(fork_simulations=fork_simulations) as runtime:
        emit(
            f"[fl-poison] runtime ready: SuperLink on 127.0.0.1:{runtime.environment['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']}"
            f", Ray head at {runtime.ray_head.address}"
            + (", simulations forked from a preloaded executor" if runtime.executor is not None else "")
        )
        emit("[fl-poison] run experiments against it from another shell after:")
        emit(shell_exports(runtime.environment))
        emit("[fl-poison] Ctrl-C stops it (its SuperLink, Ray head and folders)")
        while runtime.answers():
            time.sleep(check_seconds)
        emit("[fl-poison] the runtime stopped answering; stopping what is left of it")
        return 1
