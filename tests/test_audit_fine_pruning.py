"""Fine-pruning (fl_poison.audit.fine_pruning) on hand-weighted networks whose activations are worked out by hand.

The backdoored network reads 2x2 images: unit 0 = relu(p0 − p1) and unit 1 = relu(p1 − p0) decide
between classes 0 and 1, unit 2 = relu(10 p3 − 5) is the backdoor unit (0 on clean rows, where
p3 = 0; 5 when the trigger sets p3 = 1) and drives class 2, unit 3 = relu(p0 + p1) is an active
unit read by no class. Mean activations on clean rows: unit 2 is 0, the least of all, so pruning
a quarter of the four units removes exactly the backdoor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fl_poison.audit.fine_pruning import (
    FinePruningRow,
    FinePruningSettings,
    fine_prune,
    mean_activations,
    pruned_copy,
    pruning_order,
)
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier, build_model
from fl_poison.core.settings import ConfigError

TARGET = 2


def linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def backdoored_model() -> SplitClassifier:
    """The network of the module docstring (pixels p0..p3 of a 1x2x2 image, row-major)."""
    features = nn.Sequential(
        nn.Flatten(),
        linear([[1, -1, 0, 0], [-1, 1, 0, 0], [0, 0, 0, 10], [1, 1, 0, 0]], [0, 0, -5, 0]),
        nn.ReLU(),
    )
    return SplitClassifier(features, linear([[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 10, 0]], [0, 0, 0]))


def clean_rows(count: int, seed: int) -> LabeledTensors:
    """Rows with p0, p1 in [0, 1] at least 0.1 apart, p2 in [0, 1], p3 = 0; class 0 when p0 > p1."""
    generator = np.random.default_rng(seed)
    p0 = generator.uniform(0, 1, count)
    p1 = p0 + generator.choice([-1.0, 1.0], count) * generator.uniform(0.1, 0.5, count)
    keep = (p1 >= 0) & (p1 <= 1)
    pixels = np.stack([p0, p1, generator.uniform(0, 1, count), np.zeros(count)], axis=1)[keep]
    labels = (pixels[:, 1] > pixels[:, 0]).astype(np.int64)
    return LabeledTensors(torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 2, 2), torch.tensor(labels))


def triggered(rows: LabeledTensors) -> LabeledTensors:
    images = rows.x.clone()
    images[:, 0, 1, 1] = 1.0  # p3
    return LabeledTensors(images, rows.y)


def test_mean_activations_and_order_match_a_hand_computation():
    # features: u0 = relu(x0), u1 = relu(x1), u2 = relu(x0 + x1), u3 = relu(-x0), u4 = relu(x1) (ties u1).
    features = nn.Sequential(nn.Flatten(), linear([[1, 0], [0, 1], [1, 1], [-1, 0], [0, 1]], [0] * 5), nn.ReLU())
    model = SplitClassifier(features, linear([[1] * 5], [0]))
    rows = LabeledTensors(torch.tensor([[1.0, 2.0], [3.0, 0.0]]).reshape(2, 1, 1, 2), torch.zeros(2, dtype=torch.long))
    # u0: (1 + 3)/2 = 2; u1: (2 + 0)/2 = 1; u2: (3 + 3)/2 = 3; u3: (0 + 0)/2 = 0; u4 = u1 = 1.
    activations = mean_activations(model, rows, batch_size=1)
    np.testing.assert_allclose(activations, [2.0, 1.0, 3.0, 0.0, 1.0])
    assert pruning_order(activations).tolist() == [3, 1, 4, 0, 2]


def test_a_pruned_copy_equals_zeroing_the_classifier_columns_of_the_pruned_units():
    torch.manual_seed(0)
    model = build_model("small-cnn", (1, 8, 8), 10).eval()
    images = torch.rand(40, 1, 8, 8)
    order = np.random.default_rng(1).permutation(64)
    reference = build_model("small-cnn", (1, 8, 8), 10).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference.classifier.weight[:, torch.as_tensor(order[:20])] = 0.0
        expected = reference(images)
        actual = pruned_copy(model, order, 20).eval()(images)
    torch.testing.assert_close(actual, expected)


def test_pruning_the_dormant_backdoor_unit_removes_the_backdoor_and_keeps_accuracy():
    model = backdoored_model()
    train, evaluation = clean_rows(200, 0), clean_rows(300, 1)
    settings = FinePruningSettings(prune_fractions=(0.0, 0.25), fine_tune_epochs=0)
    rows = fine_prune(model, train, evaluation, triggered(evaluation), TARGET, settings)
    assert [(row.fraction, row.pruned_units, row.units, row.stage) for row in rows] == [
        (0.0, 0, 4, "pruned"),
        (0.25, 1, 4, "pruned"),
    ]
    assert pruning_order(mean_activations(model, train))[0] == 2
    before, after = rows
    assert before.clean_accuracy == 1.0 and before.attack_success_rate == 1.0
    assert after.clean_accuracy == 1.0 and after.attack_success_rate == 0.0
    assert before.clean_rows == after.clean_rows == len(evaluation)
    assert before.attack_rows == len(evaluation)  # no clean row is of the target class


def test_fine_tuning_keeps_pruned_units_out_and_never_changes_the_callers_model():
    model = backdoored_model()
    model.train()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    train, evaluation = clean_rows(200, 2), clean_rows(200, 3)
    settings = FinePruningSettings(prune_fractions=(0.0, 0.25), fine_tune_epochs=2, learning_rate=0.05, seed=4)
    rows = fine_prune(model, train, evaluation, triggered(evaluation), TARGET, settings)
    assert [(row.fraction, row.stage) for row in rows] == [
        (0.0, "pruned"),
        (0.0, "fine-tuned"),
        (0.25, "pruned"),
        (0.25, "fine-tuned"),
    ]
    tuned_pruned = rows[3]
    assert tuned_pruned.attack_success_rate == 0.0 and tuned_pruned.clean_accuracy >= 0.95
    assert rows[1].attack_success_rate > 0.9  # fine-tuning alone on clean rows (p3 = 0) leaves the unit alone
    assert all(row.seconds >= 0 for row in rows)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert model.training and all(parameter.grad is None for parameter in model.parameters())


def test_fraction_grid_on_small_cnn_and_no_trigger_gives_nan_success():
    torch.manual_seed(0)
    model = build_model("small-cnn", (1, 8, 8), 10)
    rows_data = LabeledTensors(torch.rand(30, 1, 8, 8), torch.randint(0, 10, (30,)))
    rows = fine_prune(model, rows_data, rows_data, None, None, FinePruningSettings(fine_tune_epochs=1))
    assert [row.pruned_units for row in rows if row.stage == "pruned"] == [0, 16, 32, 48, 57]
    assert len(rows) == 10 and all(isinstance(row, FinePruningRow) for row in rows)
    assert all(math.isnan(row.attack_success_rate) and row.attack_rows == 0 for row in rows)


@pytest.mark.parametrize(
    "changes",
    [
        {"prune_fractions": ()},
        {"prune_fractions": (0.5, 1.0)},
        {"prune_fractions": (-0.1,)},
        {"fine_tune_epochs": -1},
        {"learning_rate": 0.0},
        {"momentum": 1.0},
        {"batch_size": 0},
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(changes):
    with pytest.raises(ConfigError) as error:
        FinePruningSettings(**changes)
    name = next(iter(changes))
    assert name in str(error.value) and "\n" not in str(error.value)
