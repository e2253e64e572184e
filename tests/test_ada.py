"""ADA's target choice on constructed models whose answer is known, and its convergence wait."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord, RecordDict
from torch import nn

from clients.attacks.ada import (
    CONVERGENCE_RECORD,
    AdaPoison,
    attacking_distances_flame,
    attacking_distances_full,
    choose_target,
    global_model_converged,
)
from clients.base import TrainingJob
from clients.benign import BenignClient
from clients.label_flipping import flip_source_to_target
from clients.malicious import MaliciousClient, NoTransform
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.training import LocalTraining

CPU = torch.device("cpu")

# Class means in a 2-D feature space; the source is class 0.
#   |mu0 - mu1| = 3, |mu0 - mu2| = 2.5, |mu0 - mu3| = 1.5 (nearest), |mu0 - mu4| = sqrt(8)
MEANS = {0: (1.0, 1.0), 1: (4.0, 1.0), 2: (1.0, 3.5), 3: (-0.5, 1.0), 4: (3.0, 3.0)}
OFFSETS = [(0.5, 0.25), (-0.5, -0.25), (0.25, -0.5), (-0.25, 0.5)]  # sum to zero: class means are exact


def features_as_inputs(points: list[tuple[float, float]], labels: list[int]) -> LabeledTensors:
    """Inputs ``(N, D, 1, 1)`` that :class:`nn.Flatten` turns into the features themselves."""
    x = torch.tensor(points, dtype=torch.float32).view(len(points), -1, 1, 1)
    return LabeledTensors(x, torch.tensor(labels, dtype=torch.int64))


def clustered_data(means: dict[int, tuple[float, float]]) -> LabeledTensors:
    points, labels = [], []
    for label, (mx, my) in means.items():
        for dx, dy in OFFSETS:
            points.append((mx + dx, my + dy))
            labels.append(label)
    return features_as_inputs(points, labels)


def linear_model(weight: np.ndarray, bias: np.ndarray) -> SplitClassifier:
    classifier = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        classifier.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return SplitClassifier(nn.Flatten(), classifier)


# Logits of a source sample favour the source (class 0), then class 2; class 3 is the least likely.
WEIGHT = np.array([[2.0, 2.0], [0.0, 0.5], [1.5, 1.0], [-1.0, -1.0], [0.5, 0.0]])
BIAS = np.array([0.0, 0.1, 0.2, 0.0, -0.1])


def flame_by_hand(weight: np.ndarray, bias: np.ndarray, source_features: np.ndarray, candidate: int) -> float:
    """‖Σ_i (softmax(W h_i + b) − e_c) h_iᵀ‖_F in float64."""
    logits = source_features @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities[:, candidate] -= 1.0
    gradient = probabilities.T @ source_features  # (C, D)
    return float(np.linalg.norm(gradient))


# ---------------------------------------------------------------- full knowledge


def test_full_knowledge_distances_are_the_class_mean_distances():
    data = clustered_data(MEANS)
    distances = attacking_distances_full(linear_model(WEIGHT, BIAS), data, source=0, device=CPU)
    assert set(distances) == {1, 2, 3, 4}
    assert distances[1] == pytest.approx(3.0, abs=1e-9)
    assert distances[2] == pytest.approx(2.5, abs=1e-9)
    assert distances[3] == pytest.approx(1.5, abs=1e-9)
    assert distances[4] == pytest.approx(math.sqrt(8), abs=1e-9)
    assert choose_target(distances) == 3


def test_full_knowledge_uses_the_feature_extractor():
    # features = 2 * x: every distance doubles, the choice stays the same
    data = clustered_data(MEANS)
    model = linear_model(WEIGHT, BIAS)
    model.features = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model.features[1].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    distances = attacking_distances_full(model, data, source=0, device=CPU)
    assert distances == pytest.approx({1: 6.0, 2: 5.0, 3: 3.0, 4: 2 * math.sqrt(8)})


def test_full_knowledge_skips_classes_without_samples():
    data = clustered_data({c: MEANS[c] for c in (0, 1, 2)})
    distances = attacking_distances_full(linear_model(WEIGHT, BIAS), data, source=0, device=CPU)
    assert set(distances) == {1, 2}
    assert choose_target(distances) == 2


def test_full_knowledge_ties_go_to_the_lowest_class():
    # classes 1, 2 and 4 all at distance 2 from the source; class 3 farther
    means = {0: (0.0, 0.0), 4: (0.0, -2.0), 3: (3.0, 0.0), 2: (-2.0, 0.0), 1: (0.0, 2.0)}
    distances = attacking_distances_full(linear_model(WEIGHT, BIAS), clustered_data(means), 0, CPU)
    assert distances[1] == distances[2] == distances[4] == 2.0
    assert choose_target(distances) == 1


# ---------------------------------------------------------------- partial knowledge (FLAME)


def test_flame_distances_match_the_gradient_by_hand():
    data = clustered_data(MEANS)
    source_features = np.array([(1.0 + dx, 1.0 + dy) for dx, dy in OFFSETS])
    distances = attacking_distances_flame(linear_model(WEIGHT, BIAS), data, source=0, num_classes=5, device=CPU)
    assert set(distances) == {1, 2, 3, 4}
    for candidate in (1, 2, 3, 4):
        assert distances[candidate] == pytest.approx(flame_by_hand(WEIGHT, BIAS, source_features, candidate), rel=1e-5)
    # the class the model already leans to after the source has the smallest last-layer gradient
    assert choose_target(distances) == 2
    # while full knowledge on the same data picks the nearest class mean
    assert choose_target(attacking_distances_full(linear_model(WEIGHT, BIAS), data, 0, CPU)) == 3


def test_flame_covers_classes_absent_from_the_local_data():
    # FLAME only needs source samples: classes the attacker holds no samples of are candidates too
    data = clustered_data({0: MEANS[0], 1: MEANS[1]})
    distances = attacking_distances_flame(linear_model(WEIGHT, BIAS), data, 0, 5, CPU)
    assert set(distances) == {1, 2, 3, 4}
    assert choose_target(distances) == 2


def test_flame_ties_go_to_the_lowest_class():
    # Zero weights and bias: softmax is uniform, every candidate has the same gradient norm.
    weight, bias = np.zeros((4, 2)), np.zeros(4)
    data = clustered_data({0: (1.0, 1.0), 1: (2.0, 2.0)})
    distances = attacking_distances_flame(linear_model(weight, bias), data, source=0, num_classes=4, device=CPU)
    assert len(set(distances.values())) == 1
    assert choose_target(distances) == 1


def test_choose_target_by_hand():
    assert choose_target({3: 0.5, 1: 0.7, 2: 0.5}) == 2
    assert choose_target({5: 1.0}) == 5
    assert choose_target({}) is None


# ---------------------------------------------------------------- no source samples


def test_no_source_samples_means_no_distances_and_no_attack():
    data = clustered_data({1: MEANS[1], 2: MEANS[2]})
    model = linear_model(WEIGHT, BIAS)
    assert attacking_distances_full(model, data, 0, CPU) == {}
    assert attacking_distances_flame(model, data, 0, 5, CPU) == {}
    for knowledge in ("full", "partial"):
        poisoner = AdaPoison(
            knowledge, source=0, rate=0.5, num_classes=5, wait_for_convergence=False, patience=1, state=RecordDict()
        )
        assert poisoner.poison(job_for(model, data, server_round=1)) is None


def job_for(model: nn.Module, data: LabeledTensors, server_round: int) -> TrainingJob:
    training = LocalTraining(epochs=1, batch_size=4, learning_rate=0.01)
    return TrainingJob(
        model=model, data=data, training=training, device=CPU, seed=17, server_round=server_round, partition_id=0
    )


@pytest.mark.parametrize("knowledge, target", [("full", 3), ("partial", 2)])
def test_ada_poison_flips_source_to_the_chosen_class(knowledge, target):
    data = clustered_data(MEANS)
    poisoner = AdaPoison(
        knowledge, source=0, rate=0.5, num_classes=5, wait_for_convergence=False, patience=1, state=RecordDict()
    )
    poisoned = poisoner.poison(job_for(linear_model(WEIGHT, BIAS), data, server_round=1))
    assert poisoned is not None and poisoned.target == target
    # four source samples relabelled, four others kept with their true labels
    original = {tuple(row): label for row, label in zip(data.x.view(-1, 2).tolist(), data.y.tolist(), strict=True)}
    assert len(original) == len(data)  # every point is distinct
    rows = [tuple(row) for row in poisoned.data.x.view(-1, 2).tolist()]
    assert len(rows) == 8
    assert sorted(row for row in rows if original[row] == 0) == sorted(row for row in original if original[row] == 0)
    for row, label in zip(rows, poisoned.data.y.tolist(), strict=True):
        assert label == (target if original[row] == 0 else original[row])


def test_malicious_client_trains_honestly_when_ada_does_not_attack():
    data = clustered_data({1: MEANS[1], 2: MEANS[2]})  # no source samples
    poisoner = AdaPoison(
        "full", source=0, rate=0.5, num_classes=5, wait_for_convergence=False, patience=1, state=RecordDict()
    )
    model_a, model_b = linear_model(WEIGHT, BIAS), linear_model(WEIGHT, BIAS)
    update = MaliciousClient(poisoner, NoTransform()).run(job_for(model_a, data, 1))
    honest = BenignClient().run(job_for(model_b, data, 1))
    assert update.malicious and not update.attacked
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert update.train_loss == honest.train_loss


# ---------------------------------------------------------------- convergence


def test_convergence_after_patience_rounds_without_a_new_minimum():
    # minimum 2.0 at round 3; later equal or larger losses do not count as a decrease
    losses = {1: 5.0, 2: 3.0, 3: 2.0, 4: 2.5, 5: 2.0, 6: 2.1, 7: 3.0, 8: 2.2}
    state = RecordDict()
    converged = {r: global_model_converged(state, r, loss, patience=3) for r, loss in losses.items()}
    assert converged == {1: False, 2: False, 3: False, 4: False, 5: False, 6: True, 7: True, 8: True}
    record = state[CONVERGENCE_RECORD]
    assert isinstance(record, MetricRecord)
    assert record["best_loss"] == 2.0 and record["best_round"] == 3
    # a new minimum starts the count again
    assert global_model_converged(state, 9, 1.0, patience=3) is False
    assert [global_model_converged(state, r, 1.5, patience=3) for r in (10, 11, 12)] == [False, False, True]


def test_convergence_counts_from_the_first_round_seen():
    state = RecordDict()
    # first seen in round 7 with a constant loss: converged once 2 rounds have passed
    assert [global_model_converged(state, r, 0.4, patience=2) for r in (7, 8, 9, 10)] == [False, False, True, True]


def test_ada_waits_for_convergence():
    data = clustered_data(MEANS)
    model = linear_model(WEIGHT, BIAS)  # the same global model every round: the loss never decreases
    state = RecordDict()
    poisoner = AdaPoison("full", source=0, rate=0.5, num_classes=5, wait_for_convergence=True, patience=2, state=state)
    assert poisoner.poison(job_for(model, data, 1)) is None
    assert poisoner.poison(job_for(model, data, 2)) is None
    attacked = poisoner.poison(job_for(model, data, 3))
    assert attacked is not None and attacked.target == 3
    expected = flip_source_to_target(data, 0, 3, 0.5, 17)
    assert torch.equal(attacked.data.x, expected.x) and torch.equal(attacked.data.y, expected.y)
