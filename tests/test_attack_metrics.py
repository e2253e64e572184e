"""Attack metrics on hand-made predictions, the attacks' class checks, and each attack's evaluation
on tiny models whose predictions are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from clients.attack_metrics import attack_success_rate, main_task_accuracy, max_ata, targeted_ata
from clients.backdoors import BackdoorEvaluation
from clients.registry import attack_named, evaluation_for
from fl_poison.apps.algorithms import check_attack_classes, experiment_config
from fl_poison.core.data import LabeledTensors
from fl_poison.core.settings import ConfigError

CPU = torch.device("cpu")

PREDICTIONS = np.array([0, 0, 1, 2, 0, 3])
LABELS = np.array([0, 1, 1, 2, 3, 3])

# ---------------------------------------------------------------- metric functions


def test_attack_success_rate_by_hand():
    # samples not of class 0: rows 1..5, predicted [0, 1, 2, 0, 3] -> 2 of 5 hit the target
    assert attack_success_rate(PREDICTIONS, LABELS, target=0) == pytest.approx(0.4)
    # samples not of class 3: rows 0..3, predicted [0, 0, 1, 2] -> none is 3
    assert attack_success_rate(PREDICTIONS, LABELS, target=3) == 0.0
    # samples not of class 1: rows 0, 3, 4, 5 predicted [0, 2, 0, 3] -> none is 1 (row 2 is excluded)
    assert attack_success_rate(PREDICTIONS, LABELS, target=1) == 0.0


def test_attack_success_rate_is_nan_without_eligible_samples():
    assert math.isnan(attack_success_rate(np.array([0, 1]), np.array([2, 2]), target=2))


def test_main_task_accuracy_by_hand():
    # correct: rows 0, 2, 3, 5 -> 4 of 6
    assert main_task_accuracy(PREDICTIONS, LABELS) == pytest.approx(4 / 6)
    assert main_task_accuracy(PREDICTIONS, LABELS, None) == pytest.approx(4 / 6)
    assert main_task_accuracy(PREDICTIONS, LABELS, -1) == pytest.approx(4 / 6)
    # outside class 3: rows 0..3, correct 0, 2, 3 -> 3 of 4
    assert main_task_accuracy(PREDICTIONS, LABELS, 3) == pytest.approx(0.75)
    # outside class 1: rows 0, 3, 4, 5 correct 0, 3, 5 -> 3 of 4
    assert main_task_accuracy(PREDICTIONS, LABELS, 1) == pytest.approx(0.75)


def test_main_task_accuracy_is_nan_when_everything_is_source():
    assert math.isnan(main_task_accuracy(np.array([1, 1]), np.array([1, 1]), source=1))


def test_targeted_ata_by_hand():
    # class 3 samples: rows 4, 5 predicted [0, 3]
    assert targeted_ata(PREDICTIONS, LABELS, source=3, target=0) == 0.5
    assert targeted_ata(PREDICTIONS, LABELS, source=3, target=2) == 0.0
    # class 1 samples: rows 1, 2 predicted [0, 1]
    assert targeted_ata(PREDICTIONS, LABELS, source=1, target=0) == 0.5


def test_targeted_ata_nan_cases():
    assert math.isnan(targeted_ata(PREDICTIONS, LABELS, source=3, target=-1))  # no target chosen yet
    assert math.isnan(targeted_ata(PREDICTIONS, LABELS, source=5, target=0))  # no source samples


def test_max_ata_by_hand():
    # class 3 samples predicted [0, 3]: the only other class hit is 0, once -> 1/2
    assert max_ata(PREDICTIONS, LABELS, source=3, num_classes=4) == 0.5
    predictions = np.array([2, 1, 1, 0, 2])
    labels = np.array([2, 2, 2, 2, 2])
    # class 2 predicted as itself twice (ignored), as 1 twice, as 0 once -> 2/5
    assert max_ata(predictions, labels, source=2, num_classes=4) == pytest.approx(0.4)
    # everything classified as the source: no other class gets any -> 0
    assert max_ata(np.array([2, 2]), np.array([2, 2]), source=2, num_classes=3) == 0.0


def test_max_ata_is_nan_without_source_samples():
    assert math.isnan(max_ata(PREDICTIONS, LABELS, source=9, num_classes=10))


# ---------------------------------------------------------------- class checks


@pytest.mark.parametrize("attack", ["badnets", "blend", "dba", "label-flip"])
def test_check_classes_rejects_a_target_outside_the_data(attack):
    config = experiment_config({"attack": attack, "target-class": 10, "source-class": 2})
    with pytest.raises(ConfigError) as error:
        check_attack_classes(config, num_classes=10)
    assert str(error.value).startswith("target-class:")
    assert "\n" not in str(error.value)
    check_attack_classes(config, num_classes=11)  # 10 is a class of 11-class data


@pytest.mark.parametrize("attack", ["label-flip", "ada"])
def test_check_classes_rejects_a_source_outside_the_data(attack):
    config = experiment_config({"attack": attack, "source-class": 4, "target-class": 1})
    with pytest.raises(ConfigError) as error:
        check_attack_classes(config, num_classes=4)
    assert str(error.value).startswith("source-class:")
    check_attack_classes(config, num_classes=5)


@pytest.mark.parametrize(
    ("ignored", "checked", "refused"),
    [
        # no attack uses no class
        (
            {"attack": "none", "target-class": 50, "source-class": 60},
            {"attack": "label-flip", "target-class": 50, "source-class": 60},
            "target-class",
        ),
        # random label flipping has no target
        (
            {"attack": "label-flip-random", "target-class": 50},
            {"attack": "badnets", "target-class": 50},
            "target-class",
        ),
        # ada picks its own target: a large target-class is irrelevant
        (
            {"attack": "ada", "target-class": 50, "source-class": 3},
            {"attack": "label-flip", "target-class": 50, "source-class": 3},
            "target-class",
        ),
        # all-to-one label flipping has no source class to check
        (
            {"attack": "label-flip", "source-class": "all", "target-class": 1},
            {"attack": "label-flip", "source-class": 60, "target-class": 1},
            "source-class",
        ),
    ],
)
def test_check_classes_ignores_classes_an_attack_does_not_use(ignored, checked, refused):
    # The same out-of-range class passes where the attack ignores it and is refused where one uses it.
    assert check_attack_classes(experiment_config(ignored), num_classes=10) is None
    with pytest.raises(ConfigError, match=f"^{refused}: bad value"):
        check_attack_classes(experiment_config(checked), num_classes=10)


# ---------------------------------------------------------------- each attack's evaluation


class ConstantModel(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.label, self.num_classes = label, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, self.label] = 5.0
        return logits


class CornerPixelModel(nn.Module):
    """Predicts class 0 when pixel (row 7, column ``column``) is bright, else class 1."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x[:, 0, 7, self.column]
        return torch.stack(
            [10.0 * bright, torch.full_like(bright, 5.0), torch.zeros_like(bright), torch.zeros_like(bright)], dim=1
        )


