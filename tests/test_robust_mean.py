"""Coordinate-wise median, trimmed mean and Bulyan through aggregate_train, against numpy references."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from strategy_helpers import (
    assert_arrays_close,
    client_weights,
    make_global,
    node_map,
    reference_multikrum,
    reply,
    start_round,
    true_update,
)

from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.bulyan import LabBulyan
from strategies.median import LabMedian
from strategies.sampling import PartitionSampler
from strategies.trimmed_mean import LabTrimmedMean


def setup(cls, n, **kwargs):
    sampler = PartitionSampler(node_map(n), per_round=n, seed=0)
    log = RoundLog(sampler.partition_of_node)
    return cls(sampler=sampler, round_log=log, **kwargs), log


def round_weights(n, seed, outlier=None):
    rng = np.random.default_rng(seed)
    global_arrays = make_global(seed)
    weights = []
    for pid in range(n):
        scale = 20.0 if pid == outlier else 0.1
        weights.append(client_weights(global_arrays, scale * rng.standard_normal(15)))
    return global_arrays, weights


def run(strategy, global_arrays, weights, present=None):
    n = len(weights)
    start_round(strategy, global_arrays, n)
    present = range(n) if present is None else present
    replies = [reply(weights[pid], pid, 10 * (pid + 1)) for pid in present]
    random.Random(5).shuffle(replies)
    return strategy.aggregate_train(1, replies)


def stacked(weights, name):
    return np.stack([np.asarray(w[name], dtype=np.float64) for w in weights])


def reference_trimmed_mean(values: np.ndarray, beta: float) -> np.ndarray:
    n = values.shape[0]
    cut = math.floor(beta * n)
    ordered = np.sort(values, axis=0)
    return ordered[cut : n - cut].mean(axis=0)


# ---------------------------------------------------------------- median


@pytest.mark.parametrize("n", [7, 6])
def test_median_is_numpy_median_and_accepts_everybody(server_task_identity, n):
    global_arrays, weights = round_weights(n, seed=n, outlier=2)
    expected = {name: np.median(stacked(weights, name), axis=0) for name in global_arrays}
    norms = [float(np.linalg.norm(true_update(w, global_arrays))) for w in weights]
    strategy, log = setup(LabMedian, n)
    arrays, _ = run(strategy, global_arrays, weights)
    assert_arrays_close(record_to_numpy(arrays), expected)
    for row in log.for_round(1):
        assert row.decision == "accepted"
        assert math.isnan(row.weight)
        assert row.norm_after == pytest.approx(norms[row.partition_id], rel=1e-12)


# ---------------------------------------------------------------- trimmed mean


def test_reference_trimmed_mean_by_hand():
    values = np.array([[1.0], [100.0], [2.0], [-50.0], [3.0]])
    np.testing.assert_array_equal(reference_trimmed_mean(values, 0.2), [2.0])  # drop -50 and 100
    np.testing.assert_array_equal(reference_trimmed_mean(values, 0.0), [56.0 / 5])


@pytest.mark.parametrize("n", [7, 10])
@pytest.mark.parametrize("beta", [0.2, 0.0])
def test_trimmed_mean_matches_the_reference(server_task_identity, n, beta):
    global_arrays, weights = round_weights(n, seed=10 + n, outlier=0)
    expected = {name: reference_trimmed_mean(stacked(weights, name), beta) for name in global_arrays}
    strategy, log = setup(LabTrimmedMean, n, beta=beta)
    arrays, _ = run(strategy, global_arrays, weights)
    assert_arrays_close(record_to_numpy(arrays), expected)
    rows = log.for_round(1)
    assert [row.decision for row in rows] == ["accepted"] * n
    assert all(math.isnan(row.weight) for row in rows)


def test_trimmed_mean_ignores_how_far_a_trimmed_outlier_goes(server_task_identity):
    results = []
    for scale in (1.0, 1e4):
        global_arrays, weights = round_weights(5, seed=1)
        weights[3] = client_weights(global_arrays, np.full(15, scale))
        strategy, _ = setup(LabTrimmedMean, 5, beta=0.2)
        arrays, _ = run(strategy, global_arrays, weights)
        results.append(record_to_numpy(arrays))
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])


# ---------------------------------------------------------------- Bulyan


def reference_bulyan(global_arrays, weights, f):
    n = len(weights)
    theta = n - 2 * f
    beta = theta - 2 * f
    updates = np.stack([true_update(w, global_arrays) for w in weights])
    selected = reference_multikrum(updates, f, theta)
    result = {}
    for name in global_arrays:
        values = stacked([weights[i] for i in selected], name).reshape(theta, -1)
        out = np.empty(values.shape[1])
        for c in range(values.shape[1]):
            column = values[:, c]
            median = np.median(column)
            closest = sorted(column, key=lambda v: abs(v - median))[:beta]
            out[c] = sum(closest) / beta
        result[name] = out.reshape(global_arrays[name].shape)
    return result, selected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bulyan_with_seven_clients_and_one_attacker(server_task_identity, seed):
    n, f, outlier = 7, 1, 4
    global_arrays, weights = round_weights(n, seed=20 + seed, outlier=outlier)
    expected, selected = reference_bulyan(global_arrays, weights, f)
    assert len(selected) == 5 and outlier not in selected

    strategy, log = setup(LabBulyan, n, num_malicious_nodes=f)
    arrays, _ = run(strategy, global_arrays, weights)
    assert_arrays_close(record_to_numpy(arrays), expected)
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert {pid for pid, row in rows.items() if row.decision == "accepted"} == set(selected)
    assert rows[outlier].decision == "rejected"
    assert (rows[outlier].weight, rows[outlier].norm_after) == (0.0, 0.0)
    for pid in selected:
        assert math.isnan(rows[pid].weight)


def test_bulyan_with_fewer_than_4f_plus_3_replies_skips_the_round(server_task_identity):
    global_arrays, weights = round_weights(7, seed=30)
    strategy, log = setup(LabBulyan, 7, num_malicious_nodes=1)
    assert run(strategy, global_arrays, weights, present=[0, 1, 2, 3, 5, 6]) == (None, None)  # 6 < 7
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert rows[4].status == "failed"
    assert all(rows[pid].decision == "skipped" and rows[pid].weight == 0.0 for pid in (0, 1, 2, 3, 5, 6))


def test_bulyan_with_f_2_needs_eleven(server_task_identity):
    global_arrays, weights = round_weights(10, seed=31)
    strategy, _ = setup(LabBulyan, 10, num_malicious_nodes=2)
    assert run(strategy, global_arrays, weights) == (None, None)
