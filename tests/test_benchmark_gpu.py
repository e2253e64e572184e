"""experiments.benchmark_gpu: argument checks, the GPU-memory sampler, and the --tiny run end to end through Flower."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from e2e_helpers import RUN_TIMEOUT

from experiments import benchmark_gpu
from experiments.benchmark_gpu import GpuMemorySampler, GpuSample, parse_compute_apps, parse_memory_used

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``benchmark_gpu.main(argv)``; its exit status and stderr."""
    code = benchmark_gpu.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--shares", "0,0.5"], "--shares"),
        (["--shares", "1.5"], "--shares"),
        (["--shares", "a quarter"], "--shares"),
        (["--shares", "nan"], "--shares"),
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "two"], "--rounds"),
        (["--cpus-per-client", "0"], "--cpus-per-client"),
        (["--dataset", "/no/such/folder"], "--dataset"),
        (["--tiny", "--dataset", "/no/such/folder"], "--dataset"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_a_bad_argument_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], option: str
) -> None:
    code, err = run_main(capsys, *argv, "--out", str(tmp_path / "b.json"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("benchmark_gpu: error:") and option in err
    assert not (tmp_path / "b.json").exists()


def test_without_cuda_and_without_tiny_it_says_a_gpu_is_needed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(capsys, "--out", str(tmp_path / "b.json"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "GPU is needed" in err and "--tiny" in err
    assert not (tmp_path / "b.json").exists()


def test_the_command_line_without_cuda_exits_2_with_the_message(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark_gpu", "--out", str(tmp_path / "b.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [completed.stderr.strip()]
    assert "GPU is needed" in completed.stderr and "--tiny" in completed.stderr


def test_nvidia_smi_output_is_parsed() -> None:
    text = "101, ray::ClientAppActor.run, 812\n101, ray::ClientAppActor.run, 10\n7, python, [N/A]\n\n55, a, b, c, 300\n"
    assert parse_compute_apps(text) == {101: ("ray::ClientAppActor.run", 822.0), 55: ("a, b, c", 300.0)}
    assert parse_memory_used("1200\n800\n") == 2000.0
    assert parse_memory_used("[N/A]\n") is None


def fake_sampler(readings: list[GpuSample], roles: dict[int, str]) -> GpuMemorySampler:
    """A sampler whose ``nvidia-smi`` returns ``readings`` in turn (the last one for ever)."""
    queue = list(readings)

    def query() -> GpuSample:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return GpuMemorySampler(query=query, interval=0.001, role_of=lambda pid, name: roles.get(pid, "unknown"))


def wait_for_samples(sampler: GpuMemorySampler, count: int) -> None:
    """Block until the sampler's thread has taken ``count`` readings (at most 10 s)."""
    deadline = time.monotonic() + 10
    while sampler.samples < count and time.monotonic() < deadline:
        time.sleep(0.001)


def test_sampler_reports_the_largest_client_actor_and_leaves_the_baseline_out() -> None:
    readings = [
        GpuSample(1000.0, {1: ("python", 900.0)}),  # baseline: this process
        GpuSample(2500.0, {1: ("python", 900.0), 10: ("flwr-simulation", 600.0), 11: ("ray::A", 400.0)}),
        GpuSample(4000.0, {1: ("python", 950.0), 10: ("flwr-simulation", 700.0), 11: ("ray::A", 1100.0)}),
        GpuSample(3000.0, {10: ("flwr-simulation", 650.0), 11: ("ray::A", 300.0), 12: ("ray::B", 1000.0)}),
    ]
    sampler = fake_sampler(readings, {10: "other", 11: "client", 12: "client"})
    with sampler:
        wait_for_samples(sampler, 4)
    report = sampler.report(concurrent_clients=2)
    assert report["per_client_mib"] == 1100.0
    assert report["client_processes"] == 2
    assert report["per_client_mean_mib"] == 1050.0
    assert report["other_peak_mib"] == 700.0
    assert report["total_peak_mib"] == 1950.0  # the last reading: 650 + 300 + 1000
    assert report["device_growth_peak_mib"] == 3000.0
    assert "largest Ray client" in str(report["method"])
    processes = report["processes"]
    assert isinstance(processes, list) and [entry["pid"] for entry in processes] == [10, 11, 12]


def test_sampler_falls_back_when_processes_cannot_be_named_or_listed() -> None:
    unnamed = fake_sampler([GpuSample(0.0, {}), GpuSample(900.0, {5: ("", 300.0), 6: ("", 600.0)})], {})
    with unnamed:
        wait_for_samples(unnamed, 2)
    assert unnamed.report(concurrent_clients=2)["per_client_mib"] == 450.0
    unlisted = fake_sampler([GpuSample(100.0, {}), GpuSample(1000.0, {})], {})
    with unlisted:
        wait_for_samples(unlisted, 2)
    report = unlisted.report(concurrent_clients=2)
    assert report["per_client_mib"] == 300.0 and "memory.used" in str(report["method"])


def test_sampler_without_nvidia_smi_reports_unavailable() -> None:
    def missing() -> GpuSample:
        raise FileNotFoundError("nvidia-smi")

    with GpuMemorySampler(query=missing) as sampler:
        pass
    report = sampler.report(concurrent_clients=4)
    assert report["per_client_mib"] is None and str(report["method"]).startswith("unavailable")


@pytest.mark.e2e
def test_tiny_run_goes_end_to_end_through_flower(warm_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.benchmark_gpu",
            "--tiny",
            "--out",
            str(out),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        env=warm_env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tiny"] is True and report["device"] == "cpu"
    assert report["settings"]["num-clients"] == 4 and report["settings"]["model"] == "small-cnn"
    assert report["settings"]["partitioning"] == "random-subsets"  # seed 004's base table underneath
    assert report["data_prepare_seconds"] > 0 and 1 <= report["data_partitions"] <= 4
    assert report["data_cache_dir"] == warm_env.get("FL_POISON_CACHE_DIR")  # the tests' private cache
    loop = report["loop"]
    assert loop["seconds"] > 0 and 0.0 <= loop["accuracy"] <= 1.0
    assert [row["round"] for row in loop["rounds"]] == [0, 1, 2]
    (row,) = report["shares"]
    assert row["gpus_per_client"] == 0 and row["concurrent_clients"] >= 1
    assert row["flower_seconds"] > 0 and row["loop_seconds"] == loop["seconds"]
    assert row["flower_serverapp_seconds"] > 0
    assert row["flower_breakdown_seconds"] and row["flower_seconds_per_round"] > 0
    assert row["ratio_flower_over_loop"] == pytest.approx(row["flower_seconds"] / row["loop_seconds"], rel=0.02)
    assert 0.0 <= row["flower_accuracy"] <= 1.0 and 0.0 <= row["loop_accuracy"] <= 1.0
    assert abs(row["flower_accuracy"] - row["loop_accuracy"]) < 1e-6  # same computation on the CPU
    assert "gpu_memory_per_client_mib" in row and "gpu_memory_method" in row
    assert [entry["round"] for entry in row["flower_rounds"]] == [0, 1, 2]
    assert Path(row["flower_result_folder"]).parent == tmp_path / "runs"
    table = out.with_suffix(".md").read_text()
    assert "| GPU share per client |" in table and table.count("\n| 0 |") == 1
    assert "| GPU share per client |" in completed.stdout
