"""Neural Cleanse (fl_poison.audit.neural_cleanse): the MAD outlier test and λ schedule by hand, and the
detection on small models trained here.

The models are a one-hidden-layer network on scikit-learn's 8x8 digits (bundled with
scikit-learn, no download), trained for a fraction of a second: one on clean rows, one on rows of
which 150 of 1437 carry a white 3x3 patch in the bottom-right corner and are labelled 0 (BadNets).
The backdoor's true trigger has an L1 norm of 9; every other class needs a larger change of the
digits. The same outcome (class 0 flagged with an index of 3.1–4.6, nothing flagged on the clean
model, every index below 1.5) held for training seeds 0, 1 and 2 when these tests were written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from audit_helpers import one_torch_thread  # noqa: F401 - autouse fixture
from sklearn.datasets import load_digits
from torch import nn

from fl_poison.audit.neural_cleanse import (
    CostSchedule,
    NeuralCleanseResult,
    NeuralCleanseSettings,
    anomaly_indices,
    reverse_engineer,
    stamp,
)
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.settings import ConfigError
from fl_poison.core.training import LocalTraining, train_locally

TARGET = 0
TRAINING_ROWS = 1437
POISONED_ROWS = 150
AUDITED_ROWS = 180


def with_patch(images: torch.Tensor) -> torch.Tensor:
    stamped = images.clone()
    stamped[:, :, 5:, 5:] = 1.0
    return stamped


@pytest.fixture(scope="module")
def digits() -> tuple[LabeledTensors, LabeledTensors]:
    """Training rows and held-out rows of the digits, in [0, 1]."""
    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32)[:, None]
    labels = torch.tensor(bunch.target)
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(labels)))
    train, held_out = order[:TRAINING_ROWS], order[TRAINING_ROWS:]
    return LabeledTensors(images[train], labels[train]), LabeledTensors(images[held_out], labels[held_out])


def trained(train: LabeledTensors, backdoor: bool) -> SplitClassifier:
    torch.manual_seed(0)
    model = SplitClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU()), nn.Linear(32, 10))
    images, labels = train.x.clone(), train.y.clone()
    if backdoor:
        poisoned = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:POISONED_ROWS]
        images[poisoned] = with_patch(images[poisoned])
        labels[poisoned] = TARGET
    settings = LocalTraining(epochs=20, batch_size=64, learning_rate=0.1, momentum=0.9)
    train_locally(model, LabeledTensors(images, labels), settings, torch.device("cpu"), 0)
    model.zero_grad(set_to_none=True)
    return model.eval()


# --- the outlier test and the schedule, by hand ------------------------------------------------


def test_anomaly_index_matches_a_hand_computation():
    norms = np.array([10, 12, 11, 3, 13, 12, 11, 10, 12, 11], dtype=float)
    # sorted: 3 10 10 11 11 11 12 12 12 13 -> median 11; |l - 11| sorted: 0 0 0 1 1 1 1 1 2 8 -> MAD 1.
    index, median, mad = anomaly_indices(norms)
    assert (median, mad) == (11.0, 1.0)
    np.testing.assert_allclose(index, (11.0 - norms) / 1.4826)
    assert index[3] == pytest.approx(5.395925, rel=1e-6)  # 8 / 1.4826
    assert index[4] == pytest.approx(-1.348982, rel=1e-6)  # large norms are negative, never flagged


def test_anomaly_index_with_no_spread():
    index, median, mad = anomaly_indices(np.array([5.0, 5.0, 5.0, 2.0, 7.0]))
    assert (median, mad) == (5.0, 0.0)
    assert index.tolist() == [0.0, 0.0, 0.0, math.inf, -math.inf]


def test_dynamic_cost_schedule_follows_the_reference_by_hand():
    settings = NeuralCleanseSettings(init_cost=1e-3, patience=2, cost_multiplier=1.5, early_stop_patience=2)
    schedule = CostSchedule(settings)
    costs = []
    for success in (1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.995, 0.98):
        schedule.update(success)
        costs.append(schedule.cost)
    # 0 until 2 successes in a row set λ = 1e-3 (counting that step as the first success at 1e-3);
    # the next success makes 2 in a row: × 1.5; two failures: ÷ 1.5 ** 1.5; 0.98 < 0.99 is a failure.
    down = 1.5e-3 / 1.5**1.5
    assert costs == pytest.approx([0, 1e-3, 1.5e-3, 1.5e-3, 1.5e-3, down, down, down])
    assert schedule.went_up and schedule.went_down
    # early stop after 2 steps without the best norm falling below 0.99 times the previous best:
    # 10 (first), 9.95 (not below 9.9: 1), 9.92 (not below 9.8505: 2, stop), 9.5 (below 9.8208: 0).
    assert [schedule.should_stop(norm) for norm in (10.0, 9.95, 9.92, 9.5)] == [False, False, True, False]
    fixed = CostSchedule(NeuralCleanseSettings(cost_schedule="fixed", init_cost=0.01))
    fixed.update(1.0)
    assert fixed.cost == 0.01 and not fixed.should_stop(1.0)


def test_stamp_is_the_papers_blend():
    images = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    mask = torch.tensor([[1.0, 0.5], [0.0, 0.25]])
    pattern = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    expected = torch.tensor([[[[1.0, 0.2], [0.6, 0.6]]]])  # (1 - m) x + m Δ pixel by pixel
    torch.testing.assert_close(stamp(images, mask, pattern), expected)


# --- detection ---------------------------------------------------------------------------------


def test_flags_the_backdoor_target_and_recovers_the_patch(digits):
    train, held_out = digits
    model = trained(train, backdoor=True)
    audited = held_out.x[:AUDITED_ROWS]
    with torch.no_grad():
        not_target = held_out.y != TARGET
        assert (model(with_patch(held_out.x[not_target])).argmax(1) == TARGET).float().mean() > 0.95
    state = {name: value.clone() for name, value in model.state_dict().items()}
    result = reverse_engineer(model, audited, 10, NeuralCleanseSettings(batch_size=AUDITED_ROWS, seed=0))
    assert isinstance(result, NeuralCleanseResult)
    assert result.masks.shape == (10, 8, 8) and result.patterns.shape == (10, 1, 8, 8)
    assert result.flagged == (TARGET,)
    assert int(np.argmin(result.mask_l1)) == TARGET and result.mask_l1[TARGET] < 9.0
    assert result.anomaly_index[TARGET] > 2.0
    np.testing.assert_allclose(result.mask_l1, result.masks.sum(axis=(1, 2)), rtol=1e-5)
    # most of the reversed mask lies on the planted patch, and the pattern there is bright
    patch_share = result.masks[TARGET, 5:, 5:].sum() / result.mask_l1[TARGET]
    assert patch_share > 0.6
    # the reported success is that of the returned trigger, measured again on the images
    with torch.no_grad():
        reversed_hits = model(stamp(audited, torch.tensor(result.masks[TARGET]), torch.tensor(result.patterns[TARGET])))
    assert result.attack_success[TARGET] == pytest.approx(float((reversed_hits.argmax(1) == TARGET).float().mean()))
    assert result.attack_success[TARGET] > 0.95
    # the model is left as it was
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not model.training and all(parameter.grad is None for parameter in model.parameters())


def test_flags_nothing_on_a_clean_model(digits):
    train, held_out = digits
    model = trained(train, backdoor=False)
    model.train()
    result = reverse_engineer(model, held_out.x[:AUDITED_ROWS], 10, NeuralCleanseSettings(batch_size=AUDITED_ROWS))
    assert result.flagged == ()
    assert float(np.max(result.anomaly_index)) < 2.0
    assert model.training  # the mode is restored
    assert (result.steps_run >= 1).all() and (result.steps_run <= 60).all() and (result.seconds > 0).all()


def test_the_same_seed_gives_the_same_triggers(digits):
    train, held_out = digits
    model = trained(train, backdoor=False)
    settings = NeuralCleanseSettings(steps=3, batch_size=32, seed=7)
    first = reverse_engineer(model, held_out.x[:64], 10, settings, progress=lambda classes: list(classes)[:10])
    second = reverse_engineer(model, held_out.x[:64].numpy(), 10, settings)
    np.testing.assert_array_equal(first.masks, second.masks)
    np.testing.assert_array_equal(first.patterns, second.patterns)


@pytest.mark.parametrize(
    "changes",
    [
        {"steps": 0},
        {"learning_rate": 0.0},
        {"init_cost": -1.0},
        {"cost_schedule": "cosine"},
        {"attack_success_threshold": 0.0},
        {"patience": 0},
        {"cost_multiplier": 1.0},
        {"batch_size": 0},
        {"anomaly_threshold": 0.0},
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(changes):
    with pytest.raises(ConfigError) as error:
        NeuralCleanseSettings(**changes)
    assert next(iter(changes)) in str(error.value) and "\n" not in str(error.value)