def tiny_test_set() -> LabeledTensors:
    labels = torch.arange(20) % 4  # five samples of each of 4 classes
    return LabeledTensors(torch.zeros(20, 1, 8, 8), labels)


def evaluate(settings: dict, model: nn.Module, ada_target: int = -1) -> dict[str, float]:
    data = tiny_test_set()
    evaluation = evaluation_for(experiment_config(settings), data, num_classes=4)
    with torch.no_grad():
        predictions = model(data.x).argmax(dim=1).numpy()
    return evaluation.metrics(model, predictions, CPU, batch_size=7, attack_target=ada_target)


@pytest.mark.parametrize("attack", ["badnets", "blend"])
def test_backdoor_metrics_of_a_constant_model(attack):
    results = evaluate({"attack": attack, "target-class": 0}, ConstantModel(0, 4))
    assert results == {"mta": 0.25, "asr": 1.0}  # 5 of 20 test samples are class 0
    results = evaluate({"attack": attack, "target-class": 2}, ConstantModel(0, 4))
    assert results == {"mta": 0.25, "asr": 0.0}


def test_backdoor_asr_is_measured_on_triggered_images():
    # A BadNets patch in the bottom-right corner lights pixel (7, 7): the model then says 0.
    results = evaluate({"attack": "badnets", "target-class": 0}, CornerPixelModel(column=7))
    assert results["asr"] == 1.0
    assert results["mta"] == 0.25  # clean images: always class 1, right for 5 of 20
    results = evaluate(
        {"attack": "badnets", "target-class": 0, "trigger-position": "bottom-left"}, CornerPixelModel(column=7)
    )
    assert results["asr"] == 0.0


