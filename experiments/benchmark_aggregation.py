"""One aggregation round of every robust rule on synthetic ResNet-18 replies: fl_poison against Flower.

Usage::

    python -m experiments.benchmark_aggregation [--clients 20 100] [--rules fedavg krum ...]
        [--out FILE.json] [--markdown FILE.md] [--device cpu|cuda|auto] [--seed 0]

What is built
-------------
For each number of clients n: the float state of torchvision's ResNet-18 (seeded initialisation,
11.7 M float values with the BatchNorm running statistics) is the global model; every client's
weights are ``float32(w_global + u)`` with an honest update ``u ~ N(0, 1e-3)`` per coordinate,
except f = max(1, round(n / 10)) colluding attackers that share one large update
``A ~ N(0, 1e-2)`` and differ from each other by ``N(0, 1e-6)`` per coordinate. Every client is
one real Flower train reply (ArrayRecord per layer, MetricRecord with the keys the lab's clients
send, example counts 50 + partition id), built once per n and reused by every rule.

What is timed
-------------
``aggregate_train`` on the same replies, for each rule, in two consecutive rounds of one strategy
object (round 1: first use; round 2: the steady state every later round of a run costs):

- fl_poison: the strategy :func:`strategies.registry.build_strategy` builds for the rule (the
  timing includes decoding the replies, the screening, the forensics and the new model; in its
  first round the strategy also allocates and first touches the n × d float32 matrix it keeps
  for later rounds);
- Flower: ``flwr.serverapp.strategy`` FedAvg, Krum, MultiKrum (m = n − f), FedMedian,
  FedTrimmedAvg (beta 0.2), Bulyan, and for norm clipping
  ``DifferentialPrivacyServerSideFixedClipping`` with noise 0 around FedAvg; each round gets its
  own shallow copy of the replies (FedMedian, FedTrimmedAvg and Bulyan pop the arrays out of them;
  the clipping wrapper rewrites them); geomed, centered-clipping, dnc, rlr, nnm, bucketing, flame,
  fltrust and foolsgold have no Flower counterpart and are timed for fl_poison alone (with their
  defaults, f for dnc and nnm; FLTrust's server update is a fixed synthetic honest-like vector,
  :func:`synthetic_root_training`).

Each measurement follows an idle second (thread pools left spinning by the previous one would bill
it on a machine with few cores). Both use f for the Krum family and Bulyan, and the same fixed
clipping bound (the expected norm of an honest update, 1e-3·√d). Peak memory per rule is the
larger growth of the resident set over the two rounds: ``/proc/self/status`` VmHWM, reset through
``/proc/self/clear_refs`` before each round, minus VmRSS before it (if the reset is refused, the
growth of ``getrusage`` maxrss, which only sees new highs).

What is checked
---------------
After the timings, the squared distances both implementations rank updates by are compared with a
float64 difference reference (Σ_k (x_ik − x_jk)² on the exact float64 updates ``w_i − w_global``):
their largest relative error, the Spearman correlation of Krum scores (n − f − 2 neighbours) with
the reference's, and whether Krum's choice and Multi-Krum's set of n − f match the reference's.
For Flower the distances and selections are its own (``compute_distances``, ``select_multikrum``).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.serverapp.strategy.multikrum import compute_distances, select_multikrum
from flwr.supercore.task_identity import TaskIdentity
from torchvision.models import resnet18

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.results import write_json
from fl_poison.core.round_log import RoundLog
from fl_poison.core.round_updates import UpdateLayout, decode_round
from fl_poison.core.weights import float_state
from strategies.distances import pairwise_squared_distances
from strategies.registry import build_strategy
from strategies.sampling import PartitionSampler
from strategies.spec import ServerUpdate

DEFAULT_OUT = Path("experiments/results/benchmark_aggregation.json")
NODE_OFFSET = 100
HONEST_SCALE, ATTACK_SCALE, COLLUSION_SPREAD = 1e-3, 1e-2, 1e-6
TRIM_BETA = 0.2
TARGET_RATIO = 2.0
REFERENCE_BLOCK = 1 << 16


@dataclass(frozen=True)
class Rule:
    """A defense as both implementations run it.

    Attributes
    ----------
    name : str
        fl_poison's ``strategy`` value.
    settings : Callable[[int, int, float], dict[str, object]]
        fl_poison's settings for (n, f, clipping bound) besides ``strategy`` and ``num-clients``.
    flower : Callable[[int, int, float], Strategy] | None
        Flower's strategy for (n, f, clipping bound); None when Flower has none (fl_poison alone is timed).
    """

    name: str
    settings: Callable[[int, int, float], dict[str, object]]
    flower: Callable[[int, int, float], Strategy] | None


RULES = {
    rule.name: rule
    for rule in (
        Rule("fedavg", lambda n, f, c: {}, lambda n, f, c: FedAvg()),
        Rule("krum", lambda n, f, c: {"krum-f": f}, lambda n, f, c: Krum(num_malicious_nodes=f)),
        Rule(
            "multikrum",
            lambda n, f, c: {"krum-f": f, "krum-m": n - f},
            lambda n, f, c: MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n - f),
        ),
        Rule("median", lambda n, f, c: {}, lambda n, f, c: FedMedian()),
        Rule("trimmed-mean", lambda n, f, c: {"trim-beta": TRIM_BETA}, lambda n, f, c: FedTrimmedAvg(beta=TRIM_BETA)),
        Rule("bulyan", lambda n, f, c: {"krum-f": f}, lambda n, f, c: Bulyan(num_malicious_nodes=f)),
        Rule(
            "norm-clip",
            lambda n, f, c: {"clip-norm": c, "clip-wrap": "fedavg"},
            lambda n, f, c: DifferentialPrivacyServerSideFixedClipping(FedAvg(), 0.0, c, n),
        ),
        # Rules Flower has no strategy for: fl_poison alone, with its defaults and f where the rule uses it.
        Rule("geomed", lambda n, f, c: {}, None),
        Rule("centered-clipping", lambda n, f, c: {}, None),
        Rule("dnc", lambda n, f, c: {"krum-f": f}, None),
        Rule("rlr", lambda n, f, c: {}, None),
        Rule("nnm", lambda n, f, c: {"krum-f": f}, None),
        Rule("bucketing", lambda n, f, c: {}, None),
        Rule("flame", lambda n, f, c: {}, None),
        Rule("fltrust", lambda n, f, c: {}, None),
        Rule("foolsgold", lambda n, f, c: {}, None),
    )
}


class BenchmarkGrid(Grid):
    """Only what ``configure_train`` needs: the node ids of the n clients."""

    def __init__(self, node_ids: Sequence[int]) -> None:
        self.node_ids = list(node_ids)

    def set_run(self, run) -> None:  # noqa: ANN001 - Flower's Run type
        """Unused."""

    @property
    def run(self):  # noqa: ANN201
        """Unused."""
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        """Unused."""
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        """The clients' node ids."""
        return list(self.node_ids)

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        """Unused."""
        raise NotImplementedError

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        """Unused."""
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        """Unused."""
        raise NotImplementedError


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values


