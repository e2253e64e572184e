"""Wall time of one experiment through Flower versus the same training in a plain PyTorch loop.

Usage::

    python -m experiments.benchmark_flower_vs_loop [--preset digits|seed004] [KEY=VALUE ...] [--out FILE.json]

Settings are those of ``fl-poison run`` (see ``fl-poison settings``); the default preset is the
20-round digits experiment (10 iid clients, all trained every round, FedAvg); ``seed004`` is the
seed-004 setting without attack (100 clients of 500 rows drawn at random, 10 sampled per round,
one local epoch of batch 16 with Adam 1e-3, the paper's CNN, 15 rounds): give it the real MNIST
with ``dataset=/path/to/mnist``.

What is measured, and why
-------------------------
1. **Flower**: :func:`fl_poison.launch.run_experiment` (``flwr run`` against the local SuperLink in
   simulation mode), timed from this process end to end. That includes the ``flwr`` CLI, the
   hand-off to the SuperLink, Ray's start-up and its client actors, every round's messages
   (weights serialised into records, pushed and pulled through the SuperLink), the ServerApp's
   work and the result files. The ServerApp's own ``wall_seconds`` from ``summary.json`` (its
   start to its summary: without the CLI and the SuperLink hand-off, but with the wait for the
   simulated nodes, i.e. Ray's start-up) is reported as well.
2. **Flower in a warm runtime** (skipped with ``--no-warm``): the same run as a sweep's cell runs
   it, against a SuperLink and a Ray head started before the clock starts
   (:func:`fl_poison.warm_runtime.warm_runtime`): the run's ``ray.init`` connects to the head
   instead of starting Ray, and its end does not wait for Ray's shutdown; its simulation process is
   forked from the runtime's preloaded executor (:mod:`fl_poison.forking_executor`) instead of
   starting and importing afresh. The runtime's own start is reported, not counted. With
   ``--unforked`` the run is also timed in a warm runtime whose SuperLink starts a fresh
   ``flwr-simulation`` process (what the executor saves).
3. **Plain loop**: :func:`plain_loop` does the same computation one client after another in
   this process: same config parsing, data, seeded model initialisation, per-round partition
   draw, client seeds, local training, example-weighted FedAvg in partition-id order, and
   centralized evaluation after round 0 and every round. It is the bare training work.

The ratio flower/loop is Flower's overhead (start-up and per-round messaging) over that work.
The breakdown places the ServerApp's ``timings.json`` (:class:`fl_poison.core.timings.PhaseClock`)
on this process's clock: the time before the ServerApp starts (this process's checks, the
``flwr`` CLI, the SuperLink hand-off, the simulation process and its imports), its phases
(``setup``: settings, data checks, result folder, test set; ``nodes``: waiting for the simulated
nodes, i.e. Ray and its actors, and their join check; ``train``: from sending a round to holding
its replies; ``aggregate``; ``evaluate``: evaluation and the round's files; ``finish``: summary,
model, plots), what the ServerApp spent outside them (Flower's strategy between the phases) and
the time after it (the run's end travelling back to the CLI and the status check).
Both final accuracies are reported: they should agree closely, showing that both timed the same
computation. Flower's Ray actors may train several clients at once (one per CPU Ray sees); the
loop trains them sequentially.

Threads: Ray sets ``OMP_NUM_THREADS`` to ``max(1, floor(client-resources-num-cpus))`` in every
client actor (1 with the default ``--cpus-per-client 1``), so each Flower client trains with that
many torch threads; for a fair comparison the loop calls ``torch.set_num_threads`` with the same
number (and keeps it for evaluation too).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict, cast

import torch

from fl_poison.apps.algorithms import experiment_config
from fl_poison.apps.client_app import client_seed
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import DataSpec, client_data, dataset_info, test_data
from fl_poison.core.evaluation import evaluate_model
from fl_poison.core.models import build_model, resolve_model_name
from fl_poison.core.ray_head import RayHeadError
from fl_poison.core.results import read_csv, write_json
from fl_poison.core.settings import ConfigError
from fl_poison.core.training import LocalTraining, resolve_device, train_locally
from fl_poison.core.weights import float_state
from fl_poison.launch import CommandError, parse_assignments, run_experiment
from fl_poison.warm_runtime import WarmRuntimeError, warm_runtime
from strategies.fedprox import PROXIMAL_MU
from strategies.sampling import PartitionSampler

DEFAULT_OUT = Path("experiments/results/benchmark_flower_vs_loop.json")


class LoopResult(TypedDict):
    """What :func:`plain_loop` returns."""

    final: dict[str, float]
    rounds: list[dict[str, float]]
    seconds: float
    threads: int


class FlowerResult(TypedDict):
    """What :func:`flower_run` returns."""

    seconds: float
    folder: str
    summary: dict[str, object]
    rounds: list[dict[str, float]]
    breakdown: dict[str, float]


def fedavg(states: Sequence[dict[str, torch.Tensor]], num_examples: Sequence[int]) -> dict[str, torch.Tensor]:
    """Example-weighted average of float states, summed in the given order.

    Done like Flower's ``aggregate_arrayrecords``: each state times ``n_i / sum(n)`` (a Python
    float), accumulated in the tensors' own dtype (float32), so the result matches Flower's.
    """
    total = float(sum(num_examples))
    average: dict[str, torch.Tensor] = {}
    for state, count in zip(states, num_examples, strict=True):
        factor = float(count) / total
        for name, tensor in state.items():
            if name in average:
                average[name] += tensor * factor
            else:
                average[name] = tensor * factor
    return average


def plain_loop(
    config: ExperimentConfig,
    threads: int = 1,
    train_device: torch.device | None = None,
) -> LoopResult:
    """Run ``config`` as a plain sequential loop; return metrics, per-round accuracies and seconds.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment (as parsed by :func:`fl_poison.apps.algorithms.experiment_config`).
    threads : int
        Torch threads for the whole loop (the count a Flower client actor gets).
    train_device : torch.device, optional
        Where clients train; defaults to ``resolve_device(config.device)``. Evaluation uses
        ``resolve_device(config.device)`` as the ServerApp does.

    Returns
    -------
    dict
        ``final`` (the evaluation metrics after the last round), ``rounds`` (``round``,
        ``accuracy``, ``loss``, ``seconds`` since the start, for rounds 0..num_rounds),
        ``seconds`` (total wall time, data preparation included) and ``threads``.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        spec = DataSpec.from_config(config)
        info = dataset_info(spec)
        model_name = resolve_model_name(config.model, config.dataset)
        eval_device = resolve_device(config.device)
        train_device = train_device or eval_device
        test_set = test_data(spec)
        sampler = PartitionSampler(
            {pid: pid for pid in range(config.num_clients)}, config.sampled_per_round, config.seed
        )
        mu = config[PROXIMAL_MU] if config.strategy == "fedprox" else 0.0
        training = LocalTraining.from_config(config, proximal_mu=mu)

        torch.manual_seed(config.seed)
        model = build_model(model_name, info.input_shape, info.num_classes)

        rounds: list[dict[str, float]] = []

        def evaluate(server_round: int) -> dict[str, float]:
            metrics = evaluate_model(model, test_set, eval_device, config.eval_batch_size)
            rounds.append(
                {
                    "round": server_round,
                    "accuracy": metrics["accuracy"],
                    "loss": metrics["loss"],
                    "seconds": round(time.perf_counter() - started, 3),
                }
            )
            return metrics

        metrics = evaluate(0)
        for server_round in range(1, config.num_rounds + 1):
            global_state = {name: tensor.clone() for name, tensor in float_state(model).items()}
            states, counts = [], []
            for partition_id in sampler.partitions_for_round(server_round):
                data = client_data(spec, partition_id)
                local = build_model(model_name, info.input_shape, info.num_classes)
                local.load_state_dict(global_state, strict=False)
                train_locally(local, data, training, train_device, client_seed(config.seed, server_round, partition_id))
                states.append(float_state(local))
                counts.append(len(data))
            model.load_state_dict(fedavg(states, counts), strict=False)
            metrics = evaluate(server_round)
        return {
            "final": metrics,
            "rounds": rounds,
            "seconds": round(time.perf_counter() - started, 3),
            "threads": threads,
        }
    finally:
        torch.set_num_threads(previous_threads)