def test_dba_reports_the_global_trigger_and_every_part():
    settings = {"attack": "dba", "target-class": 0, "num-malicious": 3, "trigger-value": 1.0, "trigger-size": 3}
    data = tiny_test_set()
    evaluation = evaluation_for(experiment_config(settings), data, num_classes=4)
    assert isinstance(evaluation, BackdoorEvaluation)
    assert set(evaluation.triggered) == {"asr", "asr_part_0", "asr_part_1", "asr_part_2"}
    # global trigger: 3x3 bottom-right square; part k is column 5 + k of it
    expected_global = torch.zeros(1, 8, 8)
    expected_global[0, 5:, 5:] = 1.0
    assert torch.equal(evaluation.triggered["asr"].x[0], expected_global)
    for k in range(3):
        expected = torch.zeros(1, 8, 8)
        expected[0, 5:, 5 + k] = 1.0
        assert torch.equal(evaluation.triggered[f"asr_part_{k}"].x[3], expected)
        assert torch.equal(evaluation.triggered[f"asr_part_{k}"].y, data.y)

    # A model that reacts to pixel (7, 7) is backdoored by the global trigger and by part 2 only.
    results = evaluate(settings, CornerPixelModel(column=7))
    assert results == {"mta": 0.25, "asr": 1.0, "asr_part_0": 0.0, "asr_part_1": 0.0, "asr_part_2": 1.0}
    results = evaluate(settings, ConstantModel(0, 4))
    assert results == {"mta": 0.25, "asr": 1.0, "asr_part_0": 1.0, "asr_part_1": 1.0, "asr_part_2": 1.0}


def test_dba_parts_follow_malicious_ids():
    evaluation = evaluation_for(experiment_config({"attack": "dba", "malicious-ids": "1,4,6,8,9"}), tiny_test_set(), 4)
    assert sorted(evaluation.triggered) == ["asr"] + [f"asr_part_{k}" for k in range(5)]


def test_dba_automatic_trigger_size_on_8px_images():
    # documented in clients.attacks.dba.dba_global_trigger: 5 px with 3 attackers on 8x8 digits
    evaluation = evaluation_for(experiment_config({"attack": "dba", "num-malicious": 3}), tiny_test_set(), 4)
    expected = torch.zeros(1, 8, 8)
    expected[0, 3:, 3:] = 1.0
    assert torch.equal(evaluation.triggered["asr"].x[0], expected)
    parts = [evaluation.triggered[f"asr_part_{k}"].x[0] for k in range(3)]
    assert all(float(part.sum()) > 0 for part in parts)
    assert torch.equal(sum(parts), expected)


def test_label_flip_metrics_of_a_constant_model():
    results = evaluate({"attack": "label-flip", "source-class": 2, "target-class": 0}, ConstantModel(0, 4))
    # outside class 2: 15 samples, 5 of them class 0 -> mta 1/3; every class-2 sample goes to 0
    assert results == pytest.approx({"mta": 1 / 3, "ts_ata": 1.0, "max_ata": 1.0})
    results = evaluate({"attack": "label-flip", "source-class": 2, "target-class": 3}, ConstantModel(0, 4))
    assert results == pytest.approx({"mta": 1 / 3, "ts_ata": 0.0, "max_ata": 1.0})
    results = evaluate({"attack": "label-flip", "source-class": 2, "target-class": 0}, ConstantModel(2, 4))
    # everything predicted as the source: mta counts only class-2 hits, which are excluded
    assert results == {"mta": 0.0, "ts_ata": 0.0, "max_ata": 0.0}


def test_all_to_one_label_flip_reports_asr():
    results = evaluate({"attack": "label-flip", "source-class": "all", "target-class": 1}, ConstantModel(1, 4))
    assert results == {"mta": 0.25, "asr": 1.0}


def test_ada_metrics_use_the_reported_target():
    settings = {"attack": "ada", "source-class": 3}
    results = evaluate(settings, ConstantModel(1, 4), ada_target=1)
    assert results == pytest.approx({"mta": 1 / 3, "ts_ata": 1.0, "max_ata": 1.0, "ts_ata_target": 1})
    results = evaluate(settings, ConstantModel(1, 4), ada_target=2)
    assert results["ts_ata"] == 0.0 and results["ts_ata_target"] == 2
    results = evaluate(settings, ConstantModel(1, 4), ada_target=-1)
    assert math.isnan(results["ts_ata"]) and results["max_ata"] == 1.0 and results["ts_ata_target"] == -1


def test_no_attack_metrics_for_other_attacks():
    for attack in ("label-flip-random", "nan-weights"):
        spec = attack_named(attack)
        assert spec is not None and spec.evaluation is None
    for attack in ("none", "label-flip-random", "nan-weights"):
        evaluation = evaluation_for(experiment_config({"attack": attack}), tiny_test_set(), 4)
        assert evaluation.metrics(ConstantModel(0, 4), np.zeros(20, np.int64), CPU, 8, -1) == {}
    ada = attack_named("ada")
    assert ada is not None and ada.evaluation is not None
