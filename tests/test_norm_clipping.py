"""Norm clipping: clipped_scale / clipping_bound against numpy, and the norm-clip rule through
LabStrategy.aggregate_train on real Flower messages (fixed and automatic bound, in front of FedAvg,
Krum, Multi-Krum, the median and FedProx)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from strategy_helpers import (
    FakeGrid,
    assert_arrays_close,
    client_weights,
    flatten,
    lab_strategy,
    make_global,
    node_map,
    reference_multikrum,
    reply,
    start_round,
    true_update,
    unflatten,
)

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.fedavg import FedAvg
from strategies.fedprox import FedProx
from strategies.krum import Krum
from strategies.median import Median
from strategies.multikrum import MultiKrum
from strategies.norm_clip import NormClip, clipped_scale, clipping_bound
from strategies.registry import build_strategy
from strategies.sampling import PartitionSampler

# ---------------------------------------------------------------- clipped_scale and clipping_bound


def factors_for(norms, bound, scale=None):
    norms = torch.tensor(norms, dtype=torch.float64)
    scale = torch.ones_like(norms) if scale is None else torch.tensor(scale, dtype=torch.float64)
    return clipped_scale(scale, norms, bound), norms


def test_clipped_scale_on_a_hand_example():
    factors, norms = factors_for([5.0, 0.5, 0.0, 10.0], 1.0)
    np.testing.assert_allclose(factors.numpy(), [0.2, 1.0, 1.0, 0.1], rtol=1e-15, atol=0)
    assert factors[1] == 1.0 and factors[2] == 1.0  # below the bound: untouched


def test_a_row_exactly_at_the_bound_is_unchanged():
    factors, _ = factors_for([5.0], 5.0)
    assert factors.tolist() == [1.0]


def test_existing_factors_are_composed():
    # A row already scaled by 0.5 (seen norm 4) clipped to 1: factor 0.5 * 1/4.
    factors, norms = factors_for([8.0, 1.0], 1.0, scale=[0.5, 0.5])
    assert factors.tolist() == [0.125, 0.5]


@pytest.mark.parametrize("seed", range(6))
def test_clipped_scale_on_random_norms(seed):
    rng = np.random.default_rng(seed)
    norms = rng.uniform(0.01, 50, size=200) * 10.0 ** rng.integers(-3, 3, size=200)
    bound = float(np.median(norms)) * rng.uniform(0.5, 1.5)
    factors, norms_t = factors_for(norms, bound)
    seen_after = (factors * norms_t).numpy()
    long_rows = norms > bound
    assert long_rows.sum() > 20
    assert np.all(seen_after <= bound)  # the recorded norm after clipping never exceeds the bound
    np.testing.assert_allclose(seen_after[long_rows], bound, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(factors.numpy()[~long_rows], 1.0)
    assert np.all(factors.numpy() > 0)


def test_clipping_bound_auto_is_the_numpy_median():
    odd = [5.0, 1.0, 3.0, 9.0, 2.0]
    even = [4.0, 1.0, 10.0, 2.0]
    assert clipping_bound(odd, None) == 3.0 == float(np.median(odd))
    assert clipping_bound(even, None) == 3.0 == float(np.median(even))  # (2 + 4) / 2
    assert clipping_bound(odd, 0.25) == 0.25  # a configured bound wins


# ---------------------------------------------------------------- norm-clip end to end

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


def model_from_updates(global_arrays, updates, weights) -> dict[str, np.ndarray]:
    """global + sum_i weights[i] * updates[i], in float64."""
    total = sum(w * u for w, u in zip(weights, updates, strict=True))
    return unflatten(flatten(global_arrays, global_arrays) + total, global_arrays)


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
    shares = [c / sum(COUNTS) for c in COUNTS]
    expected = model_from_updates(global_arrays, [reference_clip(u, bound) for u in updates], shares)

    strategy, log = lab_strategy(NormClip(clip_norm, FedAvg()), N)
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
            assert row.norm_after == pytest.approx(bound, rel=1e-15)
            assert row.norm_after <= bound
        else:
            assert row.decision == "accepted"
            assert row.norm_after == row.norm_before


def test_norm_clip_with_a_large_bound_is_fedavg(server_task_identity):
    global_arrays, weights = clipping_round(seed=4)
    strategy, log = lab_strategy(NormClip(100.0, FedAvg()), N)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages(weights, COUNTS))
    updates = [true_update(w, global_arrays) for w in weights]
    assert_arrays_close(
        record_to_numpy(arrays), model_from_updates(global_arrays, updates, [c / sum(COUNTS) for c in COUNTS])
    )
    assert [row.decision for row in log.for_round(1)] == ["accepted"] * N


def test_norm_clip_in_front_of_the_median_sees_the_clipped_rows(server_task_identity):
    global_arrays, weights = clipping_round(seed=2)
    updates = np.stack([reference_clip(true_update(w, global_arrays), 1.0) for w in weights])
    expected = unflatten(flatten(global_arrays, global_arrays) + np.median(updates, axis=0), global_arrays)
    strategy, log = lab_strategy(NormClip(1.0, Median()), N)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages(weights, COUNTS))
    assert_arrays_close(record_to_numpy(arrays), expected)
    decisions = {row.partition_id: row.decision for row in log.for_round(1)}
    assert decisions == {0: "accepted", 1: "clipped", 2: "accepted", 3: "clipped", 4: "clipped"}


def test_norm_clip_passes_on_the_wrapped_rules_train_config(server_task_identity):
    strategy, _ = lab_strategy(NormClip(None, FedProx(0.3)), 2)
    arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    sent = list(strategy.configure_train(1, arrays, ConfigRecord({}), FakeGrid(node_map(2).values())))
    assert [message.content["config"]["proximal-mu"] for message in sent] == [0.3, 0.3]
    assert "fedprox (mu=0.3)" in strategy.defense.describe()


@pytest.mark.parametrize("wrap,rule,keep", [("krum", Krum, 1), ("multikrum", MultiKrum, 5)])
def test_norm_clip_in_front_of_krum(server_task_identity, wrap, rule, keep):
    n, f = 7, 2
    config = experiment_config(
        {"strategy": "norm-clip", "clip-wrap": wrap, "num-clients": n, "krum-f": f, "clip-norm": "auto"}
    )
    sampler = PartitionSampler(node_map(n), per_round=n, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = build_strategy(config, sampler, log)
    assert isinstance(strategy.defense, NormClip) and type(strategy.defense.inner) is rule

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
    total = sum(counts[i] for i in selected)
    expected = model_from_updates(global_arrays, [clipped[i] for i in selected], [counts[i] / total for i in selected])

    start_round(strategy, global_arrays, n)
    arrays, _ = strategy.aggregate_train(1, messages(weights, counts))
    assert_arrays_close(record_to_numpy(arrays), expected)

    rows = {row.partition_id: row for row in log.for_round(1)}
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
