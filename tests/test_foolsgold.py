"""FoolsGold (Fung et al., RAID 2020, Algorithm 1) against a hand transcription of the algorithm, loop by
loop, over constructed rounds: sybils repeating one update across rounds get weight ~0, honest
clients with diverse updates high weights; histories persist for clients not drawn in a round."""

from __future__ import annotations

import math

import numpy as np
import pytest
from strategy_helpers import NODE_OFFSET, as_numpy, decoded_round, reply

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.round_updates import decode_round
from fl_poison.core.settings import ConfigError
from strategies.foolsgold import FoolsGold
from strategies.registry import build_defense

D = 60


def reference_weights(histories: dict[int, np.ndarray], clients: list[int], kappa: float) -> list[float]:
    """Algorithm 1, transcribed with loops: cosine of histories, pardoning, 1 − max, normalise, logit, clip.

    v_i is the largest cosine of client i with another client, at least 0 (the reference
    implementation subtracts the identity from the similarity matrix, so its row maxima include 0).
    """
    ids = sorted(histories)
    cs = {}
    for i in ids:
        for j in ids:
            if i == j:
                cs[i, j] = 0.0
            else:
                a, b = histories[i], histories[j]
                cs[i, j] = float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))
    v = {i: max(cs[i, j] for j in ids) for i in ids}
    for i in ids:
        for j in ids:
            if i != j and v[j] > v[i]:
                cs[i, j] = cs[i, j] * v[i] / v[j]
    alpha = {i: min(1.0, max(0.0, 1.0 - max(cs[i, j] for j in ids))) for i in ids}
    top = max(alpha[i] for i in clients)
    weights = []
    for i in clients:
        a = alpha[i] / top
        if a == 0:
            weights.append(0.0)
        elif a == 1:
            weights.append(1.0)
        else:
            weights.append(min(1.0, max(0.0, kappa * (math.log(a / (1 - a)) + 0.5))))
    return weights


