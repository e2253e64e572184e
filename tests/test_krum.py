"""Krum / Multi-Krum scores and selection against independent references, and the Krum and Multi-Krum
rules through LabStrategy.aggregate_train on real Flower messages."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from strategy_helpers import (
    assert_arrays_close,
    client_weights,
    decoded_round,
    lab_strategy,
    make_global,
    reference_krum_scores,
    reference_multikrum,
    reference_squared_distances,
    reply,
    start_round,
    true_update,
    weighted_mean,
)

from fl_poison.core.weights import record_to_numpy
from strategies.distances import pairwise_squared_distances
from strategies.krum import Krum, krum_scores, lowest_scores
from strategies.multikrum import MultiKrum

# Seven points on a line (embedded in 3-D): five honest at 0, 1, 3, 4, 5 and two attackers at 100, 101.
LINE = np.array([[x, 0.0, 0.0] for x in (0, 1, 3, 4, 5, 100, 101)])
# With f = 2 every point is scored over its n - f - 2 = 3 nearest others, by hand:
#   0: 1 + 9 + 16 = 26          1: 1 + 4 + 9 = 14        3: 1 + 4 + 4 = 9
#   4: 1 + 1 + 9 = 11           5: 1 + 4 + 16 = 21
#   100: 1 + 95² + 96² = 18242  101: 1 + 96² + 97² = 18626
LINE_SCORES_F2 = [26, 14, 9, 11, 21, 18242, 18626]


def distances_of(points: np.ndarray) -> torch.Tensor:
    """The module's squared distances between ``points`` (as float32 updates around a zero model)."""
    return pairwise_squared_distances(decoded_round(np.zeros(points.shape[1]), points))


def select_multikrum(points: np.ndarray, f: int, m: int) -> list[int]:
    return lowest_scores(krum_scores(distances_of(points), f), m)


