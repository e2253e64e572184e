"""The plain-loop half of experiments.benchmark_flower_vs_loop: complete and deterministic."""

from __future__ import annotations

import math

import torch

from experiments.benchmark_flower_vs_loop import fedavg, plain_loop
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