def sybil_rounds(rounds: int = 4, honest: int = 5, sybils: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Per round, rows of ``honest`` clients with diverse random updates then ``sybils`` sending one update each round."""
    rng = np.random.default_rng(seed)
    objective = rng.standard_normal(D)
    out = []
    for _ in range(rounds):
        rows = [rng.standard_normal(D) for _ in range(honest)]
        rows += [objective + 1e-3 * rng.standard_normal(D) for _ in range(sybils)]
        out.append(np.array(rows))
    return out


def test_sybils_get_weight_zero_and_the_weights_follow_algorithm_1():
    defense = FoolsGold(confidence=1.0, features="all", capacity=8)
    histories: dict[int, np.ndarray] = {}
    for rows in sybil_rounds():
        updates = decoded_round(np.zeros(D), rows)
        seen = as_numpy(updates.matrix)
        for pid, row in zip(updates.partition_ids, seen, strict=True):
            histories[pid] = histories.get(pid, 0.0) + row
        outcome = defense.aggregate(updates)
        expected = reference_weights(histories, list(updates.partition_ids), 1.0)
        total = sum(expected)
        assert [d.weight for d in outcome.decisions] == pytest.approx([w / total for w in expected], abs=1e-12)
        aggregate = sum(w * row for w, row in zip(expected, seen, strict=True)) / total
        np.testing.assert_allclose(as_numpy(outcome.update), aggregate, rtol=1e-12, atol=1e-15)
    weights = [d.weight for d in outcome.decisions]
    assert weights[5:] == [0.0, 0.0, 0.0] and [d.decision for d in outcome.decisions][5:] == ["rejected"] * 3
    assert min(weights[:5]) > 0.15 and {d.decision for d in outcome.decisions[:5]} == {"accepted"}


def test_clients_not_drawn_keep_their_history_and_still_count():
    defense = FoolsGold(confidence=1.0, features="all", capacity=8)
    first, second = sybil_rounds(rounds=2)
    defense.aggregate(decoded_round(np.zeros(D), first))
    # Round 2: honest clients 0-4 and one sybil (7); sybils 5 and 6 are not drawn.
    drawn = [0, 1, 2, 3, 4, 7]
    messages = [reply({"w": second[pid].astype(np.float32)}, pid) for pid in drawn]
    updates, _ = decode_round(messages, {"w": np.zeros(D, np.float32)}, lambda m: m.metadata.src_node_id - NODE_OFFSET)

    outcome = defense.aggregate(updates)

    histories = {pid: first[pid].astype(np.float32).astype(np.float64) for pid in range(8)}
    for pid, row in zip(drawn, as_numpy(updates.matrix), strict=True):
        histories[pid] = histories[pid] + row
    expected = reference_weights(histories, drawn, 1.0)
    assert [d.weight for d in outcome.decisions] == pytest.approx([w / sum(expected) for w in expected], abs=1e-12)
    assert outcome.decisions[-1].decision == "rejected"  # recognised by its absent partners' histories


def test_the_confidence_sharpens_or_flattens_the_logit():
    rows = sybil_rounds(rounds=1, honest=6, sybils=0, seed=5)[0]
    for kappa in (0.3, 1.0, 2.0):
        defense = FoolsGold(confidence=kappa, features="all", capacity=6)
        updates = decoded_round(np.zeros(D), rows)
        outcome = defense.aggregate(updates)
        histories = dict(enumerate(as_numpy(updates.matrix)))
        expected = reference_weights(histories, list(range(6)), kappa)
        assert [d.weight for d in outcome.decisions] == pytest.approx([w / sum(expected) for w in expected], abs=1e-12)


def test_identical_clients_leave_the_global_model_as_it_was():
    rows = np.tile(np.arange(1.0, D + 1.0), (4, 1))
    outcome = FoolsGold(1.0, "all", 4).aggregate(decoded_round(np.zeros(D), rows))
    assert outcome.update is None and {d.decision for d in outcome.decisions} == {"rejected"}


def test_output_layer_features_compare_only_the_last_weight_matrix():
    rng = np.random.default_rng(2)
    global_arrays = {
        "conv": np.zeros((3, 4), np.float32),
        "head": np.zeros((2, 5), np.float32),
        "head_bias": np.zeros(2, np.float32),
    }
    shared_head = rng.standard_normal((2, 5))
    messages = []
    for pid in range(5):
        head = shared_head if pid >= 3 else rng.standard_normal((2, 5))  # 3 and 4 agree on the output layer
        arrays = {"conv": rng.standard_normal((3, 4)), "head": head, "head_bias": rng.standard_normal(2)}
        messages.append(reply({k: v.astype(np.float32) for k, v in arrays.items()}, pid))
    updates, _ = decode_round(messages, global_arrays, lambda m: m.metadata.src_node_id - NODE_OFFSET)

    on_head = FoolsGold(1.0, "output-layer", 5).aggregate(updates)
    on_all = FoolsGold(1.0, "all", 5).aggregate(updates)

    assert [d.decision for d in on_head.decisions][3:] == ["rejected", "rejected"]
    assert {d.decision for d in on_all.decisions} == {"accepted"}
    heads = as_numpy(updates.matrix)[:, 12:22]
    expected = reference_weights(dict(enumerate(heads)), list(range(5)), 1.0)
    assert [d.weight for d in on_head.decisions] == pytest.approx([w / sum(expected) for w in expected], abs=1e-12)


def test_more_clients_than_the_capacity_grow_the_history():
    defense = FoolsGold(1.0, "all", capacity=2)
    rows = sybil_rounds(rounds=1, honest=5, sybils=2)[0]
    outcome = defense.aggregate(decoded_round(np.zeros(D), rows))
    assert len(outcome.decisions) == 7 and defense.history is not None and len(defense.history) >= 7


def test_settings_and_the_builder():
    defense = build_defense(
        experiment_config(
            {
                "strategy": "foolsgold",
                "foolsgold-confidence": 0.5,
                "foolsgold-features": "output-layer",
                "num-clients": 12,
            }
        )
    )
    assert isinstance(defense, FoolsGold)
    assert (defense.confidence, defense.features, defense.capacity) == (0.5, "output-layer", 12)
    with pytest.raises(ConfigError, match=r"^foolsgold-confidence: bad value 0; allowed: a number > 0$"):
        experiment_config({"strategy": "foolsgold", "foolsgold-confidence": 0})
    with pytest.raises(ConfigError, match=r"^foolsgold-features: bad value 'head'; allowed: all \| output-layer$"):
        experiment_config({"strategy": "foolsgold", "foolsgold-features": "head"})
