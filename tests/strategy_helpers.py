"""Small helpers for strategy unit tests: real Flower reply Messages, a fake Grid, a strategy around a
defense, decoded rounds, and numpy references.

The references are independent of the code under test: plain loops over ``np.linalg.norm`` and
numpy reductions, on the float64 values of the updates the server sees.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fl_poison.core.round_log import RoundLog
from fl_poison.core.round_updates import RoundUpdates, UpdateLayout, decode_round
from strategies.lab import LabStrategy
from strategies.sampling import PartitionSampler
from strategies.spec import ServerUpdate

BASE_METRICS = {
    "train_loss": 0.5,
    "num-examples": 10,
    "partition_id": 0,
    "malicious": 0,
    "attacked": 0,
    "attack_target": -1,
}
NODE_OFFSET = 100  # node id of partition p is NODE_OFFSET + p


def node_map(num_partitions: int) -> dict[int, int]:
    """Partition id -> Flower node id."""
    return {pid: NODE_OFFSET + pid for pid in range(num_partitions)}


def metadata_from(node_id: int) -> Metadata:
    return Metadata(
        run_id=1,
        message_id="",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type="train",
    )


def reply(
    arrays: dict[str, np.ndarray], partition_id: int, num_examples: float = 10, loss: float = 0.5, attacked: int = 0
) -> Message:
    """A well-formed train reply of partition ``partition_id``."""
    metrics = {
        **BASE_METRICS,
        "num-examples": num_examples,
        "train_loss": loss,
        "partition_id": partition_id,
        "malicious": attacked,
        "attacked": attacked,
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


def root_training(size: int) -> ServerUpdate:
    """A stand-in for the ServerApp's root training (the ``root_training`` every strategy is built with here).

    The server's "update" is a fixed direction (seeded by ``size``) of norm 1e-3, below the norm of
    every update these tests build, so that FLTrust's rescaling to it only shortens updates, as the
    contracts' norm checks expect of every rule (FLTrust's own tests use their own server updates).
    """

    def server_update(layout: UpdateLayout, server_round: int) -> torch.Tensor:
        direction = np.random.default_rng(size).standard_normal(layout.size)
        return torch.from_numpy(1e-3 * direction / np.linalg.norm(direction))

    return server_update


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
    """The update the server sees, as float64: client minus global weights, rounded once to float32.

    (The exact difference of two float32 values rounded to float32 is what IEEE float32
    subtraction gives; ``float64`` subtraction is exact here, then rounded.)
    """
    exact = flatten(weights, global_arrays) - flatten(global_arrays, global_arrays)
    return exact.astype(np.float32).astype(np.float64)


def lab_strategy(defense, num_partitions: int, device: str = "cpu") -> tuple[LabStrategy, RoundLog]:
    """A LabStrategy around ``defense`` for partitions 0..num_partitions-1, all drawn every round."""
    sampler = PartitionSampler(node_map(num_partitions), per_round=num_partitions, seed=0)
    log = RoundLog(sampler.partition_of_node)
    return LabStrategy(sampler=sampler, round_log=log, defense=defense, device=device), log


def decoded_round(
    global_vector: np.ndarray,
    client_vectors,
    num_examples=None,
    losses=None,
    device: str = "cpu",
) -> RoundUpdates:
    """The RoundUpdates of float32 clients ``client_vectors`` (flat, one model array "w") around ``global_vector``."""
    global_arrays = {"w": np.asarray(global_vector, dtype=np.float32)}
    messages = [
        reply(
            {"w": np.asarray(vector, dtype=np.float32)},
            pid,
            10 if num_examples is None else num_examples[pid],
            0.5 if losses is None else losses[pid],
        )
        for pid, vector in enumerate(client_vectors)
    ]
    updates, screened = decode_round(messages, global_arrays, lambda m: m.metadata.src_node_id - NODE_OFFSET, device)
    assert [r.status for r in screened] == ["ok"] * len(messages)
    return updates


def reference_squared_distances(rows: np.ndarray) -> np.ndarray:
    """Sum over coordinates of (x_i - x_j)^2 in float64, pair by pair."""
    rows = np.asarray(rows, dtype=np.float64)
    out = np.zeros((len(rows), len(rows)))
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            difference = rows[i] - rows[j]
            out[i, j] = out[j, i] = float(np.dot(difference, difference))
    return out


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values as a float64 numpy array on the CPU."""
    return tensor.detach().to("cpu", torch.float64).numpy()


def weighted_mean(weight_sets: list[dict[str, np.ndarray]], counts: list[float]) -> dict[str, np.ndarray]:
    """Example-weighted mean of weight dictionaries, in float64."""
    total = float(sum(counts))
    names = weight_sets[0].keys()
    return {
        name: sum(
            np.asarray(ws[name], dtype=np.float64) * (c / total) for ws, c in zip(weight_sets, counts, strict=True)
        )
        for name in names
    }


def reference_krum_scores(updates: np.ndarray, f: int) -> list[float]:
    """Sum of squared distances to the n - f - 2 nearest others (at least 1), by plain loops over np.linalg.norm."""
    n = len(updates)
    k = min(max(1, n - f - 2), n - 1)
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


def reference_krum_repeated(updates: np.ndarray, f: int, count: int) -> list[int]:
    """Bulyan's paper selection: Krum applied ``count`` times, each time to the rows not chosen yet (chosen order)."""
    remaining = list(range(len(updates)))
    chosen = []
    while len(chosen) < count:
        scores = reference_krum_scores(updates[remaining], f)
        best = remaining[min(range(len(remaining)), key=lambda i: (scores[i], i))]
        chosen.append(best)
        remaining.remove(best)
    return chosen


def assert_arrays_close(result: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 2e-6) -> None:
    assert set(result) == set(expected)
    for name in expected:
        np.testing.assert_allclose(
            np.asarray(result[name], dtype=np.float64), expected[name], rtol=0, atol=atol, err_msg=name
        )
