"""Shared fixtures: private Flower runtimes on loopback for end-to-end tests, and the task
identity Flower's strategies need when a unit test calls ``configure_train`` outside its runtime.

Two runtimes, each started once per session and only when a test asks for it:

- ``flower_env``: an ordinary SuperLink in simulation mode, as ``flwr run`` starts on first use
  (every run starts its own simulation process and its own Ray);
- ``warm_env``: the warm runtime sweeps use (:func:`fl_poison.warm_runtime.warm_runtime`: a
  SuperLink, a Ray head the runs connect to, simulation processes forked from a preloaded
  executor). Most end-to-end tests run there: each run then skips Ray's start and the simulation
  process's imports, a third to a half of a small run.

Each has its own ``FLWR_HOME``, its own free ports and runtime dependency installation switched
off; its processes run in process groups of their own, stopped by PID when the session ends,
even when tests fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from flwr.supercore.task_identity import TaskIdentity

from fl_poison.core.ray_head import free_loopback_port
from fl_poison.launch import FLOWER_ENVIRONMENT
from fl_poison.warm_runtime import simulation_superlink_command, superlink_answers, warm_runtime

STARTUP_SECONDS = 60
# The xdist group of the files with end-to-end tests (marked ``e2e``: they start SuperLinks, Ray
# heads and actors, SuperNodes). Each Flower run keeps both cores busy while its processes start,
# so two at once in two workers slow each other down (a 2-round run: 39 s alone, 153 s beside
# another file's runs); under ``--dist loadgroup`` these files run one after another in one worker
# while the other worker takes the unit tests.
FLOWER_RUN_GROUP = "flower-runs"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for pytest-xdist's ``--dist loadgroup``: files with ``e2e`` tests together, every other file alone.

    A file stays in one worker either way, so that a module's shared runs (fixtures) are made once.
    Runs before xdist's own hook, which reads the marks; without ``loadgroup`` the marks do nothing.
    """
    flower_run_files = {item.path for item in items if item.get_closest_marker("e2e") is not None}
    for item in items:
        group = FLOWER_RUN_GROUP if item.path in flower_run_files else item.path.stem
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def server_task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower 1.41 stamps instruction messages with the running task's identity, set by its runtime."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture(scope="session", autouse=True)
def private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the node-local data cache (``FL_POISON_CACHE_DIR``) at a session folder, never at ``~/.cache``.

    Set in ``os.environ`` before any other session fixture, so that subprocesses (the SuperLink,
    ``flwr run``, Ray actors) inherit it.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FL_POISON_CACHE_DIR", str(tmp_path_factory.mktemp("fl_poison_data_cache")))
        yield


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group led by ``process``, then SIGKILL what is left after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=15)


@pytest.fixture(scope="session")
def flower_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables that point the ``flwr`` CLI at a private, already running SuperLink."""
    home = tmp_path_factory.mktemp("flwr_home")
    port = free_loopback_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_loopback_port()),
        **FLOWER_ENVIRONMENT,
        "RAY_DISABLE_USAGE_STATS": "1",
    }
    log = open(home / "superlink.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        simulation_superlink_command(port),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not superlink_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SuperLink did not start; see {home / 'superlink.log'}")
            time.sleep(0.3)
        yield env
    finally:
        stop_process_group(process)
        log.close()


@pytest.fixture(scope="session")
def warm_env() -> Iterator[dict[str, str]]:
    """Environment variables that point the ``flwr`` CLI at a private warm runtime (SuperLink, Ray head, executor)."""
    with warm_runtime() as runtime:
        yield {**runtime.environment, "RAY_DISABLE_USAGE_STATS": "1"}