def flower_run(
    given: dict[str, object], cpus: float, gpus: float, environment: Mapping[str, str] | None = None
) -> FlowerResult:
    """Run ``given`` through Flower; return the CLI wall time, the result folder and its summary.

    Parameters
    ----------
    given : dict[str, object]
        The settings.
    cpus : float
        Ray CPUs per virtual client.
    gpus : float
        GPU share per virtual client.
    environment : Mapping[str, str] | None
        The environment of ``flwr run`` (None: this process's; a warm runtime's to time a sweep cell).
    """
    started, started_at = time.perf_counter(), time.time()
    folder = run_experiment(given, cpus, gpus, verbose=False, environment=environment)
    seconds = time.perf_counter() - started
    summary: dict[str, object] = json.loads((folder / "summary.json").read_text())
    timings = json.loads((folder / "timings.json").read_text())
    rounds: list[dict[str, float]] = [
        {
            "round": int(row["round"]),
            "accuracy": float(row["accuracy"]),
            "loss": float(row["loss"]),
            "seconds": float(row["wall_seconds"]),
        }
        for row in read_csv(folder / "rounds.csv")
    ]
    return {
        "seconds": round(seconds, 3),
        "folder": str(folder),
        "summary": summary,
        "rounds": rounds,
        "breakdown": breakdown(started_at, started_at + seconds, timings),
    }


