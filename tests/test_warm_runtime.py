"""The warm runtime a sweep's runs share: a Ray head and a SuperLink of its own, stopped by PID.

Unit tests check the pieces (addresses, command line, the temporary folder's length, what a sweep
passes to its cells); one test starts the real runtime, runs two tiny experiments through Flower
in it, checks that both drivers connected to the shared head instead of starting Ray, that the
results are those of a run through the ordinary local SuperLink, and that nothing is left.
"""

from __future__ import annotations

import csv
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import experiments.sweep as sweep_module
from experiments.sweep import run_sweep
from fl_poison.core.processes import descendants
from fl_poison.core.ray_head import (
    LONGEST_TEMP_FOLDER,
    RAY_ADDRESS_VARIABLE,
    RayHead,
    RayHeadError,
    address_answers,
    ray_start_command,
    short_temp_folder,
    worker_port_range,
)
from fl_poison.launch import run_experiment
from fl_poison.warm_runtime import FORK_BY_DEFAULT, shell_exports, superlink_answers, warm_runtime


def test_an_address_answers_only_while_something_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert address_answers(address)
    assert not address_answers(address)  # closed now
    for bad in ("", "127.0.0.1", "127.0.0.1:http", ":80"):
        assert not address_answers(bad)


def test_the_head_listens_on_loopback_in_its_own_folder_without_dashboard(tmp_path):
    command = ray_start_command(6380, tmp_path)
    assert command[:4] == ["ray", "start", "--head", "--block"]
    assert {"--node-ip-address=127.0.0.1", "--port=6380", f"--temp-dir={tmp_path}"} <= set(command)
    assert "--include-dashboard=false" in command


def test_heads_side_by_side_get_disjoint_worker_ports_within_their_range(tmp_path):
    assert worker_port_range(0, 1) == (20000, 31999)
    assert [worker_port_range(slot, 3) for slot in range(3)] == [(20000, 23999), (24000, 27999), (28000, 31999)]
    for slots in (2, 5, 16, 64):
        ranges = [worker_port_range(slot, slots) for slot in range(slots)]
        assert all(low <= high for low, high in ranges)
        assert all(high < next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:], strict=False))
        assert ranges[0][0] >= 20000 and ranges[-1][1] <= 31999  # above Ray's default, below ephemeral ports
    for slot, slots in ((2, 2), (-1, 2)):
        with pytest.raises(ValueError, match="slot"):
            worker_port_range(slot, slots)
    command = ray_start_command(6380, tmp_path, (26000, 31999))
    assert command[-2:] == ["--min-worker-port=26000", "--max-worker-port=31999"]
    assert not any("worker-port" in part for part in ray_start_command(6380, tmp_path))


def test_the_temporary_folder_leaves_room_for_ray_socket_paths(monkeypatch, tmp_path):
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    folder = short_temp_folder()
    try:
        assert folder.is_dir() and len(str(folder)) <= LONGEST_TEMP_FOLDER
        assert folder.parent == Path("/tmp")  # the deep temporary folder was too long
    finally:
        folder.rmdir()


def write_two_cell_sweep(folder: Path) -> Path:
    path = folder / "sweep.toml"
    path.write_text(
        '[base]\ndataset = "digits"\nnum-clients = 2\nnum-rounds = 1\nlocal-epochs = 1\n\n'
        '[grid]\nstrategy = ["fedavg", "median"]\n'
    )
    return path


def stand_in_runner(seen: list[object]):
    """A run_experiment that records the environment it was given and writes a finished run."""

    def stand_in(settings, cpus, gpus, verbose, environment=None):
        seen.append(environment)
        folder = Path(settings["output-dir"]) / settings["run-name"]
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text('{"accuracy": 0.5, "loss": 1.0}')
        return folder

    return stand_in