def clustered(seed: int, num_honest: int, outliers: int, d: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(d)
    honest = centre + 0.1 * rng.standard_normal((num_honest, d))
    far = centre + 10.0 + 5.0 * rng.standard_normal((outliers, d))
    return np.vstack([honest, far]).astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------- scores and selection


def test_krum_scores_of_points_on_a_line_match_the_hand_computation():
    # The Gram matrix is taken around the rows' mean (2^-53-sized rounding on these integers).
    np.testing.assert_allclose(krum_scores(distances_of(LINE), 2).numpy(), LINE_SCORES_F2, rtol=1e-12, atol=0)
    assert reference_krum_scores(LINE, 2) == LINE_SCORES_F2  # the reference agrees with the hand values


def test_krum_with_one_neighbour_scores_the_nearest_squared_distance():
    # f = 4, n = 7: n - f - 2 = 1 neighbour: the squared distance to the nearest other point.
    np.testing.assert_allclose(krum_scores(distances_of(LINE), 4).numpy(), [1] * 7, rtol=1e-12, atol=0)
    # f = 5 would give 0 neighbours; at least one is kept.
    np.testing.assert_allclose(krum_scores(distances_of(LINE), 5).numpy(), [1] * 7, rtol=1e-12, atol=0)


def test_krum_scores_of_one_or_two_rows():
    assert krum_scores(torch.zeros((1, 1), dtype=torch.float64), 1).tolist() == [0.0]  # no neighbour at all
    two = torch.tensor([[0.0, 4.0], [4.0, 0.0]], dtype=torch.float64)
    assert krum_scores(two, 1).tolist() == [4.0, 4.0]


def test_krum_and_multikrum_selection_on_the_line():
    assert select_multikrum(LINE, 2, 1) == [2]  # the point at 3 (score 9)
    assert select_multikrum(LINE, 2, 3) == [1, 2, 3]  # scores 14, 9, 11
    assert select_multikrum(LINE, 2, 5) == [0, 1, 2, 3, 4]  # every honest point, no attacker
    assert select_multikrum(LINE, 2, 7) == list(range(7))


def test_ties_go_to_the_lower_index():
    same = np.ones((5, 4))
    assert select_multikrum(same, 1, 2) == [0, 1]
    assert select_multikrum(same, 1, 1) == [0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("outliers,f", [(1, 1), (2, 2), (2, 1)])
def test_scores_and_selection_match_the_reference_on_clustered_updates(seed, outliers, f):
    updates = clustered(seed, 6, outliers)
    n = len(updates)
    scores = krum_scores(distances_of(updates), f).numpy()
    np.testing.assert_allclose(scores, reference_krum_scores(updates, f), rtol=1e-9, atol=0)
    expected_krum = int(np.argmin(reference_krum_scores(updates, f)))
    assert expected_krum < 6  # an honest one
    assert select_multikrum(updates, f, 1) == [expected_krum]
    m = n - outliers
    picks = select_multikrum(updates, f, m)
    assert picks == reference_multikrum(updates, f, m)
    assert picks == list(range(6))  # the outliers (rows 6, 7) are excluded


def test_distances_match_a_loop_reference():
    rng = np.random.default_rng(7)
    rows = (rng.standard_normal((6, 37)) * rng.uniform(0.1, 10, size=(6, 1))).astype(np.float32)
    result = distances_of(rows.astype(np.float64)).numpy()
    assert result.shape == (6, 6)
    expected = reference_squared_distances(rows)
    assert np.all(np.diag(result) == 0.0)
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=0)


# ---------------------------------------------------------------- the Krum rules end to end


N = 7
OUTLIERS = (2, 5)
COUNTS = [10, 20, 30, 40, 50, 60, 70]
LOSSES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def round_replies(seed: int = 3):
    """Global weights and 7 client weight sets: clustered honest updates, far outliers at OUTLIERS."""
    rng = np.random.default_rng(seed)
    global_arrays = make_global(seed)
    centre = 0.05 * rng.standard_normal(15)
    weights = []
    for pid in range(N):
        spread = 3.0 if pid in OUTLIERS else 0.01
        weights.append(client_weights(global_arrays, centre + spread * rng.standard_normal(15)))
    return global_arrays, weights


def messages_for(weights):
    messages = [reply(w, pid, COUNTS[pid], LOSSES[pid], attacked=int(pid in OUTLIERS)) for pid, w in enumerate(weights)]
    random.Random(1).shuffle(messages)  # arrival order must not matter
    return messages


@pytest.mark.parametrize("m", [1, 3, 5])
def test_multikrum_aggregates_the_selected_replies_by_examples(server_task_identity, m):
    global_arrays, weights = round_replies()
    f = 2
    updates = np.stack([true_update(w, global_arrays) for w in weights])
    selected = reference_multikrum(updates, f, m)
    assert not set(selected) & set(OUTLIERS)
    expected = weighted_mean([weights[i] for i in selected], [COUNTS[i] for i in selected])
    expected_loss = sum(LOSSES[i] * COUNTS[i] for i in selected) / sum(COUNTS[i] for i in selected)

    strategy, log = lab_strategy(MultiKrum(f, m), N)
    start_round(strategy, global_arrays, N)
    arrays, metrics = strategy.aggregate_train(1, messages_for(weights))

    assert_arrays_close(record_to_numpy(arrays), expected)
    assert metrics["train_loss"] == pytest.approx(expected_loss, rel=1e-9)

    rows = {row.partition_id: row for row in log.for_round(1)}
    assert sorted(rows) == list(range(N))
    total = sum(COUNTS[i] for i in selected)
    for pid, row in rows.items():
        assert row.status == "ok"
        assert row.norm_before == pytest.approx(float(np.linalg.norm(updates[pid])), rel=1e-12)
        assert math.isnan(row.bound)
        if pid in selected:
            assert row.decision == "accepted"
            assert row.weight == pytest.approx(COUNTS[pid] / total, rel=1e-12)
            assert row.norm_after == pytest.approx(float(np.linalg.norm(updates[pid])), rel=1e-12)
        else:
            assert row.decision == "rejected"
            assert (row.weight, row.norm_after) == (0.0, 0.0)
    assert sum(row.weight for row in rows.values() if row.decision == "accepted") == pytest.approx(1.0, rel=1e-12)
    assert sum(row.decision == "accepted" for row in rows.values()) == m
    for pid in OUTLIERS:
        assert rows[pid].decision == "rejected" and rows[pid].attacked == 1


@pytest.mark.parametrize("rule", [Krum(2), MultiKrum(2, 1)], ids=["krum", "multikrum-m1"])
def test_krum_returns_the_single_best_reply_bit_for_bit(server_task_identity, rule):
    global_arrays, weights = round_replies(seed=11)
    updates = np.stack([true_update(w, global_arrays) for w in weights])
    best = int(np.argmin(reference_krum_scores(updates, 2)))
    strategy, log = lab_strategy(rule, N)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages_for(weights))
    result = record_to_numpy(arrays)
    assert list(result) == list(global_arrays)
    for name, value in weights[best].items():
        np.testing.assert_array_equal(result[name], value)  # weight 1.0: exactly that reply
    decisions = {row.partition_id: (row.decision, row.weight) for row in log.for_round(1)}
    assert decisions == {pid: ("accepted", 1.0) if pid == best else ("rejected", 0.0) for pid in range(N)}


def test_multikrum_ignores_a_malformed_reply(server_task_identity):
    global_arrays, weights = round_replies(seed=5)
    broken = dict(weights[0])
    broken["w"] = broken["w"].copy()
    broken["w"][0, 0] = np.nan
    weights_used = [broken] + weights[1:]
    # Selection runs over the 6 usable replies (partitions 1..6).
    usable = list(range(1, N))
    updates = np.stack([true_update(weights[i], global_arrays) for i in usable])
    selected = [usable[i] for i in reference_multikrum(updates, 1, 4)]
    expected = weighted_mean([weights[i] for i in selected], [COUNTS[i] for i in selected])

    strategy, log = lab_strategy(MultiKrum(1, 4), N)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages_for(weights_used))
    assert_arrays_close(record_to_numpy(arrays), expected)
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert (rows[0].status, rows[0].decision, rows[0].weight) == ("rejected", "rejected", 0.0)
    assert {pid for pid, row in rows.items() if row.decision == "accepted"} == set(selected)


def test_multikrum_keeps_everybody_when_fewer_than_m_replied(server_task_identity):
    global_arrays, weights = round_replies(seed=6)
    strategy, log = lab_strategy(MultiKrum(1, 6), N)
    start_round(strategy, global_arrays, N)
    replies = [reply(weights[pid], pid, COUNTS[pid]) for pid in (0, 1, 3)]
    arrays, _ = strategy.aggregate_train(1, replies)
    expected = weighted_mean([weights[i] for i in (0, 1, 3)], [COUNTS[i] for i in (0, 1, 3)])
    assert_arrays_close(record_to_numpy(arrays), expected)
    assert {row.partition_id: row.decision for row in log.for_round(1) if row.status == "ok"} == dict.fromkeys(
        (0, 1, 3), "accepted"
    )