PRESETS: dict[str, dict[str, object]] = {
    "digits": {},
    "seed004": {
        "num-clients": 100,
        "clients-per-round": 10,
        "partitioning": "random-subsets",
        "samples-per-client": 500,
        "num-rounds": 15,
        "local-epochs": 1,
        "batch-size": 16,
        "optimizer": "adam",
        "learning-rate": 0.001,
        "model": "ada-cnn",
    },
}


def breakdown(started_at: float, finished_at: float, timings: dict[str, object]) -> dict[str, float]:
    """The Flower run's seconds by phase, on the benchmark's clock.

    Parameters
    ----------
    started_at : float
        Unix time at which the benchmark started the Flower run.
    finished_at : float
        Unix time at which the run's command returned.
    timings : dict[str, object]
        The run's ``timings.json``.
    """
    server_start = float(cast(float, timings["started_at"]))
    server_seconds = float(cast(float, timings["elapsed_seconds"]))
    phases = cast(dict[str, dict[str, float]], timings["phases"])
    parts = {"before_serverapp": server_start - started_at}
    parts.update({name: float(phase["seconds"]) for name, phase in phases.items()})
    parts["serverapp_other"] = server_seconds - sum(float(phase["seconds"]) for phase in phases.values())
    parts["after_serverapp"] = finished_at - (server_start + server_seconds)
    return {name: round(seconds, 3) for name, seconds in parts.items()}


def warm_flower_run(
    given: dict[str, object], cpus: float, gpus: float, fork_simulations: bool = True
) -> tuple[FlowerResult, float]:
    """Run ``given`` through Flower as a sweep's cell runs: in a warm runtime started first (not timed).

    Returns the run (as :func:`flower_run`) and the seconds the runtime took to start.

    Parameters
    ----------
    given : dict[str, object]
        The settings.
    cpus : float
        Ray CPUs per virtual client.
    gpus : float
        GPU share per virtual client.
    fork_simulations : bool
        The runtime forks the simulation process from its preloaded executor (the default of
        :func:`~fl_poison.warm_runtime.warm_runtime`); False: the SuperLink starts a fresh one.
    """
    started = time.perf_counter()
    with warm_runtime(fork_simulations=fork_simulations) as runtime:
        start_seconds = time.perf_counter() - started
        return flower_run(given, cpus, gpus, runtime.environment), round(start_seconds, 3)


