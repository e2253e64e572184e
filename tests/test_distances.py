"""Pairwise squared distances against the float64 difference reference: within 1e-6 relative for
small updates around weights of order 1, near-identical colluders, identical rows (exactly 0), tight
clusters far apart and rescaled rows; the float32 weight shortcut Flower uses is far off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategy_helpers import as_numpy, decoded_round, reference_squared_distances

from strategies.distances import pairwise_squared_distances

D = 300_000  # several coordinate blocks, not a multiple of the block size
BOUND = 1e-6


def worst_relative_error(result: np.ndarray, reference: np.ndarray) -> float:
    off_diagonal = ~np.eye(len(reference), dtype=bool)
    positive = off_diagonal & (reference > 0)
    return float(np.max(np.abs(result[positive] - reference[positive]) / reference[positive]))


def server_rows(updates) -> np.ndarray:
    """The float64 rows the server holds for ``updates`` (float32 matrix values)."""
    return as_numpy(updates.matrix)


def realistic_round(seed: int = 0, device: str = "cpu"):
    """Weights ~ N(0, 1) (float32); 7 honest updates ~ N(0, 1e-3); 3 colluders sharing one large update
    up to 1e-7 per coordinate; one exact copy of a colluder; one exact copy of an honest client."""
    rng = np.random.default_rng(seed)
    global_vector = rng.standard_normal(D).astype(np.float32)
    honest = [global_vector + 1e-3 * rng.standard_normal(D) for _ in range(7)]
    attack = 0.05 * rng.standard_normal(D)
    colluders = [global_vector + attack + 1e-7 * rng.standard_normal(D) for _ in range(3)]
    clients = [np.asarray(c, dtype=np.float32) for c in honest + colluders]
    clients += [clients[8].copy(), clients[0].copy()]
    return decoded_round(global_vector, clients, device=device)


def test_realistic_round_is_within_the_bound_and_identical_rows_are_exactly_zero():
    updates = realistic_round()
    result = pairwise_squared_distances(updates).numpy()
    reference = reference_squared_distances(server_rows(updates))
    assert np.array_equal(result, result.T)
    assert np.all(np.diag(result) == 0.0)
    assert worst_relative_error(result, reference) < BOUND
    assert result[8, 10] == 0.0 and result[0, 11] == 0.0  # identical rows
    assert 0 < result[8, 9] < 1e-8  # colluders differ by ~1e-7 per coordinate: resolved, not zeroed
    assert reference[8, 9] == pytest.approx(result[8, 9], rel=BOUND)


def test_two_tight_clusters_far_apart():
    rng = np.random.default_rng(3)
    global_vector = rng.standard_normal(D).astype(np.float32)
    offsets = (5.0 * rng.standard_normal(D), -5.0 * rng.standard_normal(D))
    clients = [
        (global_vector + offsets[c] + 1e-6 * rng.standard_normal(D)).astype(np.float32) for c in (0, 0, 0, 0, 1, 1, 1)
    ]
    updates = decoded_round(global_vector, clients)
    result = pairwise_squared_distances(updates).numpy()
    assert worst_relative_error(result, reference_squared_distances(server_rows(updates))) < BOUND


def test_a_subset_of_rows_in_the_given_order():
    updates = realistic_round(seed=1)
    rows = [9, 2, 8, 0]
    result = pairwise_squared_distances(updates, rows).numpy()
    reference = reference_squared_distances(server_rows(updates)[rows])
    assert worst_relative_error(result, reference) < BOUND


def test_rescaled_rows_are_measured_as_the_defense_sees_them():
    updates = realistic_round(seed=2)
    factors = torch.linspace(0.2, 1.0, updates.count, dtype=torch.float64)
    factors[10] = factors[8]  # the copy of colluder 8 stays identical to it
    scaled = updates.rescaled(factors)
    result = pairwise_squared_distances(scaled).numpy()
    rows = server_rows(updates) * factors.numpy()[:, None]
    assert worst_relative_error(result, reference_squared_distances(rows)) < BOUND
    assert result[8, 10] == 0.0


def test_the_float32_weight_shortcut_is_far_off_where_the_module_is_not():
    rng = np.random.default_rng(0)
    global_w = rng.standard_normal(200_000).astype(np.float32)
    clients = [(global_w + 1e-3 * rng.standard_normal(200_000)).astype(np.float32) for _ in range(4)]
    updates = decoded_round(global_w, clients)
    module = pairwise_squared_distances(updates).numpy()
    reference = reference_squared_distances(server_rows(updates))
    assert worst_relative_error(module, reference) < 1e-9
    worst_shortcut = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            x, y = clients[i], clients[j]
            shortcut = float(np.dot(x, x) + np.dot(y, y) - np.float32(2) * np.dot(x, y))  # float32, raw weights
            worst_shortcut = max(worst_shortcut, abs(shortcut - reference[i, j]) / reference[i, j])
    assert worst_shortcut > 0.05  # tens of percent off: why defenses work on float64 updates


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_gpu_path_meets_the_same_bound():
    updates = realistic_round(device="cuda")
    assert updates.matrix.device.type == "cuda"
    result = pairwise_squared_distances(updates).numpy()
    reference = reference_squared_distances(server_rows(updates))
    assert worst_relative_error(result, reference) < BOUND
    assert result[8, 10] == 0.0 and result[0, 11] == 0.0
