"""One contract over every registered defense: a round of real Flower replies through the strategy the
registry builds gives a well-formed model, a decision for every client, arrival-order independence,
and (when a GPU is present) the same result on the GPU as on the CPU."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from strategy_helpers import node_map, reply, root_training, start_round

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.registry import build_strategy, registered_defenses
from strategies.sampling import PartitionSampler

N = 11
NAMES = [spec.name for spec in registered_defenses()]
JUDGEMENTS = {"accepted", "rejected", "clipped", "skipped"}


def round_data(seed: int = 0):
    """A global model with a float matrix, a float vector and an integer buffer; 11 replies, two far off."""
    rng = np.random.default_rng(seed)
    global_arrays = {
        "conv": rng.standard_normal((4, 3, 3)).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float32),
        "steps": np.array([5], np.int64),
    }
    weights = []
    for pid in range(N):
        spread = 2.0 if pid in (3, 7) else 0.01
        weights.append(
            {
                "conv": (global_arrays["conv"] + spread * rng.standard_normal((4, 3, 3))).astype(np.float32),
                "bias": (global_arrays["bias"] + spread * rng.standard_normal(4)).astype(np.float32),
                "steps": np.array([9], np.int64),
            }
        )
    return global_arrays, weights


def run_round(name: str, order_seed: int, device: str):
    config = experiment_config({"strategy": name, "num-clients": N, "num-malicious": 2, "device": device})
    sampler = PartitionSampler(node_map(N), per_round=N, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = build_strategy(config, sampler, log, root_training=root_training)
    global_arrays, weights = round_data()
    start_round(strategy, global_arrays, N)
    replies = [reply(w, pid, num_examples=10 + pid, loss=0.1 * (pid + 1)) for pid, w in enumerate(weights)]
    random.Random(order_seed).shuffle(replies)
    arrays, metrics = strategy.aggregate_train(1, replies)
    return global_arrays, arrays, metrics, log.for_round(1)


@pytest.mark.parametrize("name", NAMES)
def test_every_defense_meets_the_contract(server_task_identity, name):
    global_arrays, arrays, metrics, rows = run_round(name, order_seed=1, device="cpu")
    assert arrays is not None and metrics is not None
    result = record_to_numpy(arrays)
    assert list(result) == list(global_arrays)
    for key, value in global_arrays.items():
        assert result[key].shape == value.shape and result[key].dtype == value.dtype
        assert np.all(np.isfinite(result[key]))
    assert result["steps"].tolist() == [5]  # integer buffers: the global model's
    assert math.isfinite(metrics["train_loss"])
    assert [row.partition_id for row in rows] == list(range(N))
    accepted_weights = []
    for row in rows:
        assert row.status == "ok" and row.decision in JUDGEMENTS
        if row.decision in ("rejected", "skipped"):
            assert (row.weight, row.norm_after) == (0.0, 0.0)
        else:
            assert row.norm_after <= row.norm_before * (1 + 1e-12)
            accepted_weights.append(row.weight)
    assert accepted_weights
    if not all(math.isnan(w) for w in accepted_weights):
        assert sum(accepted_weights) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_arrival_order_does_not_matter(server_task_identity, name):
    _, first, _, first_rows = run_round(name, order_seed=1, device="cpu")
    _, second, _, second_rows = run_round(name, order_seed=2, device="cpu")
    for key, value in record_to_numpy(first).items():
        np.testing.assert_array_equal(record_to_numpy(second)[key], value)
    assert [(r.decision, r.weight) for r in first_rows] == [(r.decision, r.weight) for r in second_rows]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_the_gpu_gives_the_cpu_result(server_task_identity, name):
    _, on_cpu, _, cpu_rows = run_round(name, order_seed=1, device="cpu")
    _, on_gpu, _, gpu_rows = run_round(name, order_seed=1, device="cuda")
    for key, value in record_to_numpy(on_cpu).items():
        np.testing.assert_allclose(record_to_numpy(on_gpu)[key], value, rtol=0, atol=1e-6)
    assert [r.decision for r in gpu_rows] == [r.decision for r in cpu_rows]
    for cpu_row, gpu_row in zip(cpu_rows, gpu_rows, strict=True):
        assert gpu_row.norm_before == pytest.approx(cpu_row.norm_before, rel=1e-12)
        assert gpu_row.norm_after == pytest.approx(cpu_row.norm_after, rel=1e-12, nan_ok=True)


@pytest.mark.parametrize("name", NAMES)
def test_a_later_round_with_fewer_replies_reuses_the_matrix_correctly(server_task_identity, name):
    config = experiment_config({"strategy": name, "num-clients": N, "num-malicious": 2, "device": "cpu"})
    global_arrays, weights = round_data(seed=3)
    present = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]  # partition 3 does not answer in round 2

    def aggregate(strategy, server_round, partitions):
        start_round(strategy, global_arrays, N, server_round)
        replies = [reply(weights[pid], pid, num_examples=10 + pid) for pid in partitions]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        return None if arrays is None else record_to_numpy(arrays)  # Bulyan skips 10 < 4f + 3 replies

    def fresh():
        sampler = PartitionSampler(node_map(N), per_round=N, seed=0)
        return build_strategy(config, sampler, RoundLog(sampler.partition_of_node), root_training=root_training)

    reused = fresh()
    aggregate(reused, 1, range(N))
    # What a defense keeps from round to round (centered clipping's reference, a client history):
    # the comparison starts round 2 from the same state, with a matrix of its own.
    state_after_round_1 = copy.deepcopy(reused.defense)
    second = aggregate(reused, 2, present)
    comparison = fresh()
    comparison.defense = state_after_round_1
    expected = aggregate(comparison, 2, present)
    assert (second is None) == (expected is None)
    for key, value in (expected or {}).items():
        np.testing.assert_array_equal(second[key], value)