class FakeRuntimes:
    """Stands in for warm_runtime: numbered runtimes, the first of which stops answering after ``healthy_checks``."""

    def __init__(self, healthy_checks: int = 10**6) -> None:
        self.started: list[int] = []
        self.stopped: list[int] = []
        self.forks: list[bool] = []
        self.worker_ports: list[tuple[int, int] | None] = []
        self.threads: list[str | None] = []
        self.healthy_checks = healthy_checks

    def __call__(self, fork_simulations: bool, worker_ports: tuple[int, int] | None = None, base=None):
        self.forks.append(fork_simulations)
        self.worker_ports.append(worker_ports)
        self.threads.append(None if base is None else base.get("OMP_NUM_THREADS"))
        number = len(self.started)
        self.started.append(number)
        fakes = self

        class Runtime:
            environment = {"RAY_ADDRESS": f"127.0.0.1:{number}", "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "2"}

            def answers(self):
                fakes.healthy_checks -= 1
                return number > 0 or fakes.healthy_checks >= 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fakes.stopped.append(number)
                return False

        return Runtime()


def test_a_sweep_passes_its_runtime_environment_to_every_cell(tmp_path, monkeypatch):
    """The cells get the runtime's environment; when it cannot start, one line says so and they get None."""
    seen: list[object] = []
    monkeypatch.setattr(sweep_module, "run_experiment", stand_in_runner(seen))
    runtimes = FakeRuntimes()
    monkeypatch.setattr(sweep_module, "warm_runtime", runtimes)
    lines: list[str] = []
    run_sweep(write_two_cell_sweep(tmp_path), tmp_path / "out", progress=lines.append)
    assert [env["RAY_ADDRESS"] for env in seen] == ["127.0.0.1:0", "127.0.0.1:0"]
    assert runtimes.started == runtimes.stopped == [0]  # one runtime, stopped at the end
    assert runtimes.forks == [FORK_BY_DEFAULT]
    assert runtimes.worker_ports == [None]  # one runtime: Ray's default worker ports
    assert runtimes.threads == [None]  # and this process's environment
    assert any(line.startswith("[sweep] shared runtime: Ray head at 127.0.0.1:0") for line in lines)
    run_sweep(write_two_cell_sweep(tmp_path), tmp_path / "out-no-fork", progress=lines.append, fork_simulations=False)
    assert runtimes.forks == [FORK_BY_DEFAULT, False]

    def no_head(fork_simulations: bool, worker_ports: tuple[int, int] | None = None, base=None):
        raise RayHeadError("ray start exited with code 1")

    seen.clear()
    lines.clear()
    monkeypatch.setattr(sweep_module, "warm_runtime", no_head)
    run_sweep(write_two_cell_sweep(tmp_path), tmp_path / "out2", progress=lines.append)
    assert seen == [None, None]
    assert lines.count("[sweep] no shared runtime (ray start exited with code 1); every cell starts its own Ray") == 1

    seen.clear()
    monkeypatch.setattr(sweep_module, "warm_runtime", lambda **_: pytest.fail("asked not to start a runtime"))
    run_sweep(write_two_cell_sweep(tmp_path), tmp_path / "out3", progress=lines.append, shared_runtime=False)
    assert seen == [None, None]


def test_a_runtime_that_stops_answering_is_replaced_before_the_next_cell(tmp_path, monkeypatch):
    seen: list[object] = []
    monkeypatch.setattr(sweep_module, "run_experiment", stand_in_runner(seen))
    runtimes = FakeRuntimes(healthy_checks=0)  # runtime 0 fails its first check (before the second cell)
    monkeypatch.setattr(sweep_module, "warm_runtime", runtimes)
    lines: list[str] = []
    run_sweep(write_two_cell_sweep(tmp_path), tmp_path / "out", progress=lines.append)
    assert [env["RAY_ADDRESS"] for env in seen] == ["127.0.0.1:0", "127.0.0.1:1"]
    assert runtimes.started == runtimes.stopped == [0, 1]
    assert "[sweep] the shared runtime stopped answering; starting a new one" in lines


def test_cells_that_run_at_once_never_share_a_runtime(tmp_path, monkeypatch):
    """--jobs 2: two runtimes, each leased by one cell at a time (one Ray head's CPUs serve one run's actor pool)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    both_running = threading.Barrier(2, timeout=30)
    lock = threading.Lock()
    running: dict[str, int] = {}
    overlaps: list[tuple[str, ...]] = []
    cpus_seen: list[float] = []

    def stand_in(settings, cpus, gpus, verbose, environment=None):
        address = environment["RAY_ADDRESS"]
        with lock:
            running[address] = running.get(address, 0) + 1
            overlaps.append(tuple(sorted(running)))
            cpus_seen.append(cpus)
            assert running[address] == 1, f"two cells at once on {address}"
        both_running.wait()  # the two cells of a pair run at the same time
        folder = Path(settings["output-dir"]) / settings["run-name"]
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text('{"accuracy": 0.5, "loss": 1.0}')
        both_running.wait()
        with lock:
            running[address] -= 1
            if not running[address]:
                del running[address]
        return folder

    monkeypatch.setattr(sweep_module, "run_experiment", stand_in)
    runtimes = FakeRuntimes()
    monkeypatch.setattr(sweep_module, "warm_runtime", runtimes)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[base]\ndataset = "digits"\nnum-clients = 2\nnum-rounds = 1\n\n[grid]\nseed = [1, 2, 3, 4]\n')
    lines: list[str] = []
    table = run_sweep(sweep, tmp_path / "out", jobs=2, progress=lines.append)
    assert [row["status"] for row in table.rows.values()] == ["ok"] * 4
    assert sorted(runtimes.started) == sorted(runtimes.stopped) == [0, 1]  # two runtimes, both stopped at the end
    assert ("127.0.0.1:0", "127.0.0.1:1") in overlaps  # two cells at once, one on each runtime
    assert cpus_seen == [2.0] * 4  # each cell's clients ask for 2 of the head's 4 CPUs
    assert sorted(runtimes.worker_ports) == [(20000, 25999), (26000, 31999)]  # disjoint worker ports
    assert runtimes.threads == ["1", "1"]  # clients holding 2 CPUs each still train on one thread
    assert sum(line.startswith("[sweep] shared runtime 1 of 2: Ray head at") for line in lines) == 1
    assert sum(line.startswith("[sweep] shared runtime 2 of 2: Ray head at") for line in lines) == 1


def final_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "rounds.csv", newline="") as stream:
        return [{key: row[key] for key in ("round", "accuracy", "loss")} for row in csv.DictReader(stream)]


@pytest.mark.e2e
def test_runs_in_the_warm_runtime_use_its_ray_head_and_repeat_each_other(tmp_path):
    """Two runs of one seed in one warm runtime: each its own driver and forked process, same rows, all stopped after.

    That a warm-runtime run gives the rows of an ordinary ``fl-poison run`` is the end-to-end test
    ``test_same_seed_gives_identical_metrics_through_an_ordinary_superlink``.
    """
    settings = {"dataset": "digits", "num-clients": 2, "num-rounds": 2, "local-epochs": 1, "seed": 3}
    with warm_runtime() as runtime:
        assert runtime.ray_head is not None
        head_folder, head_group = runtime.ray_head.temp_folder, runtime.ray_head.process.pid
        superlink_pid = runtime.superlink.pid
        port = int(runtime.environment["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])
        assert runtime.environment[RAY_ADDRESS_VARIABLE] == runtime.ray_head.address
        assert superlink_answers(port) and runtime.answers()
        warm = [
            run_experiment(
                {**settings, "output-dir": str(tmp_path), "run-name": f"warm-{index}"},
                1.0,
                0.0,
                False,
                runtime.environment,
            )
            for index in range(2)
        ]
        # each run's simulation connected to the head as a driver (a driver log per run in its session)
        drivers = {log.resolve() for log in head_folder.glob("session_*/logs/python-core-driver-*.log")}
        assert len(drivers) == 2
        # each simulation ran in a process forked from the preloaded executor, not below the SuperLink
        assert runtime.executor is not None
        executor_pid = runtime.executor.pid
        deadline = time.monotonic() + 60  # the executor reports a run once its process has exited
        while runtime.executor.log_text().count("ran its task") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runtime.executor.log_text().count("simulation process") == 2
        below = [pid for pid, _ in descendants(superlink_pid)] + [pid for pid, _ in descendants(head_group)]
        below += [pid for pid, _ in descendants(executor_pid)]
    assert final_rows(warm[0]) == final_rows(warm[1])
    assert not head_folder.exists() and not runtime.home.exists()
    assert not superlink_answers(port) and not address_answers(runtime.ray_head.address)
    assert not runtime.answers()
    for pid in [superlink_pid, executor_pid, head_group, *below]:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] in ("Z", "X")


def test_shell_exports_quote_the_folder():
    environment = {
        "FLWR_HOME": "/tmp/a b",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "5000",
        "FLWR_LOCAL_CONTROL_API_PORT": "5000",
        "RAY_ADDRESS": "127.0.0.1:1",
    }
    assert shell_exports(environment) == (
        "export FLWR_HOME='/tmp/a b' FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=5000 FLWR_LOCAL_CONTROL_API_PORT=5000"
    )


def ignore_sigint() -> None:
    """In a child before ``exec``: ignore SIGINT, as a background job of a shell without job control does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.e2e
def test_the_runtime_command_holds_a_superlink_until_interrupted(tmp_path):
    """``fl-poison runtime`` as a real process: ready line, exports that reach its SuperLink, Ctrl-C stops all.

    It is started with SIGINT ignored, as a shell without job control starts a background command:
    SIGINT must stop it all the same. Its stderr goes to a file (a pipe nobody reads could fill and block it); when it does not stop
    in time, SIGUSR1 makes it print every thread's stack there, and the failure shows it.
    """
    stderr_path = tmp_path / "runtime.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "fl_poison.cli", "runtime"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
            preexec_fn=ignore_sigint,
        )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 180
        while not (lines and lines[-1].startswith("export ")) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert lines[0].startswith("[fl-poison] runtime ready: SuperLink on 127.0.0.1:")
        exported = dict(word.split("=", 1) for word in shlex.split(lines[-1])[1:])
        port = int(exported["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"])
        home = Path(exported["FLWR_HOME"])
        assert superlink_answers(port) and home.is_dir()
        below = [pid for pid, _ in descendants(process.pid)]
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        try:
            code = process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            pytest.fail(f"no stop 240 s after Ctrl-C; its stacks:\n{stderr_path.read_text()[-6000:]}")
        assert code == 0
        assert "runtime stopped" in stderr_path.read_text()
        print(f"runtime stopped {time.monotonic() - started:.1f} s after Ctrl-C")
        assert not superlink_answers(port) and not home.exists()
        for pid in below:
            assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] in ("Z", "X")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class StandInProcess:
    """What :meth:`WarmRuntime.answers` reads of a process: ``poll()`` (None while it runs)."""

    def __init__(self, exit_code: int | None = None) -> None:
        self.process = self
        self.exit_code = exit_code

    def poll(self) -> int | None:
        return self.exit_code


@pytest.mark.parametrize(
    ("superlink_exit", "executor", "head_exit", "expected"),
    [
        (None, StandInProcess(), None, True),
        (None, None, None, True),  # no executor: the SuperLink starts the simulations itself
        (None, StandInProcess(1), None, False),  # the executor died: the sweep must start a new runtime
        (0, StandInProcess(), None, False),
        (None, StandInProcess(), 1, False),
    ],
)
def test_a_runtime_answers_only_while_all_its_processes_run(
    monkeypatch, tmp_path, superlink_exit, executor, head_exit, expected
):
    import fl_poison.warm_runtime as warm

    monkeypatch.setattr(warm, "superlink_answers", lambda port: True)
    monkeypatch.setattr(warm, "address_answers", lambda address: True)
    head = RayHead(address="127.0.0.1:1", temp_folder=tmp_path, process=StandInProcess(head_exit))
    runtime = warm.WarmRuntime(
        {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "1"}, StandInProcess(superlink_exit), executor, head, tmp_path
    )
    assert runtime.answers() is expected
