"""The plain-loop half of experiments.benchmark_flower_vs_loop: complete and deterministic."""

from __future__ import annotations

import math

import torch

from experiments.benchmark_flower_vs_loop import _per_round, breakdown, fedavg, plain_loop
from fl_poison.apps.algorithms import experiment_config

TINY = {"num-clients": 3, "num-rounds": 2, "local-epochs": 1, "device": "cpu"}


def test_plain_loop_reports_every_round_and_is_deterministic():
    config = experiment_config(TINY)
    first = plain_loop(config)
    second = plain_loop(config)
    assert [row["round"] for row in first["rounds"]] == [0, 1, 2]
    accuracies = [row["accuracy"] for row in first["rounds"]]
    assert all(0.0 <= value <= 1.0 for value in accuracies)
    assert first["final"]["accuracy"] == accuracies[-1]
    assert math.isfinite(first["seconds"])
    assert [row["accuracy"] for row in second["rounds"]] == accuracies
    assert [row["loss"] for row in second["rounds"]] == [row["loss"] for row in first["rounds"]]


def test_fedavg_weights_by_example_count():
    states = [{"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([4.0, 0.0])}]
    average = fedavg(states, [3, 1])
    assert torch.allclose(average["w"], torch.tensor([1.0, 3.0]))
    assert average["w"].dtype == torch.float32


def test_breakdown_places_the_serverapp_phases_on_the_benchmark_clock():
    timings = {
        "started_at": 1010.0,
        "elapsed_seconds": 20.0,
        "phases": {"setup": {"seconds": 1.5, "count": 1}, "train": {"seconds": 12.0, "count": 20}},
    }
    parts = breakdown(1000.0, 1033.0, timings)
    # 10 s before the ServerApp, 6.5 s of it outside its phases, 3 s after it
    assert parts == {
        "before_serverapp": 10.0,
        "setup": 1.5,
        "train": 12.0,
        "serverapp_other": 6.5,
        "after_serverapp": 3.0,
    }
    assert sum(parts.values()) == 33.0


def test_seconds_per_round_leave_round_zero_out():
    rounds = [{"round": 0, "seconds": 2.0}, {"round": 1, "seconds": 3.0}, {"round": 2, "seconds": 5.0}]
    assert _per_round(rounds) == 1.5
    assert _per_round(rounds[:1]) is None
