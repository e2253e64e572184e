"""Decoding a round once: the float32 update equals the float64 difference rounded to float32, payloads
are read without copies, norms are float64, the layout rebuilds the model, blocks see row factors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Array
from strategy_helpers import NODE_OFFSET, as_numpy, decoded_round, reply

from fl_poison.core.round_updates import COORDINATE_BLOCK, UpdateLayout, decode_round, npy_payload


def partition_of(message) -> int:
    return message.metadata.src_node_id - NODE_OFFSET


def test_float32_subtraction_is_the_float64_difference_rounded_once():
    rng = np.random.default_rng(0)
    size = 200_000
    weights = (rng.standard_normal(size) * 10.0 ** rng.integers(-8, 8, size)).astype(np.float32)
    clients = (weights + rng.standard_normal(size) * 10.0 ** rng.integers(-12, 4, size)).astype(np.float32)
    updates = decoded_round(weights, [clients])
    expected = (clients.astype(np.float64) - weights.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(updates.matrix[0].numpy(), expected)


def test_npy_payload_is_a_read_only_view_of_the_bytes():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    array = Array(values)
    view = npy_payload(array)
    assert not view.flags.writeable and view.base is not None
    np.testing.assert_array_equal(view, values)
    assert view.dtype == np.float32 and view.shape == (3, 4)


def test_npy_payload_of_a_fortran_ordered_array():
    values = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(npy_payload(Array(values)), values)


def test_norms_rows_and_reply_facts():
    rng = np.random.default_rng(1)
    global_arrays = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
    }
    clients = [
        {
            name: (value + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)
            for name, value in global_arrays.items()
        }
        for _ in range(3)
    ]
    messages = [reply(c, pid, num_examples=10 * (pid + 1), loss=0.1 * pid) for pid, c in enumerate(clients)]
    updates, screened = decode_round(messages, global_arrays, partition_of)
    assert updates.count == 3 and updates.size == 19
    assert updates.partition_ids == (0, 1, 2)
    assert updates.num_examples == (10.0, 20.0, 30.0)
    assert updates.losses == pytest.approx((0.0, 0.1, 0.2))
    for row, client in enumerate(clients):
        flat = np.concatenate([(client[n] - global_arrays[n]).ravel() for n in ("a", "b")])  # float32 subtraction
        np.testing.assert_array_equal(updates.matrix[row].numpy(), flat)
        expected_norm = math.sqrt(math.fsum(float(x) ** 2 for x in flat.astype(np.float64)))
        assert float(updates.norms[row]) == pytest.approx(expected_norm, rel=1e-14)
        assert screened[row].norm == float(updates.norms[row])
    assert torch.equal(updates.scale, torch.ones(3, dtype=torch.float64))


def test_integer_arrays_are_checked_but_not_part_of_the_update():
    global_arrays = {"w": np.ones(4, np.float32), "count": np.array([7], np.int64)}
    client = {"w": np.full(4, 1.5, np.float32), "count": np.array([9], np.int64)}
    updates, screened = decode_round([reply(client, 0)], global_arrays, partition_of)
    assert screened[0].status == "ok"
    assert updates.size == 4 and screened[0].norm == 1.0
    rebuilt = updates.layout.apply(torch.full((4,), 0.25, dtype=torch.float64))
    np.testing.assert_array_equal(rebuilt["w"].numpy(), np.full(4, 1.25, np.float32))
    np.testing.assert_array_equal(rebuilt["count"].numpy(), [7])  # the global model's, unchanged
    assert list(rebuilt.keys()) == ["w", "count"]


def test_layout_apply_adds_in_float64_and_rounds_once():
    base = np.array([1.0, 16777216.0, -3.5], np.float32)  # 2**24: float32 steps of 2 there
    layout = UpdateLayout({"w": base})
    result = layout.apply(torch.tensor([1e-9, 1.0 + 1e-9, 0.25], dtype=torch.float64))["w"].numpy()
    expected = (base.astype(np.float64) + np.array([1e-9, 1.0 + 1e-9, 0.25])).astype(np.float32)
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == np.float32


def test_blocks_cover_every_coordinate_with_row_factors():
    rng = np.random.default_rng(2)
    size = 2 * COORDINATE_BLOCK + 123
    updates = decoded_round(np.zeros(size), [rng.standard_normal(size) for _ in range(3)])
    factors = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    scaled = updates.rescaled(factors)
    pieces = [(start, stop, values.clone()) for start, stop, values in scaled.blocks([2, 0])]  # a reused buffer
    assert [(start, stop) for start, stop, _ in pieces] == [
        (0, COORDINATE_BLOCK),
        (COORDINATE_BLOCK, 2 * COORDINATE_BLOCK),
        (2 * COORDINATE_BLOCK, size),
    ]
    joined = torch.cat([values for _, _, values in pieces], dim=1).numpy()
    rows = as_numpy(updates.matrix)
    np.testing.assert_array_equal(joined, np.stack([rows[2] * 2.0, rows[0]]))
    assert float(scaled.scaled_norms()[1]) == 0.5 * float(updates.norms[1])
    assert updates.unscaled([0, 1, 2]) and not scaled.unscaled([0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_decoding_onto_a_gpu_gives_the_same_rows_and_norms():
    rng = np.random.default_rng(4)
    global_vector = rng.standard_normal(100_000).astype(np.float32)
    clients = [(global_vector + 1e-3 * rng.standard_normal(100_000)).astype(np.float32) for _ in range(4)]
    on_cpu = decoded_round(global_vector, clients)
    on_gpu = decoded_round(global_vector, clients, device="cuda")
    assert on_gpu.matrix.device.type == "cuda"
    np.testing.assert_array_equal(on_gpu.matrix.cpu().numpy(), on_cpu.matrix.numpy())
    np.testing.assert_array_equal(on_gpu.norms.cpu().numpy(), on_cpu.norms.numpy())