def reset_peak() -> bool:
    """Reset VmHWM to the current resident set; False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """The growth of the resident set while a block runs, in MiB (see the module docstring)."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.resettable = reset_peak()
        self.before = (
            memory_status()["VmRSS"] if self.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        )
        self.mib = math.nan
        return self

    def __exit__(self, *exc: object) -> None:
        after = memory_status()["VmHWM"] if self.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mib = max(0, after - self.before) / 1024


def metadata_from(node_id: int) -> Metadata:
    """The metadata of a train reply sent by ``node_id``."""
    return Metadata(
        run_id=1,
        message_id="",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=600.0,
        message_type="train",
    )


def build_round(num_clients: int, attackers: int, seed: int) -> tuple[dict[str, np.ndarray], list[Message]]:
    """The global ResNet-18 float state and one train reply per client (see the module docstring).

    Parameters
    ----------
    num_clients : int
        n.
    attackers : int
        f, the colluders (the last f partition ids).
    seed : int
        Seeds the model initialisation and the updates.
    """
    torch.manual_seed(seed)
    global_arrays = {name: tensor.numpy() for name, tensor in float_state(resnet18()).items()}
    size = sum(array.size for array in global_arrays.values())
    rng = np.random.default_rng(seed)
    shared_attack = rng.standard_normal(size, dtype=np.float32) * np.float32(ATTACK_SCALE)
    replies = []
    for partition_id in range(num_clients):
        if partition_id >= num_clients - attackers:
            update = shared_attack + rng.standard_normal(size, dtype=np.float32) * np.float32(COLLUSION_SPREAD)
        else:
            update = rng.standard_normal(size, dtype=np.float32) * np.float32(HONEST_SCALE)
        arrays, offset = {}, 0
        for name, base in global_arrays.items():
            part = update[offset : offset + base.size].reshape(base.shape)
            arrays[name] = Array(np.asarray(base + part, dtype=np.float32))
            offset += base.size
        attacked = int(partition_id >= num_clients - attackers)
        metrics = MetricRecord(
            {
                "train_loss": 0.5,
                "num-examples": 50 + partition_id,
                "partition_id": partition_id,
                "malicious": attacked,
                "attacked": attacked,
                "attack_target": -1,
            }
        )
        content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics})
        # the constructor Flower's runtime uses for replies it receives (not in its typed overloads)
        replies.append(Message(content, metadata=metadata_from(NODE_OFFSET + partition_id)))  # type: ignore[call-overload]
        del update
    return global_arrays, replies


