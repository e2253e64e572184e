"""Coordinate-wise median, trimmed mean and Bulyan: the blockwise statistics against numpy references,
and the rules through LabStrategy.aggregate_train on real Flower messages."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from strategy_helpers import (
    as_numpy,
    assert_arrays_close,
    client_weights,
    decoded_round,
    flatten,
    lab_strategy,
    make_global,
    reference_krum_repeated,
    reference_multikrum,
    reply,
    start_round,
    true_update,
    unflatten,
)

from fl_poison.core.round_updates import COORDINATE_BLOCK
from fl_poison.core.weights import record_to_numpy
from strategies.bulyan import KRUM_REPEATED, MULTIKRUM, Bulyan, select_krum_repeated
from strategies.coordinatewise import closest_to_median_mean, coordinate_median, trimmed_mean
from strategies.distances import pairwise_squared_distances
from strategies.median import Median
from strategies.trimmed_mean import TrimmedMean

SIZE = COORDINATE_BLOCK + 4_321  # crosses a block boundary


def reference_trimmed_mean(values: np.ndarray, beta: float) -> np.ndarray:
    n = values.shape[0]
    cut = math.floor(beta * n)
    ordered = np.sort(values, axis=0)
    return ordered[cut : n - cut].mean(axis=0)


def reference_closest_to_median_mean(values: np.ndarray, count: int) -> np.ndarray:
    """Per column: the ``count`` values nearest the median (ties: the smaller value), averaged."""
    ordered = np.sort(values, axis=0)
    distance = np.abs(ordered - np.median(ordered, axis=0))
    nearest = np.argsort(distance, axis=0, kind="stable")[:count]
    return np.take_along_axis(ordered, nearest, axis=0).mean(axis=0)


def random_round(n: int, seed: int, size: int = SIZE):
    rng = np.random.default_rng(seed)
    global_vector = rng.standard_normal(size).astype(np.float32)
    clients = [(global_vector + 1e-3 * rng.standard_normal(size)).astype(np.float32) for _ in range(n)]
    return decoded_round(global_vector, clients)


# ---------------------------------------------------------------- blockwise statistics


def test_reference_trimmed_mean_by_hand():
    values = np.array([[1.0], [100.0], [2.0], [-50.0], [3.0]])
    np.testing.assert_array_equal(reference_trimmed_mean(values, 0.2), [2.0])  # drop -50 and 100
    np.testing.assert_array_equal(reference_trimmed_mean(values, 0.0), [56.0 / 5])


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_coordinate_median_is_numpy_median(n):
    updates = random_round(n, seed=n)
    rows = as_numpy(updates.matrix)
    np.testing.assert_allclose(
        coordinate_median(updates, range(n)).numpy(), np.median(rows, axis=0), rtol=1e-15, atol=0
    )


@pytest.mark.parametrize("n,beta", [(10, 0.2), (10, 0.0), (7, 0.3), (5, 0.49)])
def test_trimmed_mean_matches_the_reference(n, beta):
    updates = random_round(n, seed=20 + n)
    expected = reference_trimmed_mean(as_numpy(updates.matrix), beta)
    np.testing.assert_allclose(trimmed_mean(updates, range(n), beta).numpy(), expected, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("factors", [[1.0, 1.0, 1.0, 1.0, 1.0], [0.5] * 5, [1.0, 0.25, 3.0, 0.5, 1.0]])
def test_statistics_see_the_row_factors(factors):
    updates = random_round(5, seed=3).rescaled(torch.tensor(factors, dtype=torch.float64))
    rows = as_numpy(updates.matrix) * np.asarray(factors)[:, None]
    np.testing.assert_allclose(coordinate_median(updates, range(5)).numpy(), np.median(rows, axis=0), rtol=1e-15)
    np.testing.assert_allclose(
        trimmed_mean(updates, range(5), 0.2).numpy(), reference_trimmed_mean(rows, 0.2), rtol=1e-12, atol=1e-18
    )
    np.testing.assert_allclose(
        closest_to_median_mean(updates, [4, 0, 2, 1], 2).numpy(),
        reference_closest_to_median_mean(rows[[4, 0, 2, 1]], 2),
        rtol=1e-12,
        atol=1e-18,
    )


@pytest.mark.parametrize("theta,count", [(5, 3), (6, 2), (9, 5), (7, 7)])
def test_closest_to_median_mean_matches_the_reference(theta, count):
    updates = random_round(theta + 2, seed=theta)
    rows = [row for row in range(theta + 2) if row != 1][:theta]
    expected = reference_closest_to_median_mean(as_numpy(updates.matrix)[rows], count)
    np.testing.assert_allclose(closest_to_median_mean(updates, rows, count).numpy(), expected, rtol=1e-12, atol=1e-18)


def test_closest_to_median_mean_on_hand_columns():
    # Column 0: 1, 2, 3, 5, 6 -> median 3; distances 2, 1, 0, 2, 3; the third nearest is 1 or 5 (a tie):
    # the smaller value wins -> mean(1, 2, 3) = 2. Column 1: 0, 10, 11, 12, 40 -> median 11 -> mean 11.
    columns = np.array([[5, 12], [1, 40], [6, 0], [3, 11], [2, 10]], dtype=np.float64)
    updates = decoded_round(np.zeros(2), columns)
    assert closest_to_median_mean(updates, range(5), 3).tolist() == [2.0, 11.0]
    assert reference_closest_to_median_mean(columns, 3).tolist() == [2.0, 11.0]


# ---------------------------------------------------------------- median and trimmed mean rules


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


def model_from_update(global_arrays, update: np.ndarray) -> dict[str, np.ndarray]:
    return unflatten(flatten(global_arrays, global_arrays) + update, global_arrays)


def updates_of(weights, global_arrays) -> np.ndarray:
    return np.stack([true_update(w, global_arrays) for w in weights])


@pytest.mark.parametrize("n", [7, 6])
def test_median_rule_and_forensics(server_task_identity, n):
    global_arrays, weights = round_weights(n, seed=n, outlier=2)
    updates = updates_of(weights, global_arrays)
    expected = model_from_update(global_arrays, np.median(updates, axis=0))
    strategy, log = lab_strategy(Median(), n)
    arrays, metrics = run(strategy, global_arrays, weights)
    assert_arrays_close(record_to_numpy(arrays), expected)
    assert metrics["train_loss"] == pytest.approx(0.5)
    for row in log.for_round(1):
        assert row.decision == "accepted"
        assert math.isnan(row.weight)
        assert row.norm_after == pytest.approx(float(np.linalg.norm(updates[row.partition_id])), rel=1e-12)


@pytest.mark.parametrize("n", [7, 10])
@pytest.mark.parametrize("beta", [0.2, 0.0])
def test_trimmed_mean_rule(server_task_identity, n, beta):
    global_arrays, weights = round_weights(n, seed=10 + n, outlier=0)
    expected = model_from_update(global_arrays, reference_trimmed_mean(updates_of(weights, global_arrays), beta))
    strategy, log = lab_strategy(TrimmedMean(beta), n)
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
        strategy, _ = lab_strategy(TrimmedMean(0.2), 5)
        arrays, _ = run(strategy, global_arrays, weights)
        results.append(record_to_numpy(arrays))
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])


# ---------------------------------------------------------------- Bulyan

# Seven clients on a line, f = 1, θ = 5, β = 3. Krum applied repeatedly (the paper) chooses, with
# n' - f - 2 neighbours among the n' remaining (at least one):
#   n' = 7 (4 neighbours): scores 30, 15, 10, 15, 30, 165, 381          -> 16
#   n' = 6 (3): 14: 26, 15: 14, 17: 14, 18: 26, 24: 101, 28: 237       -> 15 (tie with 17: lower id)
#   n' = 5 (2): 14: 25, 17: 10, 18: 17, 24: 52, 28: 116               -> 17
#   n' = 4 (1): every one 16                                            -> 14 (lowest id)
#   n' = 3 (1): 18: 36, 24: 16, 28: 16                                  -> 24
# so partitions 0, 1, 2, 3, 5; Multi-Krum's five best scores of the first scoring are 0..4.
ON_A_LINE = [14, 15, 16, 17, 18, 24, 28]


def line_round():
    global_arrays = {"w": np.zeros(2, np.float32)}
    weights = [{"w": np.array([x, 0.0], np.float32)} for x in ON_A_LINE]
    return global_arrays, weights


def test_repeated_krum_on_the_line_by_hand():
    global_arrays, weights = line_round()
    updates = updates_of(weights, global_arrays)
    assert reference_krum_repeated(updates, 1, 5) == [2, 1, 3, 0, 5]
    assert reference_multikrum(updates, 1, 5) == [0, 1, 2, 3, 4]
    distances = pairwise_squared_distances(decoded_round(np.zeros(2), [w["w"] for w in weights]))
    assert select_krum_repeated(distances, 1, 5) == [2, 1, 3, 0, 5]


@pytest.mark.parametrize("selection,selected", [(KRUM_REPEATED, [0, 1, 2, 3, 5]), (MULTIKRUM, [0, 1, 2, 3, 4])])
def test_bulyan_selection_on_the_line(server_task_identity, selection, selected):
    global_arrays, weights = line_round()
    strategy, log = lab_strategy(Bulyan(1, selection), 7)
    arrays, _ = run(strategy, global_arrays, weights)
    # per coordinate: the 3 of 5 selected values nearest their median (16) -> 15, 16, 17
    np.testing.assert_array_equal(record_to_numpy(arrays)["w"], [16.0, 0.0])
    assert {row.partition_id for row in log.for_round(1) if row.decision == "accepted"} == set(selected)


def reference_bulyan(global_arrays, weights, f, selection):
    updates = updates_of(weights, global_arrays)
    theta = len(weights) - 2 * f
    if selection == KRUM_REPEATED:
        selected = sorted(reference_krum_repeated(updates, f, theta))
    else:
        selected = reference_multikrum(updates, f, theta)
    beta = theta - 2 * f
    aggregated = np.empty(updates.shape[1])
    for c in range(updates.shape[1]):
        column = sorted(updates[selected, c])
        median = np.median(column)
        closest = sorted(column, key=lambda v: abs(v - median))[:beta]  # stable: ties -> smaller value
        aggregated[c] = sum(closest) / beta
    return model_from_update(global_arrays, aggregated), selected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("selection", [KRUM_REPEATED, MULTIKRUM])
def test_bulyan_with_seven_clients_and_one_attacker(server_task_identity, seed, selection):
    n, f, outlier = 7, 1, 4
    global_arrays, weights = round_weights(n, seed=20 + seed, outlier=outlier)
    expected, selected = reference_bulyan(global_arrays, weights, f, selection)
    assert len(selected) == 5 and outlier not in selected

    strategy, log = lab_strategy(Bulyan(f, selection), n)
    arrays, _ = run(strategy, global_arrays, weights)
    assert_arrays_close(record_to_numpy(arrays), expected)
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert {pid for pid, row in rows.items() if row.decision == "accepted"} == set(selected)
    assert rows[outlier].decision == "rejected"
    assert (rows[outlier].weight, rows[outlier].norm_after) == (0.0, 0.0)
    for pid in selected:
        assert math.isnan(rows[pid].weight)


def test_bulyan_with_eleven_clients_and_two_attackers(server_task_identity):
    global_arrays, weights = round_weights(11, seed=40, outlier=6)
    expected, selected = reference_bulyan(global_arrays, weights, 2, KRUM_REPEATED)
    strategy, _ = lab_strategy(Bulyan(2), 11)
    arrays, _ = run(strategy, global_arrays, weights)
    assert_arrays_close(record_to_numpy(arrays), expected)
    assert 6 not in selected


def test_bulyan_with_fewer_than_4f_plus_3_replies_skips_the_round(server_task_identity):
    global_arrays, weights = round_weights(7, seed=30)
    strategy, log = lab_strategy(Bulyan(1), 7)
    assert run(strategy, global_arrays, weights, present=[0, 1, 2, 3, 5, 6]) == (None, None)  # 6 < 7
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert rows[4].status == "failed"
    assert all(rows[pid].decision == "skipped" and rows[pid].weight == 0.0 for pid in (0, 1, 2, 3, 5, 6))


def test_bulyan_with_f_2_needs_eleven(server_task_identity):
    global_arrays, weights = round_weights(10, seed=31)
    strategy, _ = lab_strategy(Bulyan(2), 10)
    assert run(strategy, global_arrays, weights) == (None, None)