def compare(
    given: dict[str, object], cpus: float, gpus: float, warm: bool = True, unforked: bool = False
) -> dict[str, object]:
    """Time the loop, then Flower, then (with ``warm``) Flower in a warm runtime, on the same settings.

    Returns everything the report shows.

    Parameters
    ----------
    given : dict[str, object]
        The settings.
    cpus : float
        Ray CPUs per virtual client.
    gpus : float
        GPU share per virtual client.
    warm : bool
        Also time the run as a sweep's cell (:func:`warm_flower_run`).
    unforked : bool
        With ``warm``, also time it in a warm runtime that does not fork the simulation process.
    """
    config = experiment_config(given)
    threads = max(1, math.floor(cpus))
    train_device = torch.device("cpu") if gpus == 0 else None  # Ray hides GPUs from 0-GPU actors
    loop = plain_loop(config, threads=threads, train_device=train_device)
    flower = flower_run(given, cpus, gpus)
    warm_report: dict[str, object] = {}
    if warm:
        warm_run, start_seconds = warm_flower_run(given, cpus, gpus)
        warm_report = {
            "warm_runtime_start_seconds": start_seconds,
            "flower_warm_wall_seconds": warm_run["seconds"],
            "ratio_flower_warm_over_loop": round(warm_run["seconds"] / loop["seconds"], 2),
            "flower_warm_accuracy": warm_run["summary"].get("accuracy"),
            "flower_warm_breakdown_seconds": warm_run["breakdown"],
        }
        if unforked:
            unforked_run, unforked_start = warm_flower_run(given, cpus, gpus, fork_simulations=False)
            warm_report.update(
                {
                    "warm_unforked_runtime_start_seconds": unforked_start,
                    "flower_warm_unforked_wall_seconds": unforked_run["seconds"],
                    "ratio_flower_warm_unforked_over_loop": round(unforked_run["seconds"] / loop["seconds"], 2),
                    "flower_warm_unforked_accuracy": unforked_run["summary"].get("accuracy"),
                    "flower_warm_unforked_breakdown_seconds": unforked_run["breakdown"],
                }
            )
    summary = flower["summary"]
    flower_accuracies = [row["accuracy"] for row in flower["rounds"]]
    loop_accuracies = [row["accuracy"] for row in loop["rounds"]]
    return {
        "settings": config.to_dict(),
        "cpus_per_client": cpus,
        "gpus_per_client": gpus,
        "loop_torch_threads": threads,
        "flower_wall_seconds": flower["seconds"],
        "flower_serverapp_seconds": summary.get("wall_seconds"),
        "loop_seconds": loop["seconds"],
        "ratio_flower_over_loop": round(flower["seconds"] / loop["seconds"], 2),
        "flower_accuracy": summary.get("accuracy"),
        "loop_accuracy": loop["final"]["accuracy"],
        "max_round_accuracy_difference": (
            max(abs(f - lo) for f, lo in zip(flower_accuracies, loop_accuracies, strict=True))
            if len(flower_accuracies) == len(loop_accuracies)
            else None
        ),
        "flower_breakdown_seconds": flower["breakdown"],
        **warm_report,
        "loop_round_seconds": _per_round(loop["rounds"]),
        "flower_round_seconds": _per_round(flower["rounds"]),
        "flower_result_folder": flower["folder"],
        "flower_rounds": flower["rounds"],
        "loop_rounds": loop["rounds"],
    }


def _per_round(rounds: list[dict[str, float]]) -> float | None:
    """Mean seconds per round after round 0 (from the cumulative ``seconds`` of each round), None for one round."""
    if len(rounds) < 2:
        return None
    return round((rounds[-1]["seconds"] - rounds[0]["seconds"]) / (len(rounds) - 1), 4)


