"""Launching Flower: a stale local SuperLink is stopped first; the environment Flower runs with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fl_poison.launch import flower_home, local_control_address, stale_superlinks, stop_stale_superlinks

SUPERLINK = "/usr/bin/flower-superlink"


def fake_process(proc: Path, pid: int, command: list[str], working: Path) -> None:
    """A /proc entry: the NUL-separated command line and the ``cwd`` link."""
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(word.encode() for word in command) + b"\0")
    os.symlink(working, entry / "cwd")


def superlink_command(control_port: int) -> list[str]:
    return ["python3", SUPERLINK, "--insecure", "--simulation", "--control-api-address", f"127.0.0.1:{control_port}"]


def test_only_a_superlink_of_this_control_address_in_a_removed_folder_is_stale(tmp_path):
    proc, alive = tmp_path / "proc", tmp_path / "alive"
    alive.mkdir()
    removed = tmp_path / "gone (deleted)"  # how Linux shows a removed working folder
    fake_process(proc, 101, superlink_command(39093), removed)  # stale
    fake_process(proc, 102, superlink_command(39093), alive)  # healthy
    fake_process(proc, 103, superlink_command(39193), removed)  # another FLWR_HOME's SuperLink
    fake_process(
        proc, 104, ["python3", "/usr/bin/flower-superexec", "--control-api-address", "127.0.0.1:39093"], removed
    )
    fake_process(proc, 105, ["python3", SUPERLINK, "--control-api-address"], removed)  # no value: not ours
    (proc / "self").mkdir()
    assert stale_superlinks(proc, "127.0.0.1:39093") == [101]
    assert stale_superlinks(proc, "127.0.0.1:39193") == [103]
    assert stale_superlinks(tmp_path / "no-proc", "127.0.0.1:39093") == []


def test_the_control_address_follows_the_environment():
    assert local_control_address({}) == "127.0.0.1:39093"
    assert local_control_address({"FLWR_LOCAL_CONTROL_API_PORT": "39793"}) == "127.0.0.1:39793"


def test_flower_runs_in_flower_home_which_is_created(tmp_path, monkeypatch):
    home = tmp_path / "flwr-home"
    assert flower_home({"FLWR_HOME": str(home)}) == home and home.is_dir()
    # a relative FLWR_HOME is made absolute once, against this process's working folder
    monkeypatch.chdir(tmp_path)
    assert flower_home({"FLWR_HOME": "relative-home"}) == tmp_path.resolve() / "relative-home"
    # without FLWR_HOME (in the environment given or this process's): Flower's own default
    monkeypatch.delenv("FLWR_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert flower_home({}) == (tmp_path / "user" / ".flwr").resolve()


def test_a_stale_superlink_is_stopped(tmp_path, capsys):
    """A real child process stands for the SuperLink: SIGTERM ends it and the call waits for that."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = tmp_path / "proc"
        fake_process(proc, sleeper.pid, superlink_command(39593), tmp_path / "gone (deleted)")
        stopped = stop_stale_superlinks({"FLWR_LOCAL_CONTROL_API_PORT": "39593"}, proc_root=proc)
        assert stopped == [sleeper.pid]
        assert sleeper.wait(timeout=10) == -15  # ended by SIGTERM
        assert f"stopping the local SuperLink (pid {sleeper.pid})" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()


def test_flower_runs_with_a_fast_superexec_poll_unless_the_user_set_one():
    from fl_poison.deploy.local_trial import flower_environment
    from fl_poison.launch import run_environment

    assert run_environment({"PATH": "/bin"})["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.1"
    assert run_environment({"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "2"})["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "2"
    assert run_environment({})["FLWR_TELEMETRY_ENABLED"] == "0"
    assert flower_environment({})["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.1"
