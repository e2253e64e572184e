"""The seed-004 setting on CIFAR-10 with ResNet-18 through Flower on one GPU, per GPU share, against a bare loop.

Usage::

    python -m experiments.benchmark_gpu [--rounds 15] [--shares 0.1,0.25,0.5] [--dataset DIR]
        [--cpus-per-client 1] [--runs-dir DIR] [--out FILE.json]
    python -m experiments.benchmark_gpu --tiny      # CPU only, well under a minute: the same code path

The setting is the ``[base]`` table of ``experiments/sweeps/seed004.toml`` (100 clients drawing
500 rows each, 10 sampled per round, 1 local epoch, batch 16, Adam 1e-3; no attacker) with
``dataset`` the CIFAR-10 folder (default ``/work/shared/data/cifar10-jpeg``, a JPEG copy in the
Hugging Face parquet layout), ``model=resnet18``, ``device=cuda`` and ``--rounds`` rounds.

What is measured, and why
-------------------------
1. **Flower, once per GPU share** ``s`` (``--shares``): :func:`experiments.benchmark_flower_vs_loop.flower_run`,
   i.e. :func:`fl_poison.launch.run_experiment` with ``client-resources-num-gpus=s``, timed end to
   end from this process (``flwr`` CLI, SuperLink hand-off, Ray start-up, every round's messages,
   the ServerApp's evaluation on the GPU, the result files); the ServerApp's own ``wall_seconds``,
   its seconds per round after round 0 (the steady state, without start-up) and where the time
   went (``flower_breakdown_seconds``: the run's ``timings.json`` phases on this process's clock,
   see :func:`experiments.benchmark_flower_vs_loop.breakdown`) are reported too. The share
   decides how many clients train at once: Ray places ``min(floor(GPUs / s), floor(CPUs /
   cpus-per-client))`` client actors (Flower's ``pool_size_from_resources``), and no more than
   the 10 clients sampled per round train at once; a share is a scheduling unit, not a memory
   limit.
2. **The bare loop, once**: :func:`experiments.benchmark_flower_vs_loop.plain_loop` with
   ``train_device=cuda`` in this process: the same data, seeds, sampling, local training,
   FedAvg and evaluation after every round, one client after another on the same GPU. It does
   not depend on the share, so it runs once (first) and every share is compared with it:
   ``ratio = Flower seconds / loop seconds`` (Flower's overhead net of what concurrency buys)
   and ``speed-up = loop / Flower``. Both final accuracies are reported: they should agree
   closely (GPU kernels are not bitwise deterministic), showing that both timed the same
   computation. The loop's torch threads are ``floor(cpus-per-client)``, the count Ray gives a
   client actor.

Data: before anything is timed, :func:`prepare_data` decodes the test set and every partition the
run will sample (``data_prepare_seconds``), which fills the node-local cache of decoded data
(``FL_POISON_CACHE_DIR``, see :mod:`fl_poison.core.data_cache`), then empties this process's
in-memory caches. The loop and Flower's clients then both read the decoded partitions from that
cache, and neither side's time includes JPEG decoding, whichever runs first. Flower's clients use
the cache of the environment the local SuperLink was started with (by default both are
``~/.cache/fl_poison``; the report names this process's). With ``FL_POISON_CACHE_DIR=off`` each
side decodes for itself, inside its time.
3. **GPU memory per client.** A client's peak ``torch.cuda.max_memory_allocated`` lives in its
   Ray actor process and never reaches this one, so memory is read from outside: while each
   Flower run is in flight a background thread (:class:`GpuMemorySampler`) polls
   ``nvidia-smi --query-compute-apps=pid,process_name,used_memory`` and
   ``nvidia-smi --query-gpu=memory.used`` every 0.5 s and keeps each new process's peak
   (processes already on the GPU before the run, this one included, are left out; PyTorch's
   caching allocator keeps what it has reserved, so a process's usage only grows and readings
   half a second apart see its peak). A process
   whose name or ``/proc/PID/cmdline`` starts with ``ray::`` is a Ray client actor (one client
   trains in it at a time); the other new process is the simulation's ServerApp, which evaluates
   on the GPU. The headline ``gpu_memory_per_client_mib`` is the largest client actor's peak:
   what the driver charged that process, i.e. its CUDA context (several hundred MiB) plus what
   PyTorch's caching allocator reserved, which is more than ``max_memory_allocated``: it is the
   number that decides how many clients fit on a card. When ``nvidia-smi`` shows processes it
   cannot name (another PID namespace, e.g. some containers), it is the peak total of the new
   processes divided by their number; when it shows none, the growth of the device's
   ``memory.used`` divided by the concurrent clients plus the ServerApp. The method used is
   recorded beside the number, with every process's peak. For reference the loop's own
   ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` (one client training at a
   time, plus evaluation) are reported as well.

``--tiny`` runs the same path (the Flower run, the loop, the sampler, the JSON and the markdown) on
a CPU-only machine in about half a minute: digits, 4 clients drawing 100 rows, 2 per round, 2
rounds, ``small-cnn``, Adam at 1e-2, ``device=cpu`` and one Flower run at GPU share 0; it ignores
``--shares`` and ``--dataset`` (both are still checked when given). Without CUDA and without
``--tiny`` the benchmark stops with one line (exit 2), as it does for a bad argument.

Outputs: the table on stdout, a JSON report (default ``experiments/results/benchmark_gpu.json``)
and the same table as markdown beside it (``.md``). Each Flower run's result folder (with its
``flower.log``) goes under ``--runs-dir`` (default: a new temporary folder, named in the report).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import torch

from experiments.benchmark_flower_vs_loop import LoopResult, flower_run, plain_loop
from experiments.sweep import load_sweep
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.data import DataSpec, all_partition_indices, client_data, dataset_facts, dataset_info, test_data
from fl_poison.core.data_cache import cache_root
from fl_poison.core.provenance import environment_versions
from fl_poison.core.results import atomic_write_bytes, write_json
from fl_poison.core.settings import ConfigError
from fl_poison.launch import CommandError, check_client_resources
from strategies.sampling import PartitionSampler

DEFAULT_OUT = Path("experiments/results/benchmark_gpu.json")
DEFAULT_DATASET = Path("/work/shared/data/cifar10-jpeg")
DEFAULT_SHARES = (0.1, 0.25, 0.5)
DEFAULT_ROUNDS = 15
TINY_ROUNDS = 2
SEED_FILE = Path(__file__).resolve().parent / "sweeps" / "seed004.toml"
POLL_SECONDS = 0.5
NVIDIA_SMI_TIMEOUT = 10.0
PROGRAM = "benchmark_gpu"

# settings of the GPU run on top of seed 004's [base] table
GPU_SETTINGS: dict[str, object] = {"model": "resnet18", "device": "cuda", "save-model": False}
# the tiny run: digits, 4 clients of 100 drawn rows, 2 per round, small-cnn, on the CPU; Adam at 1e-2
# rather than 1e-3 so that two rounds of 7 local steps move the accuracy off chance
TINY_SETTINGS: dict[str, object] = {
    "dataset": "digits",
    "model": "small-cnn",
    "num-clients": 4,
    "clients-per-round": 2,
    "samples-per-client": 100,
    "learning-rate": 0.01,
    "device": "cpu",
    "save-model": False,
}


class UsageError(Exception):
    """A bad command-line argument: reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one :class:`UsageError` line instead of usage text."""

    def error(self, message: str) -> NoReturn:
        """Raise ``message`` as a :class:`UsageError`.

        Parameters
        ----------
        message : str
            argparse's description of the problem (it names the option).
        """
        raise UsageError(message)


# ---------------------------------------------------------------------------------------------
# GPU memory, read from outside the client processes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSample:
    """One reading of ``nvidia-smi``.

    Parameters
    ----------
    device_used_mib : float or None
        ``memory.used`` summed over the visible GPUs; None when unreadable.
    processes : dict[int, tuple[str, float]]
        Per process id: its name as ``nvidia-smi`` gives it and its ``used_memory`` in MiB,
        summed over GPUs.
    """

    device_used_mib: float | None
    processes: dict[int, tuple[str, float]]


def parse_compute_apps(text: str) -> dict[int, tuple[str, float]]:
    """Parse ``nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits``.

    Rows whose pid or memory is not a number (``[N/A]``, ``[Insufficient Permissions]``) are
    skipped; a process listed on several GPUs gets the sum.

    Parameters
    ----------
    text : str
        The command's output, one ``pid, name, MiB`` row per line (a name may hold commas).
    """
    processes: dict[int, tuple[str, float]] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(",")
        name, _, tail = rest.rpartition(",")
        try:
            pid, memory = int(head), float(tail)
        except ValueError:
            continue
        name = name.strip()
        previous = processes.get(pid, (name, 0.0))[1]
        processes[pid] = (name, previous + memory)
    return processes


def parse_memory_used(text: str) -> float | None:
    """Sum of ``nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits`` over GPUs (MiB).

    Parameters
    ----------
    text : str
        The command's output, one number per GPU; None when no line is a number.
    """
    values = []
    for line in text.splitlines():
        try:
            values.append(float(line.strip()))
        except ValueError:
            continue
    return sum(values) if values else None


def query_nvidia_smi() -> GpuSample:
    """Read the GPUs' used memory and their compute processes through ``nvidia-smi``.

    Raises
    ------
    OSError
        When ``nvidia-smi`` cannot be run (not installed).
    subprocess.SubprocessError
        When it fails or hangs for :data:`NVIDIA_SMI_TIMEOUT` seconds.
    """

    def ask(query: str) -> str:
        completed = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=True,
        )
        return completed.stdout

    device = parse_memory_used(ask("--query-gpu=memory.used"))
    return GpuSample(device, parse_compute_apps(ask("--query-compute-apps=pid,process_name,used_memory")))


def process_role(pid: int, name: str) -> str:
    """The role of a GPU process: ``client``, ``other`` or ``unknown``.

    ``client`` when its ``nvidia-smi`` name or its ``/proc/PID/cmdline`` holds ``ray::`` (Ray
    titles its actors so), ``other`` when either names it otherwise (the simulation's ServerApp),
    ``unknown`` when neither does (a PID of another namespace).

    Parameters
    ----------
    pid : int
        The process id ``nvidia-smi`` reports (the host's, which may not exist in this PID namespace).
    name : str
        The process name ``nvidia-smi`` reports.
    """
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command_line = ""
    if "ray::" in name or "ray::" in command_line:
        return "client"
    if command_line.strip() or (name.strip() and not name.startswith("[")):
        return "other"
    return "unknown"


@dataclass
class ProcessPeak:
    """The largest ``used_memory`` seen of one GPU process during a run.

    Parameters
    ----------
    pid : int
        Its process id.
    name : str
        Its name as ``nvidia-smi`` gives it.
    role : str
        ``client``, ``other`` or ``unknown`` (see :func:`process_role`), decided when first seen.
    peak_mib : float
        The peak in MiB.
    """

    pid: int
    name: str
    role: str
    peak_mib: float = 0.0


@dataclass
class GpuMemorySampler:
    """Poll GPU memory in a background thread while a Flower run is in flight (a context manager).

    Processes on the GPU when sampling starts (this one, a user's other jobs) are the baseline
    and left out; the device's ``memory.used`` at the start is subtracted from its peak.

    Parameters
    ----------
    query : Callable[[], GpuSample]
        One reading (default :func:`query_nvidia_smi`).
    interval : float
        Seconds between readings.
    role_of : Callable[[int, str], str]
        The role of a new process from its pid and name (default :func:`process_role`).
    """

    query: Callable[[], GpuSample] = query_nvidia_smi
    interval: float = POLL_SECONDS
    role_of: Callable[[int, str], str] = process_role
    unavailable: str = ""
    samples: int = 0
    failed_samples: int = 0
    baseline_pids: frozenset[int] = frozenset()
    baseline_device_mib: float | None = None
    device_peak_mib: float | None = None
    total_peak_mib: float = 0.0
    most_processes: int = 0
    peaks: dict[int, ProcessPeak] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> GpuMemorySampler:
        """Take the baseline reading and start polling (nothing is polled when it fails)."""
        try:
            first = self.query()
        except (OSError, subprocess.SubprocessError) as error:
            detail = "not found" if isinstance(error, FileNotFoundError) else f"failed ({type(error).__name__})"
            self.unavailable = f"nvidia-smi {detail}"
            return self
        self.baseline_pids = frozenset(first.processes)
        self.baseline_device_mib = first.device_used_mib
        self._thread = threading.Thread(target=self._poll, name="gpu-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop polling, after one last reading.

        Parameters
        ----------
        kind, error, traceback
            The exception leaving the ``with`` block, if any (never suppressed).
        """
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._read_once()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._read_once()
            self._stop.wait(self.interval)

    def _read_once(self) -> None:
        try:
            sample = self.query()
        except (OSError, subprocess.SubprocessError):
            self.failed_samples += 1
            return
        self.samples += 1
        if sample.device_used_mib is not None:
            growth = sample.device_used_mib - (self.baseline_device_mib or 0.0)
            self.device_peak_mib = max(growth, self.device_peak_mib or 0.0)
        new = {pid: entry for pid, entry in sample.processes.items() if pid not in self.baseline_pids}
        for pid, (name, memory) in new.items():
            if pid not in self.peaks:
                self.peaks[pid] = ProcessPeak(pid, name, self.role_of(pid, name))
            self.peaks[pid].peak_mib = max(self.peaks[pid].peak_mib, memory)
        self.total_peak_mib = max(self.total_peak_mib, sum(memory for _, memory in new.values()))
        self.most_processes = max(self.most_processes, len(new))

    def report(self, concurrent_clients: int) -> dict[str, object]:
        """What was measured, with the per-client number and how it was obtained.

        Parameters
        ----------
        concurrent_clients : int
            Clients Ray trains at once (see :func:`concurrent_clients`); used only when
            ``nvidia-smi`` lists no process and the device total has to be divided.

        Returns
        -------
        dict
            ``per_client_mib`` and ``method`` (the headline number and how it was obtained),
            ``client_processes``, ``per_client_mean_mib`` (mean of the client actors' peaks),
            ``other_peak_mib`` (the ServerApp's process), ``total_peak_mib`` (new processes
            together, at the fullest reading), ``device_growth_peak_mib``, ``samples``,
            ``failed_samples`` and ``processes`` (pid, role, name and peak of each).
        """
        clients = [peak.peak_mib for peak in self.peaks.values() if peak.role == "client"]
        per_client: float | None
        if self.unavailable:
            per_client, method = None, f"unavailable: {self.unavailable}"
        elif clients:
            per_client, method = max(clients), "nvidia-smi used_memory: largest Ray client actor's peak"
        elif self.peaks:
            per_client = self.total_peak_mib / max(1, self.most_processes)
            method = "nvidia-smi used_memory: peak total of the new processes / their number (roles unknown)"
        elif self.device_peak_mib is not None and self.samples:
            per_client = self.device_peak_mib / (concurrent_clients + 1)
            method = "nvidia-smi memory.used: growth over the run / (concurrent clients + ServerApp)"
        else:
            per_client, method = None, "unavailable: no GPU memory reading"
        others = [peak.peak_mib for peak in self.peaks.values() if peak.role != "client"]
        return {
            "per_client_mib": _rounded(per_client),
            "method": method,
            "client_processes": len(clients),
            "per_client_mean_mib": _rounded(statistics.fmean(clients)) if clients else None,
            "other_peak_mib": _rounded(sum(others)) if others else None,
            "total_peak_mib": _rounded(self.total_peak_mib) if self.peaks else None,
            "device_growth_peak_mib": _rounded(self.device_peak_mib),
            "samples": self.samples,
            "failed_samples": self.failed_samples,
            "processes": [
                {"pid": peak.pid, "role": peak.role, "name": peak.name, "peak_mib": _rounded(peak.peak_mib)}
                for peak in sorted(self.peaks.values(), key=lambda peak: peak.pid)
            ],
        }


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------------------
# settings and arguments
# ---------------------------------------------------------------------------------------------


def benchmark_settings(dataset: str, rounds: int, tiny: bool, runs_dir: Path) -> dict[str, object]:
    """The run's settings: seed 004's ``[base]`` table with the benchmark's own on top.

    Parameters
    ----------
    dataset : str
        The dataset (an absolute folder); ignored when ``tiny``.
    rounds : int
        ``num-rounds``.
    tiny : bool
        The CPU-sized run (:data:`TINY_SETTINGS`) instead of the GPU one (:data:`GPU_SETTINGS`).
    runs_dir : Path
        ``output-dir`` of the Flower runs.
    """
    base, _ = load_sweep(SEED_FILE)
    given = dict(base)
    given.update(TINY_SETTINGS if tiny else {**GPU_SETTINGS, "dataset": dataset})
    given["num-rounds"] = rounds
    given["output-dir"] = str(runs_dir.resolve())
    return given


def parse_shares(text: str) -> list[float]:
    """``0.1,0.25,0.5`` to a list of GPU shares, each in (0, 1].

    Parameters
    ----------
    text : str
        Comma-separated numbers.

    Raises
    ------
    UsageError
        Naming ``--shares`` when an item is not a number in (0, 1], or nothing is given.
    """
    allowed = "comma-separated GPU shares per client, each in (0, 1], e.g. 0.1,0.25,0.5"
    items = [item.strip() for item in text.split(",")]
    shares = []
    for item in items:
        try:
            share = float(item)
        except ValueError:
            raise UsageError(f"--shares: bad value {text!r}; allowed: {allowed}") from None
        if not (math.isfinite(share) and 0 < share <= 1):
            raise UsageError(f"--shares: bad value {item!r}; allowed: {allowed}")
        shares.append(share)
    return list(dict.fromkeys(shares))


def parse_rounds(text: str) -> int:
    """``--rounds``: an integer >= 1.

    Parameters
    ----------
    text : str
        The option's value.

    Raises
    ------
    UsageError
        Naming ``--rounds``.
    """
    try:
        rounds = int(text)
    except ValueError:
        rounds = 0
    if rounds < 1:
        raise UsageError(f"--rounds: bad value {text!r}; allowed: an integer >= 1")
    return rounds


def check_dataset_folder(path: Path) -> Path:
    """The absolute dataset folder, or a :class:`UsageError` naming ``--dataset``.

    Parameters
    ----------
    path : Path
        The folder given (or the default).
    """
    resolved = path.expanduser().resolve()
    if not resolved.is_dir():
        raise UsageError(
            f"--dataset: bad value {str(path)!r} (no such folder); allowed: a dataset folder, e.g. CIFAR-10 in the "
            "Hugging Face parquet layout (train-*.parquet, test-*.parquet)"
        )
    return resolved


def concurrent_clients(share: float, cpus: float, sampled_per_round: int) -> int:
    """Clients Flower's Ray backend trains at once on this machine (as ``pool_size_from_resources``).

    Parameters
    ----------
    share : float
        GPU share per client (0: CPU only).
    cpus : float
        CPUs per client.
    sampled_per_round : int
        Clients sampled per round (no more can train at once).
    """
    actors = int((os.cpu_count() or 1) / cpus)
    if share > 0:
        actors = min(actors, int(max(1, torch.cuda.device_count()) / share))
    return max(1, min(actors, sampled_per_round))


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------


def prepare_data(given: dict[str, object]) -> dict[str, object]:
    """Decode the test set and every partition the run samples, then empty this process's in-memory caches.

    The decoded data stays in the node-local cache (when it is on), where the loop and Flower's
    clients both read it; see the module docstring.

    Parameters
    ----------
    given : dict[str, object]
        The settings.

    Returns
    -------
    dict
        ``seconds``, ``partitions`` (how many the run samples) and ``cache_dir`` (None: cache off).
    """
    config = experiment_config(given)
    started = time.perf_counter()
    spec = DataSpec.from_config(config)
    dataset_info(spec)
    test_data(spec)
    sampler = PartitionSampler({pid: pid for pid in range(config.num_clients)}, config.sampled_per_round, config.seed)
    partitions = sorted(
        {pid for server_round in range(1, config.num_rounds + 1) for pid in sampler.partitions_for_round(server_round)}
    )
    for partition_id in partitions:
        client_data(spec, partition_id)
    for memoised in (client_data, test_data, all_partition_indices, dataset_facts):
        memoised.cache_clear()
    root = cache_root()
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "partitions": len(partitions),
        "cache_dir": str(root) if root else None,
    }


def run_loop(given: dict[str, object], threads: int, device: torch.device) -> dict[str, object]:
    """The bare loop on ``device``; its seconds, accuracy, rounds and (on CUDA) peak memory.

    Parameters
    ----------
    given : dict[str, object]
        The settings.
    threads : int
        Torch threads (the count a Ray client actor gets).
    device : torch.device
        Where clients train (evaluation follows the ``device`` setting, as in the ServerApp).
    """
    config = experiment_config(given)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.init()  # the allocator's statistics exist once CUDA is initialised
        torch.cuda.reset_peak_memory_stats(device)
    loop: LoopResult = plain_loop(config, threads=threads, train_device=device)
    report: dict[str, object] = {
        "device": str(device),
        "torch_threads": threads,
        "seconds": loop["seconds"],
        "seconds_per_round": per_round(loop["rounds"]),
        "accuracy": loop["final"]["accuracy"],
        "cuda_max_allocated_mib": None,
        "cuda_max_reserved_mib": None,
        "rounds": loop["rounds"],
    }
    if on_cuda:
        report["cuda_max_allocated_mib"] = _rounded(torch.cuda.max_memory_allocated(device) / 2**20)
        report["cuda_max_reserved_mib"] = _rounded(torch.cuda.max_memory_reserved(device) / 2**20)
        torch.cuda.empty_cache()  # leave the Flower runs the memory the loop cached
    return report


def per_round(rounds: Sequence[dict[str, float]]) -> float | None:
    """Seconds per round after round 0 (the steady state, start-up excluded).

    Parameters
    ----------
    rounds : Sequence[dict[str, float]]
        Rows with ``round`` and ``seconds`` (since the start), round 0 first.
    """
    if len(rounds) < 2:
        return None
    return round((rounds[-1]["seconds"] - rounds[0]["seconds"]) / (len(rounds) - 1), 3)


def run_share(
    given: dict[str, object],
    share: float,
    cpus: float,
    loop: dict[str, object],
    sampler_factory: Callable[[], GpuMemorySampler] = GpuMemorySampler,
) -> dict[str, object]:
    """One Flower run at GPU share ``share``, timed and sampled, compared with ``loop``.

    Parameters
    ----------
    given : dict[str, object]
        The settings (``run-name`` is set here from the share and the time).
    share : float
        GPU share per client (0: CPU only).
    cpus : float
        CPUs per client.
    loop : dict[str, object]
        What :func:`run_loop` returned.
    sampler_factory : Callable[[], GpuMemorySampler]
        Builds the memory sampler (tests pass one with a fake ``nvidia-smi``).
    """
    config = experiment_config(given)
    run_given = {**given, "run-name": f"share-{share:g}-{time.strftime('%Y%m%d-%H%M%S')}"}
    concurrent = concurrent_clients(share, cpus, config.sampled_per_round)
    print(f"[{PROGRAM}] Flower, GPU share {share:g} per client ({concurrent} at once) ...", flush=True)
    with sampler_factory() as sampler:
        flower = flower_run(run_given, cpus, share)
    memory = sampler.report(concurrent)
    loop_seconds = float(str(loop["seconds"]))
    summary = flower["summary"]
    return {
        "gpus_per_client": share,
        "concurrent_clients": concurrent,
        "flower_seconds": flower["seconds"],
        "flower_serverapp_seconds": summary.get("wall_seconds"),
        "flower_seconds_per_round": per_round(flower["rounds"]),
        "flower_breakdown_seconds": flower["breakdown"],
        "loop_seconds": loop_seconds,
        "loop_seconds_per_round": loop["seconds_per_round"],
        "ratio_flower_over_loop": round(flower["seconds"] / loop_seconds, 2),
        "speedup_over_loop": round(loop_seconds / flower["seconds"], 2),
        "flower_accuracy": summary.get("accuracy"),
        "loop_accuracy": loop["accuracy"],
        "gpu_memory_per_client_mib": memory["per_client_mib"],
        "gpu_memory_method": memory["method"],
        "gpu_memory": memory,
        "flower_result_folder": flower["folder"],
        "flower_rounds": flower["rounds"],
    }


def benchmark(
    given: dict[str, object],
    shares: Sequence[float],
    cpus: float,
    tiny: bool,
    sampler_factory: Callable[[], GpuMemorySampler] = GpuMemorySampler,
) -> dict[str, object]:
    """The loop once, then Flower at every share; the whole report.

    Parameters
    ----------
    given : dict[str, object]
        The settings (see :func:`benchmark_settings`).
    shares : Sequence[float]
        GPU shares per client, one Flower run each (``[0]`` for the tiny run).
    cpus : float
        CPUs per client (and the loop's torch threads, floored).
    tiny : bool
        The CPU-sized run: clients and loop on the CPU.
    sampler_factory : Callable[[], GpuMemorySampler]
        Builds the memory sampler of each Flower run.
    """
    config = experiment_config(given)
    for share in shares:
        check_client_resources(cpus, share)
    device = torch.device("cpu") if tiny else torch.device("cuda")
    threads = max(1, math.floor(cpus))
    print(f"[{PROGRAM}] decoding the data the run samples (not timed) ...", flush=True)
    data = prepare_data(given)
    print(f"[{PROGRAM}] bare loop on {device}, {config.num_rounds} rounds ...", flush=True)
    loop = run_loop(given, threads, device)
    rows = [run_share(given, share, cpus, loop, sampler_factory) for share in shares]
    return {
        "tiny": tiny,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
        "cpu_cores": os.cpu_count(),
        "cpus_per_client": cpus,
        "settings": config.to_dict(),
        "versions": environment_versions(),
        "data_prepare_seconds": data["seconds"],
        "data_partitions": data["partitions"],
        "data_cache_dir": data["cache_dir"],
        "loop": loop,
        "shares": rows,
    }


def _number(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def markdown(report: dict[str, object]) -> str:
    """The report as a markdown table, a row per share, with a line on the setting and one on memory.

    Parameters
    ----------
    report : dict[str, object]
        What :func:`benchmark` returned.
    """
    settings = report["settings"]
    loop = report["loop"]
    rows = report["shares"]
    assert isinstance(settings, dict) and isinstance(loop, dict) and isinstance(rows, list)
    lines = [
        f"{'Tiny run (CPU)' if report['tiny'] else 'GPU benchmark'}: {settings['dataset']}, model {settings['model']}, "
        f"{settings['num-clients']} clients, {settings['clients-per-round']} per round, {settings['num-rounds']} rounds; "
        f"device {report['device']}, {report['cpu_cores']} CPU cores, {report['cpus_per_client']:g} CPU per client; "
        f"the loop trains one client at a time on {loop['device']}.",
        "",
        "| GPU share per client | clients at once | Flower s | ServerApp s | loop s | Flower / loop | speed-up | "
        "Flower s/round | loop s/round | Flower accuracy | loop accuracy | GPU MiB per client |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['gpus_per_client']:g} | {row['concurrent_clients']} | {row['flower_seconds']:.1f} | "
            f"{_number(row['flower_serverapp_seconds'], '.1f')} | {row['loop_seconds']:.1f} | "
            f"{row['ratio_flower_over_loop']:.2f} | {row['speedup_over_loop']:.2f} | "
            f"{_number(row['flower_seconds_per_round'], '.2f')} | {_number(row['loop_seconds_per_round'], '.2f')} | "
            f"{_number(row['flower_accuracy'], '.4f')} | {_number(row['loop_accuracy'], '.4f')} | "
            f"{_number(row['gpu_memory_per_client_mib'], '.0f')} |"
        )
    methods = sorted({str(row["gpu_memory_method"]) for row in rows})
    loop_memory = (
        f"the loop's torch.cuda.max_memory_allocated {_number(loop['cuda_max_allocated_mib'], '.0f')} MiB "
        f"(reserved {_number(loop['cuda_max_reserved_mib'], '.0f')} MiB)"
        if loop["cuda_max_allocated_mib"] is not None
        else "the loop ran on the CPU"
    )
    cache = report["data_cache_dir"]
    data = (
        f"Data decoded before timing ({_number(report['data_prepare_seconds'], '.1f')} s, "
        f"{report['data_partitions']} partitions); "
        + (f"both sides read it from the cache {cache}." if cache else "cache off: each side decoded for itself.")
    )
    lines += ["", f"GPU memory per client: {'; '.join(methods)}; {loop_memory}.", "", data]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: check the arguments, run the benchmark, print and write the report.

    Parameters
    ----------
    argv : Sequence[str], optional
        The arguments (default: the command line).

    Returns
    -------
    int
        0 on success, 2 for a bad argument or a machine without CUDA (without ``--tiny``), 1 when a
        Flower run failed.
    """
    parser = OneLineParser(prog=f"python -m experiments.{PROGRAM}", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", default=None, help=f"federated rounds (default {DEFAULT_ROUNDS}; {TINY_ROUNDS} with --tiny)"
    )
    parser.add_argument(
        "--shares",
        default=",".join(f"{share:g}" for share in DEFAULT_SHARES),
        help="comma-separated GPU shares per client, one Flower run each (default 0.1,0.25,0.5)",
    )
    parser.add_argument("--dataset", type=Path, default=None, help=f"dataset folder (default {DEFAULT_DATASET})")
    parser.add_argument("--cpus-per-client", default="1", help="Ray CPUs per client (default 1)")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="folder of the Flower runs (default: a new temporary one)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT}; the table beside it, .md)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="CPU-sized run of the same code path (digits, 4 clients, 2 rounds)"
    )
    try:
        arguments = parser.parse_args(argv)
        rounds = parse_rounds(arguments.rounds) if arguments.rounds is not None else None
        shares = parse_shares(arguments.shares)
        try:
            cpus = float(arguments.cpus_per_client)
        except ValueError:
            cpus = math.nan
        if not (math.isfinite(cpus) and 0 < cpus <= (os.cpu_count() or 1)):
            raise UsageError(
                f"--cpus-per-client: bad value {arguments.cpus_per_client!r}; allowed: a number in (0, {os.cpu_count()}]"
            )
        if arguments.dataset is not None:
            dataset = check_dataset_folder(arguments.dataset)
        if not arguments.tiny and not torch.cuda.is_available():
            raise UsageError(
                "a CUDA GPU is needed and torch sees none; on a CPU-only machine run "
                f"`python -m experiments.{PROGRAM} --tiny` (the same code path, CPU-sized)"
            )
        if arguments.dataset is None:
            dataset = DEFAULT_DATASET if arguments.tiny else check_dataset_folder(DEFAULT_DATASET)
    except UsageError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    runs_dir = arguments.runs_dir or Path(tempfile.mkdtemp(prefix=f"{PROGRAM}-runs-"))
    given = benchmark_settings(
        str(dataset), rounds or (TINY_ROUNDS if arguments.tiny else DEFAULT_ROUNDS), arguments.tiny, runs_dir
    )
    try:
        report = benchmark(given, [0.0] if arguments.tiny else shares, cpus, arguments.tiny)
    except (ConfigError, CommandError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    report["runs_dir"] = str(runs_dir.resolve())
    table = markdown(report)
    print(table, end="")
    write_json(arguments.out, report)
    markdown_path = arguments.out.with_suffix(".md")
    atomic_write_bytes(markdown_path, table.encode())
    print(f"report -> {arguments.out}, {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