def print_table(report: dict[str, object]) -> None:
    """The comparison as a small table, then the Flower run's breakdown."""
    rows = [
        ("flower wall seconds (CLI end to end)", f"{report['flower_wall_seconds']:.1f}"),
        ("flower serverapp seconds (summary.json)", _number(report["flower_serverapp_seconds"], ".1f")),
        (f"loop seconds (torch threads = {report['loop_torch_threads']})", f"{report['loop_seconds']:.1f}"),
        ("ratio flower / loop", f"{report['ratio_flower_over_loop']:.2f}"),
        ("flower final accuracy", f"{report['flower_accuracy']:.4f}"),
        ("loop final accuracy", f"{report['loop_accuracy']:.4f}"),
        ("max |accuracy difference| over rounds", _number(report["max_round_accuracy_difference"], ".4f")),
        ("loop seconds per round", _number(report["loop_round_seconds"], ".3f")),
        ("flower seconds per round (evaluation to evaluation)", _number(report["flower_round_seconds"], ".3f")),
    ]
    parts = cast(dict[str, float], report["flower_breakdown_seconds"])
    rows.extend((f"  flower: {name}", f"{seconds:.2f}") for name, seconds in parts.items())
    if "flower_warm_wall_seconds" in report:
        rows.extend(
            [
                ("flower in a warm runtime (a sweep's cell), seconds", f"{report['flower_warm_wall_seconds']:.1f}"),
                ("ratio flower warm / loop", f"{report['ratio_flower_warm_over_loop']:.2f}"),
                ("flower warm final accuracy", f"{report['flower_warm_accuracy']:.4f}"),
                ("(warm runtime start, not counted)", f"{report['warm_runtime_start_seconds']:.1f}"),
            ]
        )
        warm_parts = cast(dict[str, float], report["flower_warm_breakdown_seconds"])
        rows.extend((f"  flower warm: {name}", f"{seconds:.2f}") for name, seconds in warm_parts.items())
    if "flower_warm_unforked_wall_seconds" in report:
        rows.extend(
            [
                (
                    "flower in a warm runtime, simulation process not forked, seconds",
                    f"{report['flower_warm_unforked_wall_seconds']:.1f}",
                ),
                ("ratio flower warm unforked / loop", f"{report['ratio_flower_warm_unforked_over_loop']:.2f}"),
                ("flower warm unforked final accuracy", f"{report['flower_warm_unforked_accuracy']:.4f}"),
            ]
        )
        unforked_parts = cast(dict[str, float], report["flower_warm_unforked_breakdown_seconds"])
        rows.extend((f"  flower warm unforked: {name}", f"{seconds:.2f}") for name, seconds in unforked_parts.items())
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>8}")
    print(
        f"(the loop used torch.set_num_threads({report['loop_torch_threads']}), the OMP_NUM_THREADS Ray gives "
        f"a client actor with client-resources-num-cpus={report['cpus_per_client']:g})"
    )


def _number(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse settings, run both, print the table, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="settings (see `fl-poison settings`)")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="digits", help="base settings (default digits; see the docstring)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per virtual client (default 1)")
    parser.add_argument("--gpus-per-client", type=float, default=0.0, help="GPU share per virtual client (default 0)")
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="skip the third run, in a warm runtime (a SuperLink and Ray head started first, as a sweep does)",
    )
    parser.add_argument(
        "--unforked",
        action="store_true",
        help="also time the run in a warm runtime whose SuperLink starts a fresh simulation process (no fork)",
    )
    arguments = parser.parse_args(argv)
    try:
        if arguments.cpus_per_client <= 0:
            raise ConfigError.bad_value("--cpus-per-client", arguments.cpus_per_client, "a number > 0")
        if arguments.gpus_per_client < 0:
            raise ConfigError.bad_value("--gpus-per-client", arguments.gpus_per_client, "a number >= 0")
        given = {**PRESETS[arguments.preset], **parse_assignments(arguments.settings)}
        report = compare(
            given,
            arguments.cpus_per_client,
            arguments.gpus_per_client,
            warm=not arguments.no_warm,
            unforked=arguments.unforked,
        )
    except (ConfigError, CommandError, RayHeadError, WarmRuntimeError) as error:
        print(f"benchmark: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    print_table(report)
    write_json(arguments.out, report)
    print(f"report -> {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
