"""Loss-percentile filtering: keep_below_percentile against numpy.percentile, and the loss-filter rule through
LabStrategy.aggregate_train on real Flower messages."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from strategy_helpers import (
    assert_arrays_close,
    client_weights,
    lab_strategy,
    make_global,
    reply,
    start_round,
    weighted_mean,
)

from fl_poison.core.weights import record_to_numpy
from strategies.loss_filter import LossFilter, keep_below_percentile

PERCENTILES = [25, 50, 75, 100]


def reference_keep(losses, percentile):
    finite = [x for x in losses if math.isfinite(x)]
    if not finite:
        return [False] * len(losses)
    threshold = np.percentile(np.array(finite), percentile)
    return [math.isfinite(x) and x <= threshold for x in losses]


# Losses with ties and a NaN; finite values sorted: 0.1, 0.5, 0.5, 0.9, 2.0.
# numpy's linear percentile: p25 -> 0.5, p50 -> 0.5, p75 -> 0.9, p100 -> 2.0.
HAND = [0.9, 0.5, math.nan, 2.0, 0.1, 0.5]
HAND_KEEP = {
    25: [False, True, False, False, True, True],
    50: [False, True, False, False, True, True],
    75: [True, True, False, False, True, True],
    100: [True, True, False, True, True, True],
}


@pytest.mark.parametrize("percentile", PERCENTILES)
def test_hand_example_with_ties_and_nan(percentile):
    assert keep_below_percentile(HAND, percentile) == HAND_KEEP[percentile]
    assert reference_keep(HAND, percentile) == HAND_KEEP[percentile]


@pytest.mark.parametrize("percentile", PERCENTILES)
def test_all_equal_losses_are_all_kept(percentile):
    assert keep_below_percentile([0.7] * 5, percentile) == [True] * 5


@pytest.mark.parametrize("percentile", PERCENTILES)
def test_no_finite_loss_keeps_nobody(percentile):
    assert keep_below_percentile([math.nan, math.nan, math.inf], percentile) == [False, False, False]
    assert keep_below_percentile([], percentile) == []


def test_an_infinite_loss_is_dropped_and_does_not_move_the_threshold():
    # Threshold over the finite 1, 2, 3, 4 at p50 = 2.5 (an inf would have made it 3).
    assert keep_below_percentile([1.0, 2.0, math.inf, 3.0, 4.0], 50) == [True, True, False, False, False]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("percentile", [*PERCENTILES, 10, 33.3, 90])
def test_random_losses_match_numpy_percentile(seed, percentile):
    rng = np.random.default_rng(seed)
    losses = list(np.round(rng.exponential(1.0, size=12), 1))  # rounding makes ties likely
    losses[int(rng.integers(12))] = math.nan
    expected = reference_keep(losses, percentile)
    assert keep_below_percentile(losses, percentile) == expected
    threshold = np.nanpercentile(np.array(losses), percentile)  # a second, independent threshold
    assert expected == [bool(x <= threshold) for x in losses]
    if percentile == 100:
        assert sum(expected) == 11


# ---------------------------------------------------------------- the loss-filter rule end to end

N = 6
COUNTS = [10, 20, 30, 40, 50, 60]


def loss_filter(percentile):
    return lab_strategy(LossFilter(percentile), N)


def round_weights(seed=2):
    rng = np.random.default_rng(seed)
    global_arrays = make_global(seed)
    return global_arrays, [client_weights(global_arrays, 0.1 * rng.standard_normal(15)) for _ in range(N)]


@pytest.mark.parametrize("percentile,kept", [(50, {0, 1, 3}), (75, {0, 1, 3, 5}), (100, set(range(N)))])
def test_loss_filter_drops_high_loss_replies(server_task_identity, percentile, kept):
    losses = [0.2, 0.3, 5.0, 0.25, 4.0, 0.35]
    # finite sorted: .2 .25 .3 .35 4 5 -> p50 = .325, p75 = 3.0875, p100 = 5 (numpy, linear)
    assert {i for i, k in enumerate(reference_keep(losses, percentile)) if k} == kept
    global_arrays, weights = round_weights()
    ordered = sorted(kept)
    expected = weighted_mean([weights[i] for i in ordered], [COUNTS[i] for i in ordered])
    expected_loss = sum(losses[i] * COUNTS[i] for i in ordered) / sum(COUNTS[i] for i in ordered)

    strategy, log = loss_filter(percentile)
    start_round(strategy, global_arrays, N)
    replies = [reply(w, pid, COUNTS[pid], losses[pid], attacked=int(losses[pid] > 1)) for pid, w in enumerate(weights)]
    random.Random(3).shuffle(replies)
    arrays, metrics = strategy.aggregate_train(1, replies)

    assert_arrays_close(record_to_numpy(arrays), expected)
    assert metrics["train_loss"] == pytest.approx(expected_loss, rel=1e-9)
    rows = {row.partition_id: row for row in log.for_round(1)}
    total = sum(COUNTS[i] for i in kept)
    for pid, row in rows.items():
        assert row.loss == losses[pid]
        if pid in kept:
            assert (row.decision, row.weight) == ("accepted", pytest.approx(COUNTS[pid] / total, rel=1e-12))
        else:
            assert (row.decision, row.weight, row.norm_after) == ("rejected", 0.0, 0.0)


def test_loss_filter_with_no_finite_loss_keeps_the_global_model(server_task_identity):
    global_arrays, weights = round_weights(seed=3)
    strategy, log = loss_filter(75)
    start_round(strategy, global_arrays, N)
    replies = [reply(w, pid, COUNTS[pid], math.nan) for pid, w in enumerate(weights)]
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert [row.decision for row in log.for_round(1)] == ["rejected"] * N
