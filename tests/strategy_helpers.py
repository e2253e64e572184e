"""Small helpers for strategy unit tests: real Flower reply Messages, a fake Grid, and numpy references.

Adapted from tests/test_reply_checks.py. Everything here is independent of the code under test:
references are written with plain loops over ``np.linalg.norm`` and numpy reductions.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import Grid

BASE_METRICS = {"train_loss": 0.5, "num-examples": 10, "partition_id": 0, "malicious": 0, "attacked": 0, "attack_target": -1}
NODE_OFFSET = 100  # node id of partition p is NODE_OFFSET + p


def node_map(num_partitions: int) -> dict[int, int]:
    """Partition id -> Flower node id."""
    return {pid: NODE_OFFSET + pid for pid in range(num_partitions)}


def metadata_from(node_id: int) -> Metadata:
    return Metadata(
        run_id=1, message_id="", src_node_id=node_id, dst_node_id=0, reply_to_message_id="",
        group_id="1", created_at=0.0, ttl=60.0, message_type="train",
    )


def reply(arrays: dict[str, np.ndarray], partition_id: int, num_examples: float = 10, loss: float = 0.5, attacked: int = 0) -> Message:
    """A well-formed train reply of partition ``partition_id``."""
    metrics = {
        **BASE_METRICS, "num-examples": num_examples, "train_loss": loss, "partition_id": partition_id,
        "malicious": attacked, "attacked": attacked,
    }
    records = {
        "arrays": ArrayRecord({name: Array(np.array(value, copy=True)) for name, value in arrays.items()}),
        "metrics": MetricRecord(metrics),
    }
    return Message(RecordDict(records), metadata=metadata_from(NODE_OFFSET + partition_id))


class FakeGrid(Grid):
    """Only what a strategy's ``configure_train`` needs: the connected node ids."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise AssertionError("not used")

    def get_node_ids(self):
        return list(self.node_ids)

    def push_messages(self, messages):
        raise AssertionError("not used")

    def pull_messages(self, message_ids):
        raise AssertionError("not used")

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("not used")


def start_round(strategy, global_arrays: dict[str, np.ndarray], num_partitions: int, server_round: int = 1) -> None:
    """Run ``configure_train`` on a fake grid holding every partition's node; check all were instructed."""
    arrays = ArrayRecord({name: Array(np.array(value, copy=True)) for name, value in global_arrays.items()})
    grid = FakeGrid(node_map(num_partitions).values())
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), grid))
    assert sorted(m.metadata.dst_node_id for m in messages) == sorted(node_map(num_partitions).values())


def make_global(seed: int = 0) -> dict[str, np.ndarray]:
    """A small float32 'model': two arrays, 15 parameters."""
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }


def flatten(arrays: dict[str, np.ndarray], names) -> np.ndarray:
    return np.concatenate([np.asarray(arrays[name], dtype=np.float64).ravel() for name in names])


def unflatten(vector: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for name, value in like.items():
        out[name] = np.asarray(vector[offset : offset + value.size]).reshape(value.shape)
        offset += value.size
    return out


def client_weights(global_arrays: dict[str, np.ndarray], update: np.ndarray) -> dict[str, np.ndarray]:
    """float32 weights ``global + update`` (``update`` flat, in the global's name order)."""
    base = flatten(global_arrays, global_arrays)
    return {name: value.astype(np.float32) for name, value in unflatten(base + update, global_arrays).items()}


def true_update(weights: dict[str, np.ndarray], global_arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The float64 update the server sees: client float32 weights minus global float32 weights."""
    return flatten(weights, global_arrays) - flatten(global_arrays, global_arrays)


def weighted_mean(weight_sets: list[dict[str, np.ndarray]], counts: list[float]) -> dict[str, np.ndarray]:
    """Example-weighted mean of weight dictionaries, in float64."""
    total = float(sum(counts))
    names = weight_sets[0].keys()
    return {
        name: sum(np.asarray(ws[name], dtype=np.float64) * (c / total) for ws, c in zip(weight_sets, counts))
        for name in names
    }


def reference_krum_scores(updates: np.ndarray, f: int) -> list[float]:
    """Sum of squared distances to the n - f - 2 nearest others, by plain loops over np.linalg.norm."""
    n = len(updates)
    k = max(1, n - f - 2)
    scores = []
    for i in range(n):
        dists = sorted(float(np.linalg.norm(updates[i] - updates[j])) ** 2 for j in range(n) if j != i)
        scores.append(sum(dists[:k]))
    return scores


def reference_multikrum(updates: np.ndarray, f: int, m: int) -> list[int]:
    """Indices of the m lowest reference Krum scores (ties -> lower index), sorted."""
    scores = reference_krum_scores(updates, f)
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:m])


def assert_arrays_close(result: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 2e-6) -> None:
    assert set(result) == set(expected)
    for name in expected:
        np.testing.assert_allclose(np.asarray(result[name], dtype=np.float64), expected[name], rtol=0, atol=atol, err_msg=name)
