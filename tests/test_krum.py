"""Krum / Multi-Krum scores and selection against independent references, float64 distance precision,
and LabMultiKrum.aggregate_train end to end on real Flower messages."""

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
    reference_krum_scores,
    reference_multikrum,
    reply,
    start_round,
    true_update,
    weighted_mean,
)

from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.krum import LabMultiKrum, krum_scores, select_multikrum
from strategies.sampling import PartitionSampler
from strategies.updates import pairwise_squared_distances

# Seven points on a line (embedded in 3-D): five honest at 0, 1, 3, 4, 5 and two attackers at 100, 101.
LINE = np.array([[x, 0.0, 0.0] for x in (0, 1, 3, 4, 5, 100, 101)])
# With f = 2 every point is scored over its n - f - 2 = 3 nearest others, by hand:
#   0: 1 + 9 + 16 = 26          1: 1 + 4 + 9 = 14        3: 1 + 4 + 4 = 9
#   4: 1 + 1 + 9 = 11           5: 1 + 4 + 16 = 21
#   100: 1 + 95² + 96² = 18242  101: 1 + 96² + 97² = 18626
LINE_SCORES_F2 = [26, 14, 9, 11, 21, 18242, 18626]


def clustered(seed: int, num_honest: int, outliers: int, d: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(d)
    honest = centre + 0.1 * rng.standard_normal((num_honest, d))
    far = centre + 10.0 + 5.0 * rng.standard_normal((outliers, d))
    return np.vstack([honest, far])


# ---------------------------------------------------------------- scores and selection


def test_krum_scores_of_points_on_a_line_match_the_hand_computation():
    np.testing.assert_array_equal(krum_scores(LINE, 2), LINE_SCORES_F2)
    assert reference_krum_scores(LINE, 2) == LINE_SCORES_F2  # the reference agrees with the hand values


def test_krum_with_one_neighbour_scores_the_nearest_squared_distance():
    # f = 4, n = 7: n - f - 2 = 1 neighbour: the squared distance to the nearest other point.
    np.testing.assert_array_equal(krum_scores(LINE, 4), [1, 1, 1, 1, 1, 1, 1])
    # f = 5 would give 0 neighbours; at least one is kept.
    np.testing.assert_array_equal(krum_scores(LINE, 5), [1, 1, 1, 1, 1, 1, 1])


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
    np.testing.assert_allclose(krum_scores(updates, f), reference_krum_scores(updates, f), rtol=1e-12, atol=0)
    expected_krum = int(np.argmin(reference_krum_scores(updates, f)))
    assert expected_krum < 6  # an honest one
    assert select_multikrum(updates, f, 1) == [expected_krum]
    m = n - outliers
    picks = select_multikrum(updates, f, m)
    assert picks == reference_multikrum(updates, f, m)
    assert picks == list(range(6))  # the outliers (rows 6, 7) are excluded


# ---------------------------------------------------------------- pairwise distances


def test_pairwise_squared_distances_match_a_loop_reference():
    rng = np.random.default_rng(7)
    updates = rng.standard_normal((6, 37)) * rng.uniform(0.1, 10, size=(6, 1))
    result = pairwise_squared_distances(updates)
    assert result.shape == (6, 6)
    for i in range(6):
        assert result[i, i] == 0.0
        for j in range(6):
            expected = float(np.linalg.norm(updates[i] - updates[j])) ** 2
            assert result[i, j] == pytest.approx(expected, rel=1e-12, abs=0)


def test_update_distances_are_precise_where_the_float32_weight_shortcut_is_not():
    rng = np.random.default_rng(0)
    d = 200_000
    global_w = rng.standard_normal(d).astype(np.float32)
    clients = [(global_w + 1e-3 * rng.standard_normal(d)).astype(np.float32) for _ in range(4)]
    updates = np.stack([c.astype(np.float64) - global_w.astype(np.float64) for c in clients])
    module = pairwise_squared_distances(updates)
    worst_module = worst_shortcut = 0.0
    for i in range(4):
        for j in range(4):
            if i == j:
                continue
            reference = float(np.linalg.norm(clients[i].astype(np.float64) - clients[j].astype(np.float64))) ** 2
            assert 0.3 < reference < 0.5  # ~ 2 * d * 1e-6
            worst_module = max(worst_module, abs(module[i, j] - reference) / reference)
            x, y = clients[i], clients[j]
            shortcut = float(np.dot(x, x) + np.dot(y, y) - np.float32(2) * np.dot(x, y))  # float32, raw weights
            worst_shortcut = max(worst_shortcut, abs(shortcut - reference) / reference)
    assert worst_module < 1e-9
    assert worst_shortcut > 0.05  # tens of percent off: why defenses work on float64 updates


# ---------------------------------------------------------------- LabMultiKrum end to end


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


def multikrum(f: int, m: int):
    sampler = PartitionSampler(node_map(N), per_round=N, seed=0)
    log = RoundLog(sampler.partition_of_node)
    return LabMultiKrum(sampler=sampler, round_log=log, num_malicious_nodes=f, num_nodes_to_select=m), log


@pytest.mark.parametrize("m", [1, 3, 5])
def test_lab_multikrum_aggregates_the_selected_replies_by_examples(server_task_identity, m):
    global_arrays, weights = round_replies()
    f = 2
    updates = np.stack([true_update(w, global_arrays) for w in weights])
    selected = reference_multikrum(updates, f, m)
    assert not set(selected) & set(OUTLIERS)
    expected = weighted_mean([weights[i] for i in selected], [COUNTS[i] for i in selected])
    expected_loss = sum(LOSSES[i] * COUNTS[i] for i in selected) / sum(COUNTS[i] for i in selected)

    strategy, log = multikrum(f, m)
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


def test_lab_krum_returns_the_single_best_reply(server_task_identity):
    global_arrays, weights = round_replies(seed=11)
    updates = np.stack([true_update(w, global_arrays) for w in weights])
    best = int(np.argmin(reference_krum_scores(updates, 2)))
    strategy, log = multikrum(2, 1)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages_for(weights))
    result = record_to_numpy(arrays)
    for name, value in weights[best].items():
        np.testing.assert_array_equal(result[name], value)  # weight 1.0: exactly that reply
    decisions = {row.partition_id: (row.decision, row.weight) for row in log.for_round(1)}
    assert decisions == {pid: ("accepted", 1.0) if pid == best else ("rejected", 0.0) for pid in range(N)}


def test_lab_multikrum_ignores_a_malformed_reply(server_task_identity):
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

    strategy, log = multikrum(1, 4)
    start_round(strategy, global_arrays, N)
    arrays, _ = strategy.aggregate_train(1, messages_for(weights_used))
    assert_arrays_close(record_to_numpy(arrays), expected)
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert (rows[0].status, rows[0].decision, rows[0].weight) == ("rejected", "rejected", 0.0)
    assert {pid for pid, row in rows.items() if row.decision == "accepted"} == set(selected)
