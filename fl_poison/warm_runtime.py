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
  user's ``flwr run``) is redirected to this Ray head or disturbed when it stops.

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
from fl_poison.launch import run_environment

SUPERLINK_STARTUP_SECONDS = 60.0


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


def simulation_superlink_command(port: int) -> list[str]:
    """The command line of a local SuperLink in simulation mode on ``127.0.0.1:port`` (its one HTTP port).

    Parameters
    ----------
    port : int
        The HTTP port of its Fleet, Control and ServerAppIo APIs.
    """
    return [
        "flower-superlink",
        "--insecure",
        "--simulation",
        "--isolation",
        "subprocess",
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
        The SuperLink (leader of its process group; the simulations run below it).
    ray_head : RayHead
        The Ray head the runs connect to.
    home : Path
        The private ``FLWR_HOME`` (the SuperLink's log, the installed app), removed at the end.
    """

    environment: dict[str, str]
    superlink: ManagedProcess
    ray_head: RayHead
    home: Path

    def answers(self) -> bool:
        """Whether the SuperLink and the Ray head still run and accept connections."""
        port = int(self.environment["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])
        if self.superlink.process.poll() is not None or not superlink_answers(port):
            return False
        head = self.ray_head
        return head.process.process.poll() is None and address_answers(head.address)


@contextmanager
def warm_runtime(base: Mapping[str, str] | None = None) -> Iterator[WarmRuntime]:
    """A private SuperLink and Ray head for the ``with`` block; yields what it started.

    Parameters
    ----------
    base : Mapping[str, str] | None
        The environment to start from (None: this process's).

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
        head = stack.enter_context(shared_ray_head(environment))
        environment[RAY_ADDRESS_VARIABLE] = head.address
        port = free_loopback_port()
        environment.update(
            {
                "FLWR_HOME": str(home),
                "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
                "FLWR_LOCAL_CONTROL_API_PORT": str(port),
            }
        )
        superlink = start_process("superlink", simulation_superlink_command(port), home / "superlink.log", environment)
        stack.callback(stop_processes, [superlink])
        deadline = time.monotonic() + SUPERLINK_STARTUP_SECONDS
        while not superlink_answers(port):
            if superlink.process.poll() is not None or time.monotonic() > deadline:
                last = [line for line in superlink.log_text().splitlines() if line.strip()][-1:]
                raise WarmRuntimeError(f"the SuperLink did not start: {last[0] if last else 'no output'}")
            time.sleep(0.2)
        yield WarmRuntime(environment, superlink, head, home)


def shell_exports(environment: Mapping[str, str]) -> str:
    """The ``export`` line that points ``fl-poison run`` (and ``flwr run``) in another shell at a runtime.

    Parameters
    ----------
    environment : Mapping[str, str]
        The runtime's environment (:attr:`WarmRuntime.environment`).
    """
    names = ("FLWR_HOME", "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "FLWR_LOCAL_CONTROL_API_PORT")
    return "export " + " ".join(f"{name}={shlex.quote(environment[name])}" for name in names)


def serve(emit: Callable[[str], None], check_seconds: float = 5.0) -> int:
    """``fl-poison runtime``: start a warm runtime, say how to use it, and hold it until interrupted.

    Returns 1 when the runtime stops answering on its own (it is then stopped, with one line);
    Ctrl-C (``KeyboardInterrupt``) stops it and propagates.

    Parameters
    ----------
    emit : Callable[[str], None]
        Receives the lines to show.
    check_seconds : float
        Seconds between two checks that the SuperLink and the Ray head still answer.
    """
    with warm_runtime() as runtime:
        emit(
            f"[fl-poison] runtime ready: SuperLink on 127.0.0.1:{runtime.environment['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']}"
            f", Ray head at {runtime.ray_head.address}"
        )
        emit("[fl-poison] run experiments against it from another shell after:")
        emit(shell_exports(runtime.environment))
        emit("[fl-poison] Ctrl-C stops it (its SuperLink, Ray head and folders)")
        while runtime.answers():
            time.sleep(check_seconds)
        emit("[fl-poison] the runtime stopped answering; stopping what is left of it")
        return 1
