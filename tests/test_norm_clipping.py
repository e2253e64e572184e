"""Norm clipping: clip_rows / clipping_bound against numpy, and LabNormClip.aggregate_train on real
Flower messages (fixed and automatic bound, and in front of Krum / Multi-Krum)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from strategy_helpers import (
    assert_arrays_close,
    client_weights,
    flatten,
    make_global,
    node_map,
    reference_multikrum,
    reply,
    start_round,
    true_update,
    unflatten,
    weighted_mean,
)

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.fedavg import LabFedAvg
from strategies.krum import LabMultiKrum
from strategies.norm_clip import LabNormClip, clip_rows, clipping_bound
from strategies.registry import build_strategy
from strategies.sampling import PartitionSampler


def exact_norm(row: np.ndarray) -> float:
    """The Euclidean norm of a float64 row from an exact (rational) sum of squares."""
    return math.sqrt(float(sum(Fraction(float(x)) ** 2 for x in row)))


# ---------------------------------------------------------------- clip_rows and clipping_bound


def test_clip_rows_on_a_hand_example():
    rows = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    clipped = clip_rows(rows, 1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0], [-0.6, 0.8]], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(clipped[1:3], rows[1:3])  # below the bound: untouched
    np.testing.assert_array_equal(rows, [[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])  # input not modified


def test_a_row_exactly_at_the_bound_is_unchanged():
    rows = np.array([[3.0, 4.0]])
    np.testing.assert_array_equal(clip_rows(rows, 5.0), rows)


@pytest.mark.parametrize("seed", range(6))
def test_clip_rows_on_random_rows(seed):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((40, int(rng.integers(1, 50)))) * rng.uniform(0.01, 50, size=(40, 1))
    norms = [float(np.linalg.norm(row)) for row in rows]
    bound = float(np.median(norms)) * rng.uniform(0.5, 1.5)
    clipped = clip_rows(rows, bound)
    assert clipped.dtype == np.float64 and clipped.shape == rows.shape
    long_rows = 0
    for row, out, norm in zip(rows, clipped, norms, strict=True):
        if norm <= bound:
            np.testing.assert_array_equal(out, row)
            continue
        long_rows += 1
        # Norm exactly the bound (up to float64 rounding of the true norm)...
        assert exact_norm(out) == pytest.approx(bound, rel=1e-12, abs=0)
        # ... and never above it as the module's float64 norm (einsum over the row) sees it: the
        # nudge in clip_rows exists for this. (A different summation order, e.g. np.linalg.norm,
        # can land one ulp either side.)
        assert np.sqrt(np.einsum("ij,ij->i", out[None, :], out[None, :]))[0] <= bound
        # Same direction: a single positive factor for every coordinate.
        factors = out[row != 0] / row[row != 0]
        assert np.all(factors > 0)
        np.testing.assert_allclose(factors, bound / norm, rtol=1e-14, atol=0)
    assert long_rows > 5


def test_clipping_bound_auto_is_the_numpy_median():
    odd = np.array([5.0, 1.0, 3.0, 9.0, 2.0])
    even = np.array([4.0, 1.0, 10.0, 2.0])
    assert clipping_bound(odd, None) == 3.0 == float(np.median(odd))
    assert clipping_bound(even, None) == 3.0 == float(np.median(even))  # (2 + 4) / 2
    assert clipping_bound(odd, 0.25) == 0.25  # a configured bound wins


# ---------------------------------------------------------------- LabNormClip end to end

N = 5
COUNTS = [10, 30, 20, 50, 40]
TARGET_NORMS = [0.5, 4.0, 0.8, 2.0, 1.5]  # clipped at 1.0: partitions 1, 3, 4; auto bound = median (~1.5)


def clipping_round(seed: int = 0, norms=TARGET_NORMS):
    rng = np.random.default_rng(seed)
    global_arrays = make_global(seed)
    weights = []
    for norm in norms:
        direction = rng.standard_normal(15)
        weights.append(client_weights(global_arrays, direction / np.linalg.norm(direction) * norm))
    return global_arrays, weights


def reference_clip(update: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(update))
    return update * (bound / norm) if norm > bound else update


def clipped_weights(global_arrays, weights, bound):
    """float32(global + clip(update)), as the clipped reply enters the aggregate."""
    base = flatten(global_arrays, global_arrays)
    out = []
    for w in weights:
        update = reference_clip(true_update(w, global_arrays), bound)
        out.append({name: v.astype(np.float32) for name, v in unflatten(base + update, global_arrays).items()})
    return out


def norm_clip(clip_norm, num_partitions=N):
    sampler = PartitionSampler(node_map(num_partitions), per_round=num_partitions, seed=0)
    log = RoundLog(sampler.partition_of_node)
    inner = LabFedAvg(sampler=sampler, round_log=log)
    return LabNormClip(sampler=sampler, round_log=log, clip_norm=clip_norm, inner=inner), log


def messages(weights, counts):
    out = [reply(w, pid, counts[pid]) for pid, w in enumerate(weights)]
    random.Random(0).shuffle(out)
    return out


@pytest.mark.parametrize("clip_norm", [1.0, None], ids=["fixed", "auto"])
def test_norm_clip_with_fedavg(server_task_identity, clip_norm):
    global_arrays, weights = clipping_round()
    updates = [true_update(w, global_arrays) for w in weights]
    norms = [float(np.linalg.norm(u)) for u in updates]
    bound = 1.0 if clip_norm is not None else float(np.median(norms))
    expected_clipped = {pid for pid, norm in enumerate(norms) if norm > bound}
    assert expected_clipped == ({1, 3, 4} if clip_norm is not None else {1, 3})
    expected = weighted_mean(clipped_weights(global_arrays, weights, bound), COUNTS)

    strategy, log = norm_clip(clip_norm)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages(weights, COUNTS))
    assert_arrays_close(record_to_numpy(arrays), expected)

    rows = {row.partition_id: row for row in log.for_round(1)}
    for pid, row in rows.items():
        assert row.bound == pytest.approx(bound, rel=1e-12)
        assert row.norm_before == pytest.approx(norms[pid], rel=1e-12)
        assert row.weight == pytest.approx(COUNTS[pid] / sum(COUNTS), rel=1e-12)
        if pid in expected_clipped:
            assert row.decision == "clipped"
            assert row.norm_after == pytest.approx(bound, rel=1e-12)
            assert row.norm_after <= bound
        else:
            assert row.decision == "accepted"
            assert row.norm_after == pytest.approx(norms[pid], rel=1e-12)


def test_norm_clip_with_a_large_bound_is_fedavg(server_task_identity):
    global_arrays, weights = clipping_round(seed=4)
    strategy, log = norm_clip(100.0)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages(weights, COUNTS))
    assert_arrays_close(record_to_numpy(arrays), weighted_mean(weights, COUNTS))
    assert [row.decision for row in log.for_round(1)] == ["accepted"] * N


@pytest.mark.parametrize("wrap,keep", [("krum", 1), ("multikrum", 5)])
def test_norm_clip_in_front_of_krum(server_task_identity, wrap, keep):
    n, f = 7, 2
    config = experiment_config(
        {"strategy": "norm-clip", "clip-wrap": wrap, "num-clients": n, "krum-f": f, "clip-norm": "auto"}
    )
    sampler = PartitionSampler(node_map(n), per_round=n, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = build_strategy(config, sampler, log)
    assert isinstance(strategy, LabNormClip) and isinstance(strategy.inner, LabMultiKrum)
    assert strategy.inner.num_nodes_to_select == keep

    # Honest updates: a shared direction with small noise and norms 0.5..2; outliers: other directions.
    rng = np.random.default_rng(9)
    global_arrays = make_global(9)
    centre = rng.standard_normal(15)
    centre /= np.linalg.norm(centre)
    counts = [10, 20, 30, 40, 50, 60, 70]
    weights = []
    for pid, scale in enumerate([0.5, 1.0, 30.0, 1.5, 2.0, 25.0, 0.8]):
        noise = rng.standard_normal(15)
        direction = noise if pid in (2, 5) else centre + 0.02 * noise
        weights.append(client_weights(global_arrays, direction / np.linalg.norm(direction) * scale))
    updates = [true_update(w, global_arrays) for w in weights]
    norms = [float(np.linalg.norm(u)) for u in updates]
    bound = float(np.median(norms))
    clipped = np.stack([reference_clip(u, bound) for u in updates])
    selected = reference_multikrum(clipped, f, keep)
    assert not {2, 5} & set(selected)
    expected = weighted_mean(
        [clipped_weights(global_arrays, weights, bound)[i] for i in selected], [counts[i] for i in selected]
    )

    start_round(strategy, global_arrays, n)
    arrays, _ = strategy.aggregate_train(1, messages(weights, counts))
    assert_arrays_close(record_to_numpy(arrays), expected)

    rows = {row.partition_id: row for row in log.for_round(1)}
    total = sum(counts[i] for i in selected)
    for pid, row in rows.items():
        assert row.bound == pytest.approx(bound, rel=1e-12)
        if pid in selected:
            assert row.decision == ("clipped" if norms[pid] > bound else "accepted")
            assert row.norm_after == pytest.approx(min(norms[pid], bound), rel=1e-12)
            assert row.weight == pytest.approx(counts[pid] / total, rel=1e-12)
        else:
            assert row.decision == "rejected"
            assert row.norm_after == 0.0
            assert row.weight == 0.0
    assert rows[2].decision == rows[5].decision == "rejected"