def shallow_copy(message: Message) -> Message:
    """A reply with its own ArrayRecord (sharing the Array payloads), for a strategy that pops or rewrites it."""
    record = next(iter(message.content.array_records.values()))
    metrics = next(iter(message.content.metric_records.values()))
    content = RecordDict({"arrays": ArrayRecord(dict(record.items())), "metrics": metrics})
    return Message(content, metadata=message.metadata)  # type: ignore[call-overload]


def global_record(global_arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """The global model as an ArrayRecord."""
    return ArrayRecord({name: Array(np.asarray(array)) for name, array in global_arrays.items()})


@dataclass(frozen=True)
class Timing:
    """Two consecutive rounds of one implementation of one rule.

    Attributes
    ----------
    cold_seconds, seconds : float
        ``aggregate_train`` of round 1 (first use: fl_poison allocates and first touches its
        update matrix) and of round 2 (steady state, what every later round costs).
    cold_peak_mib, peak_mib : float
        Growth of the resident set in each of the two rounds.
    accepted : tuple[int, ...]
        The partitions accepted or clipped in round 2 (fl_poison only).
    """

    cold_seconds: float
    seconds: float
    cold_peak_mib: float
    peak_mib: float
    accepted: tuple[int, ...] = ()


def timed_rounds(
    strategy: Strategy, replies: Callable[[], list[Message]], global_arrays: dict[str, np.ndarray]
) -> list[tuple[float, float]]:
    """Seconds and peak MiB of ``aggregate_train`` in rounds 1 and 2, each after ``configure_train`` and an idle second.

    The idle second lets thread pools left spinning by the previous measurement (numpy's BLAS,
    torch's OpenMP) go to sleep, so that they do not bill the next one on a machine with few cores.
    """
    grid = BenchmarkGrid([NODE_OFFSET + pid for pid in range(len(replies()))])
    results = []
    for server_round in (1, 2):
        list(strategy.configure_train(server_round, global_record(global_arrays), ConfigRecord(), grid))
        round_replies = replies()
        gc.collect()
        time.sleep(1.0)
        with PeakMemory() as memory:
            started = time.perf_counter()
            arrays, _ = strategy.aggregate_train(server_round, round_replies)
            seconds = time.perf_counter() - started
        if arrays is None:
            raise RuntimeError(f"{type(strategy).__name__} aggregated nothing")
        del arrays, round_replies
        results.append((seconds, memory.mib))
    return results


def synthetic_root_training(size: int) -> ServerUpdate:
    """FLTrust's server update here: one honest-like N(0, 1e-3) vector, drawn on the first call and returned every round.

    The server's training on its root set is not part of ``aggregate_train``'s cost measured here
    (it runs the clients' local training on ``size`` rows: time it like a client's).

    Parameters
    ----------
    size : int
        The root set's rows (unused: nothing is trained).
    """
    drawn: list[torch.Tensor] = []

    def server_update(layout: UpdateLayout, server_round: int) -> torch.Tensor:
        if not drawn:
            generator = torch.Generator().manual_seed(size)
            drawn.append(torch.randn(layout.size, dtype=torch.float64, generator=generator).mul_(HONEST_SCALE))
        return drawn[0]

    return server_update


def time_fl_poison(
    rule: Rule, replies: list[Message], global_arrays: dict[str, np.ndarray], f: int, bound: float, device: str
) -> Timing:
    """fl_poison's strategy for ``rule`` over two rounds of ``replies``."""
    n = len(replies)
    config = experiment_config(
        {"strategy": rule.name, "num-clients": n, "device": device, **rule.settings(n, f, bound)}
    )
    sampler = PartitionSampler({pid: NODE_OFFSET + pid for pid in range(n)}, per_round=n, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = build_strategy(config, sampler, log, root_training=synthetic_root_training)
    (cold, cold_peak), (steady, peak) = timed_rounds(strategy, lambda: replies, global_arrays)
    accepted = tuple(row.partition_id for row in log.for_round(2) if row.decision in ("accepted", "clipped"))
    return Timing(cold, steady, cold_peak, peak, accepted)


def time_flower(
    rule: Rule, replies: list[Message], global_arrays: dict[str, np.ndarray], f: int, bound: float
) -> Timing:
    """Flower's strategy for ``rule`` over two rounds, each on its own shallow copy of ``replies``."""
    if rule.flower is None:
        raise ValueError(f"Flower has no strategy for {rule.name}")
    strategy = rule.flower(len(replies), f, bound)
    (cold, cold_peak), (steady, peak) = timed_rounds(
        strategy, lambda: [shallow_copy(message) for message in replies], global_arrays
    )
    return Timing(cold, steady, cold_peak, peak)


def reference_distances(replies: list[Message], global_arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Σ_k (x_ik − x_jk)² in float64 from the exact updates x_i = w_i − w_global, blockwise, pair by pair."""
    names = list(global_arrays)
    flat_global = np.concatenate([global_arrays[name].ravel() for name in names])
    n = len(replies)
    weights = np.empty((n, flat_global.size), dtype=np.float32)
    for row, message in enumerate(replies):
        record = next(iter(message.content.array_records.values()))
        weights[row] = np.concatenate([record[name].numpy().ravel() for name in names])
    distances = np.zeros((n, n))
    for start in range(0, flat_global.size, REFERENCE_BLOCK):
        stop = start + REFERENCE_BLOCK
        block = weights[:, start:stop].astype(np.float64) - flat_global[start:stop].astype(np.float64)
        for i in range(n - 1):
            differences = block[i + 1 :] - block[i]
            distances[i, i + 1 :] += np.einsum("ij,ij->i", differences, differences)
    return distances + distances.T


def krum_scores(distances: np.ndarray, f: int) -> np.ndarray:
    """Sum of each row's n − f − 2 smallest distances to the others."""
    n = len(distances)
    others = distances + np.diag(np.full(n, np.inf))
    return np.sort(others, axis=1)[:, : max(1, n - f - 2)].sum(axis=1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected)."""
    rank_a, rank_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def relative_error(distances: np.ndarray, reference: np.ndarray) -> float:
    """Largest |d − ref| / ref over the pairs."""
    mask = ~np.eye(len(reference), dtype=bool)
    return float(np.max(np.abs(distances[mask] - reference[mask]) / reference[mask]))


def ranking_agreement(
    replies: list[Message], global_arrays: dict[str, np.ndarray], f: int, device: str
) -> dict[str, object]:
    """How well each implementation's distances, Krum scores and selections agree with the float64 reference."""
    n = len(replies)
    keep = n - f
    reference = reference_distances(replies, global_arrays)
    reference_scores = krum_scores(reference, f)
    reference_order = np.argsort(reference_scores, kind="stable")
    reference_krum, reference_set = int(reference_order[0]), sorted(int(i) for i in reference_order[:keep])
    resolved = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"

    updates, _ = decode_round(replies, global_arrays, lambda m: m.metadata.src_node_id - NODE_OFFSET, resolved)
    ours = pairwise_squared_distances(updates).numpy()
    del updates
    gc.collect()
    our_scores = krum_scores(ours, f)
    our_order = np.argsort(our_scores, kind="stable")

    records = [next(iter(m.content.array_records.values())) for m in replies]
    theirs = compute_distances(records)
    gc.collect()
    contents = [m.content for m in replies]
    flower_order = [contents.index(c) for c in select_multikrum(contents, f, keep)]  # best score first
    gc.collect()
    return {
        "reference": {"krum_choice": reference_krum, "multikrum_set": reference_set},
        "fl_poison": {
            "max_relative_distance_error": relative_error(ours, reference),
            "krum_scores_spearman": spearman(our_scores, reference_scores),
            "krum_choice_matches": int(our_order[0]) == reference_krum,
            "multikrum_set_matches": sorted(int(i) for i in our_order[:keep]) == reference_set,
        },
        "flower": {
            "max_relative_distance_error": relative_error(np.asarray(theirs, dtype=np.float64), reference),
            "krum_scores_spearman": spearman(krum_scores(np.asarray(theirs, dtype=np.float64), f), reference_scores),
            "krum_choice_matches": flower_order[0] == reference_krum,
            "multikrum_set_matches": sorted(flower_order) == reference_set,
        },
    }


def benchmark(clients: Sequence[int], rules: Sequence[str], device: str, seed: int) -> dict[str, object]:
    """Every rule at every n (see the module docstring); the report as a JSON-ready mapping."""
    # Flower stamps instruction messages (configure_train) with the running task's identity, which
    # its runtime sets; outside it, set it as the project's tests do.
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 1
    rows, agreement = [], []
    for n in clients:
        f = max(1, round(n / 10))
        global_arrays, replies = build_round(n, f, seed)
        size = sum(array.size for array in global_arrays.values())
        bound = HONEST_SCALE * math.sqrt(size)
        print(f"[benchmark] n={n} f={f} d={size} clipping bound={bound:.3f}", flush=True)
        for name in rules:
            rule = RULES[name]
            ours = time_fl_poison(rule, replies, global_arrays, f, bound, device)
            theirs = None if rule.flower is None else time_flower(rule, replies, global_arrays, f, bound)
            row = {
                "clients": n,
                "attackers": f,
                "rule": name,
                "fl_poison_seconds": round(ours.seconds, 3),
                "flower_seconds": None if theirs is None else round(theirs.seconds, 3),
                "ratio": None if theirs is None else round(ours.seconds / theirs.seconds, 3),
                "fl_poison_first_round_seconds": round(ours.cold_seconds, 3),
                "flower_first_round_seconds": None if theirs is None else round(theirs.cold_seconds, 3),
                "first_round_ratio": None if theirs is None else round(ours.cold_seconds / theirs.cold_seconds, 3),
                "fl_poison_peak_mib": round(max(ours.cold_peak_mib, ours.peak_mib)),
                "flower_peak_mib": None if theirs is None else round(max(theirs.cold_peak_mib, theirs.peak_mib)),
                "fl_poison_accepted_attackers": sum(1 for pid in ours.accepted if pid >= n - f),
                "target_met": None if theirs is None else ours.seconds <= TARGET_RATIO * theirs.seconds,
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(
                f"[benchmark] n={n} {name:<17} fl_poison {ours.seconds:7.2f}s (first {ours.cold_seconds:6.2f}s)"
                f"  flower {shown(row['flower_seconds'], '7.2f')}s (first {shown(row['flower_first_round_seconds'], '6.2f')}s)"
                f"  ratio {shown(row['ratio'], '5.2f')}  peak MiB {row['fl_poison_peak_mib']} / {shown(row['flower_peak_mib'], 'd')}",
                flush=True,
            )
            del ours, theirs
            gc.collect()
        agreement.append({"clients": n, "attackers": f, **ranking_agreement(replies, global_arrays, f, device)})
        print(f"[benchmark] n={n} agreement {agreement[-1]}", flush=True)
        del replies
        gc.collect()
    return {
        "what": "one aggregate_train round per rule on synthetic ResNet-18 replies; see experiments/benchmark_aggregation.py",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "setup": {
            "model": "torchvision resnet18 float state (seeded init)",
            "honest_update_std": HONEST_SCALE,
            "colluder_shared_update_std": ATTACK_SCALE,
            "colluder_spread_std": COLLUSION_SPREAD,
            "attackers": "max(1, round(n / 10)), the last partition ids",
            "trim_beta": TRIM_BETA,
            "clipping_bound": "1e-3 * sqrt(d), fixed, the same for both",
            "fl_poison_device": device,
            "seed": seed,
        },
        "memory_method": (
            "growth of the resident set while aggregate_train runs: /proc/self/status VmHWM after "
            "(reset through /proc/self/clear_refs before) minus VmRSS before, MiB"
        ),
        "target": f"fl_poison seconds <= {TARGET_RATIO:g} x Flower seconds (steady-state round)",
        "results": rows,
        "ranking_agreement": agreement,
    }


def shown(value: object, spec: str) -> str:
    """``value`` formatted with ``spec``, or a dash for a rule Flower has no strategy for (None)."""
    return "–" if value is None else format(value, spec)


def markdown(report: dict[str, object]) -> str:
    """The report as a short markdown table."""
    lines = [
        "# Aggregation benchmark: fl_poison against Flower",
        "",
        "`aggregate_train` per rule on synthetic ResNet-18 replies (11.7 M float values; honest updates",
        "N(0, 1e-3), f = n/10 colluders sharing one N(0, 1e-2) update): the steady-state round (the second",
        "of one strategy object) and the first, in which fl_poison also allocates and first touches the",
        "n × d float32 matrix its strategy keeps for later rounds. Written by",
        "`python -m experiments.benchmark_aggregation`; setup and method in its docstring.",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} torch threads, "  # type: ignore[index]
        f"GPU: {report['machine']['cuda'] or 'none'}.",  # type: ignore[index]
        "",
        "| n | rule | fl_poison s | Flower s | ratio | first round: fl_poison s | Flower s | ratio "
        "| peak MiB fl_poison | peak MiB Flower | ratio ≤ 2 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {row['clients']} | {row['rule']} | {row['fl_poison_seconds']:.2f} | {shown(row['flower_seconds'], '.2f')} | "
            f"{shown(row['ratio'], '.2f')} | {row['fl_poison_first_round_seconds']:.2f} | "
            f"{shown(row['flower_first_round_seconds'], '.2f')} | {shown(row['first_round_ratio'], '.2f')} | "
            f"{row['fl_poison_peak_mib']} | {shown(row['flower_peak_mib'], 'd')} | "
            f"{'–' if row['target_met'] is None else 'yes' if row['target_met'] else 'no'} | {row['load_average_1min']:.1f} |"
        )
    lines += [
        "",
        f"Peak memory: {report['memory_method']}. Load: the 1-minute load average after the rule's"
        " measurements (2 cores; other processes on the machine slow both implementations).",
        "",
        "Agreement with the float64 difference reference (Krum scores with n − f − 2 neighbours; Multi-Krum keeps n − f):",
        "",
        "| n | implementation | max relative distance error | Spearman of Krum scores | Krum choice | Multi-Krum set |",
        "|---|---|---|---|---|---|",
    ]
    for entry in report["ranking_agreement"]:  # type: ignore[attr-defined]
        for who in ("fl_poison", "flower"):
            values = entry[who]
            lines.append(
                f"| {entry['clients']} | {who} | {values['max_relative_distance_error']:.2e} | "
                f"{values['krum_scores_spearman']:.4f} | {'same' if values['krum_choice_matches'] else 'differs'} | "
                f"{'same' if values['multikrum_set_matches'] else 'differs'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the benchmark, print the table, write the JSON report and its markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 100], help="numbers of clients (default 20 100)")
    parser.add_argument(
        "--rules", nargs="+", default=list(RULES), choices=list(RULES), help="rules to time (default: all)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="fl_poison's device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the updates (default 0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--markdown", type=Path, default=None, help="markdown table (default: next to --out, .md)")
    arguments = parser.parse_args(argv)
    if any(n < 7 for n in arguments.clients):
        print("benchmark: error: --clients: bad value; allowed: numbers >= 7 (Bulyan needs 4f + 3)", file=sys.stderr)
        return 2
    report = benchmark(arguments.clients, arguments.rules, arguments.device, arguments.seed)
    table = markdown(report)
    print(table)
    write_json(arguments.out, report)
    markdown_path = arguments.markdown or arguments.out.with_suffix(".md")
    markdown_path.write_text(table)
    print(f"report -> {arguments.out}, {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
