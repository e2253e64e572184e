"""The forking ClientApp executor: its settings, what a child forgets and reseeds, and its command line.

The executor's service end to end (SuperNodes with ``--isolation process``, a real run) is covered
by ``tests/test_deployment.py`` and the insecure trial in ``tests/test_deployment_helpers.py``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fl_poison.deploy.local_trial import TrialPlan, supernode_command
from fl_poison.forking_executor import (
    CLIENT_APP,
    DEFAULT_PRELOAD,
    DEFAULT_PRELOADS,
    PID_FORMAT,
    PROJECT_PACKAGES,
    SIMULATION,
    ExecutorError,
    ExecutorSettings,
    ExecutorState,
    command_line,
    forget_project_modules,
    parse_arguments,
    preload_modules,
    reap_children,
    record_acquired,
    reseed_global_generators,
    serve,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime_api_address": "9094", "insecure": True}, "expected HOST:PORT"),
        ({"runtime_api_address": "127.0.0.1:port", "insecure": True}, "expected HOST:PORT"),
        ({"runtime_api_address": "127.0.0.1:9094", "insecure": False}, "exactly one of"),
        ({"runtime_api_address": "127.0.0.1:9094", "insecure": True, "root_certificates": "ca.crt"}, "exactly one"),
        ({"runtime_api_address": "127.0.0.1:9094", "insecure": True, "poll_seconds": 0.0}, "--poll-seconds"),
    ],
)
def test_bad_settings_fail_naming_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExecutorSettings(**kwargs)


def test_command_line_round_trips_through_the_parser() -> None:
    insecure = command_line("127.0.0.1:9100")
    assert insecure[:3] == [sys.executable, "-m", "fl_poison.forking_executor"]
    settings = parse_arguments(insecure[3:])
    assert settings == ExecutorSettings("127.0.0.1:9100", insecure=True)
    secure = parse_arguments(command_line("10.0.0.2:9094", "/certs/ca.crt")[3:])
    assert (secure.insecure, secure.root_certificates) == (False, "/certs/ca.crt")
    assert secure.preload is None and secure.modules_to_preload == DEFAULT_PRELOAD
    simulation = parse_arguments(command_line("127.0.0.1:9093", task=SIMULATION)[3:])
    assert simulation == ExecutorSettings("127.0.0.1:9093", task=SIMULATION)
    assert simulation.modules_to_preload == DEFAULT_PRELOADS[SIMULATION] and simulation.label == "simulation"
    chosen = parse_arguments(["--runtime-api-address", "127.0.0.1:9", "--insecure", "--preload", "json, numpy"])
    assert chosen.modules_to_preload == ("json", "numpy")


def test_an_unknown_task_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--runtime-api-address", "127.0.0.1:9", "--insecure", "--task", "serverapp"])
    assert exit_info.value.code == 2
    assert "--task" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--task 'serverapp'"):
        ExecutorSettings("127.0.0.1:9", task="serverapp")


def test_a_bad_command_line_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--runtime-api-address", "nowhere", "--insecure"])
    assert exit_info.value.code == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_preloading_the_project_itself_is_refused() -> None:
    settings = ExecutorSettings("127.0.0.1:9094", preload=("numpy", "fl_poison.apps.client_app"))
    with pytest.raises(ExecutorError, match="--preload"):
        serve(settings)


def test_a_module_that_cannot_be_imported_is_reported_not_fatal() -> None:
    assert preload_modules(["json", "no_such_module_for_fl_poison"]) == ["no_such_module_for_fl_poison"]


@pytest.mark.parametrize("task", [CLIENT_APP, SIMULATION])
def test_the_default_preload_brings_no_project_module_and_starts_no_thread(task: str) -> None:
    """The parent must not import the project (each child loads it from the run's FAB), and must fork
    with one thread: a thread's locks would be copied into the child in whatever state they are."""
    code = (
        "import sys, threading\n"
        "from importlib import import_module\n"
        f"for name in {DEFAULT_PRELOADS[task]!r}: import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {PROJECT_PACKAGES!r}))\n"
        "print([thread.name for thread in threading.enumerate()])\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.splitlines() == ["[]", "['MainThread']"]


def test_forgetting_the_project_makes_the_next_import_read_the_folder_first_on_the_path(tmp_path) -> None:
    """A child imports ``fl_poison`` afresh from the FAB's folder, not from where the executor came."""
    fab = tmp_path / "fab"
    (fab / "fl_poison").mkdir(parents=True)
    (fab / "fl_poison" / "__init__.py").write_text("WHERE = 'fab'\n")
    code = (
        "import sys\n"
        "import fl_poison.forking_executor as executor\n"
        f"sys.path.insert(0, {str(fab)!r})\n"
        "import fl_poison\n"
        "before = getattr(fl_poison, 'WHERE', 'installed')\n"
        "dropped = executor.forget_project_modules()\n"
        "import fl_poison\n"
        "print(before, fl_poison.WHERE, 'fl_poison.forking_executor' in dropped)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.split() == ["installed", "fab", "True"]


def test_forget_drops_only_the_named_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fake_project", object())
    monkeypatch.setitem(sys.modules, "fake_project.sub", object())
    monkeypatch.setitem(sys.modules, "fake_projectile", object())
    assert sorted(forget_project_modules(("fake_project",))) == ["fake_project", "fake_project.sub"]
    assert "fake_projectile" in sys.modules


def test_reseeding_replaces_the_state_a_fork_would_copy() -> None:
    np.random.seed(1234)
    torch.manual_seed(1234)
    copied_numpy = np.random.get_state()[1].copy()
    copied_torch = torch.random.get_rng_state().clone()
    reseed_global_generators()
    assert not np.array_equal(np.random.get_state()[1], copied_numpy)
    assert not torch.equal(torch.random.get_rng_state(), copied_torch)


def test_trial_nodes_run_in_process_isolation_only_when_forking(tmp_path) -> None:
    forking = TrialPlan(folder=tmp_path, num_nodes=2, secure=False)
    assert supernode_command(forking, 9100, "partition-id=0")[-3:] == ["--isolation", "process", "--insecure"]
    plain = TrialPlan(folder=tmp_path, num_nodes=2, secure=False, fork_client_apps=False)
    assert "--isolation" not in supernode_command(plain, 9100, "partition-id=0")


def test_children_that_took_a_task_move_from_spare_to_running() -> None:
    state = ExecutorState(spare=4321, failed_spares=2)
    record_acquired(state, struct.pack(PID_FORMAT, 4321) + struct.pack(PID_FORMAT, 99))
    assert state.spare is None
    assert sorted(state.running) == [99, 4321]
    assert state.failed_spares == 0


def test_a_spare_that_exits_without_a_task_counts_as_failed_and_a_finished_task_is_reaped() -> None:
    failing = os.fork()
    if failing == 0:
        os._exit(3)
    finished = os.fork()
    if finished == 0:
        os._exit(0)
    state = ExecutorState(spare=failing, running={finished: time.monotonic()})
    deadline = time.monotonic() + 30
    while (state.spare is not None or state.running) and time.monotonic() < deadline:
        reap_children(state)
        time.sleep(0.05)
    assert state.spare is None
    assert state.failed_spares == 1
    assert state.running == {}


def test_fl_poison_deploy_executor_refuses_a_bad_address_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from fl_poison.cli import main

    assert main(["deploy", "executor", "--runtime-api-address", "nowhere", "--insecure"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "--runtime-api-address 'nowhere': expected HOST:PORT" in error


def test_fl_poison_deploy_executor_refuses_to_preload_the_project(capsys: pytest.CaptureFixture[str]) -> None:
    from fl_poison.cli import main

    arguments = ["deploy", "executor", "--runtime-api-address", "127.0.0.1:9", "--insecure", "--preload", "clients"]
    assert main(arguments) == 1
    assert "--preload" in capsys.readouterr().err
