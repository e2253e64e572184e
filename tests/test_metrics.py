"""Clean-task metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_poison.core.metrics import classification_metrics

# Seven samples, three classes. Predicted class = argmax of the row.
#   sample  label  probabilities        prediction
#   s0      0      [0.60, 0.30, 0.10]   0  right
#   s1      0      [0.50, 0.10, 0.40]   0  right
#   s2      0      [0.20, 0.70, 0.10]   1  wrong
#   s3      1      [0.10, 0.80, 0.10]   1  right
#   s4      1      [0.40, 0.30, 0.30]   0  wrong
#   s5      2      [0.25, 0.15, 0.60]   2  right
#   s6      2      [0.50, 0.20, 0.30]   0  wrong
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array(
    [
        [0.60, 0.30, 0.10],
        [0.50, 0.10, 0.40],
        [0.20, 0.70, 0.10],
        [0.10, 0.80, 0.10],
        [0.40, 0.30, 0.30],
        [0.25, 0.15, 0.60],
        [0.50, 0.20, 0.30],
    ]
)


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall)


def test_three_class_example_by_hand():
    metrics = classification_metrics(LABELS, PROBABILITIES)

    # 4 of 7 right (s0, s1, s3, s5).
    assert metrics["accuracy"] == pytest.approx(4 / 7)

    # Confusion matrix (rows = true, columns = predicted):
    #   true 0: [2, 1, 0]   true 1: [1, 1, 0]   true 2: [1, 0, 1]
    # class 0: TP 2, FP 2 (s4, s6), FN 1 (s2) -> P 2/4, R 2/3
    # class 1: TP 1, FP 1 (s2), FN 1 (s4)     -> P 1/2, R 1/2
    # class 2: TP 1, FP 0, FN 1 (s6)          -> P 1,   R 1/2
    expected_f1 = (f1(2 / 4, 2 / 3) + f1(1 / 2, 1 / 2) + f1(1, 1 / 2)) / 3  # (4/7 + 1/2 + 2/3) / 3
    assert metrics["macro_f1"] == pytest.approx(expected_f1)

    # Cohen's kappa: p_o = 4/7; true marginals [3, 2, 2]/7, predicted marginals [4, 2, 1]/7,
    # p_e = (3*4 + 2*2 + 2*1) / 49 = 18/49; kappa = (28/49 - 18/49) / (1 - 18/49) = 10/31.
    assert metrics["kappa"] == pytest.approx(10 / 31)

    # One-vs-rest AUC = share of (positive, negative) pairs ranked right, ties count 1/2.
    # class 0: positives .60 .50 .20 vs negatives .10 .40 .25 .50
    #          .60 beats 4; .50 beats 3 and ties 1 -> 3.5; .20 beats 1   -> 8.5 / 12
    # class 1: positives .80 .30 vs negatives .30 .10 .70 .15 .20
    #          .80 beats 5; .30 beats 3 and ties 1 -> 3.5               -> 8.5 / 10
    # class 2: positives .60 .30 vs negatives .10 .40 .10 .10 .30
    #          .60 beats 5; .30 beats 3 and ties 1 -> 3.5               -> 8.5 / 10
    assert metrics["roc_auc"] == pytest.approx((8.5 / 12 + 8.5 / 10 + 8.5 / 10) / 3)

    # Cross-entropy: minus the mean log-probability of the true class.
    true_class_probabilities = [0.60, 0.50, 0.20, 0.80, 0.30, 0.60, 0.30]
    assert metrics["loss"] == pytest.approx(-sum(math.log(p) for p in true_class_probabilities) / 7)

    # Per-class accuracy is the recall of each class.
    assert metrics["class_0_accuracy"] == pytest.approx(2 / 3)
    assert metrics["class_1_accuracy"] == pytest.approx(1 / 2)
    assert metrics["class_2_accuracy"] == pytest.approx(1 / 2)

    assert set(metrics) == {
        "accuracy",
        "macro_f1",
        "kappa",
        "roc_auc",
        "loss",
        "class_0_accuracy",
        "class_1_accuracy",
        "class_2_accuracy",
    }


def test_absent_class_gets_nan_accuracy_and_is_left_out_of_macro_scores():
    #   label  probabilities      prediction
    #   0      [0.7, 0.2, 0.1]    0 right
    #   0      [0.2, 0.3, 0.5]    2 wrong
    #   1      [0.4, 0.5, 0.1]    1 right
    #   1      [0.6, 0.3, 0.1]    0 wrong
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.4, 0.5, 0.1], [0.6, 0.3, 0.1]])
    metrics = classification_metrics(labels, probabilities)

    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert math.isnan(metrics["class_2_accuracy"])
    assert metrics["class_0_accuracy"] == pytest.approx(1 / 2)
    assert metrics["class_1_accuracy"] == pytest.approx(1 / 2)
    # Macro F1 over the present classes 0 and 1:
    # class 0: TP 1, FP 1, FN 1 -> F1 1/2; class 1: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3.
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # AUC over present classes: class 0: positives .7 .2 vs negatives .4 .6 -> 2/4;
    # class 1: positives .5 .3 vs negatives .2 .3 -> (2 + 1 + 0.5)/4.
    assert metrics["roc_auc"] == pytest.approx((2 / 4 + 3.5 / 4) / 2)
    # kappa: p_o = 1/2; true marginals [2, 2, 0]/4, predicted [2, 1, 1]/4; p_e = 6/16.
    assert metrics["kappa"] == pytest.approx((1 / 2 - 6 / 16) / (1 - 6 / 16))
    assert metrics["loss"] == pytest.approx(-(math.log(0.7) + math.log(0.2) + math.log(0.5) + math.log(0.3)) / 4)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns about a single label
def test_single_present_class_gives_nan_auc():
    labels = np.array([1, 1, 1])
    probabilities = np.array([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]])
    metrics = classification_metrics(labels, probabilities)
    assert math.isnan(metrics["roc_auc"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["class_1_accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(metrics["class_0_accuracy"]) and math.isnan(metrics["class_2_accuracy"])


def test_binary_problem():
    # label  p(1)   prediction
    # 0      0.20   0 right
    # 1      0.60   1 right
    # 1      0.70   1 right
    # 0      0.65   1 wrong
    labels = np.array([0, 1, 1, 0])
    p1 = np.array([0.20, 0.60, 0.70, 0.65])
    metrics = classification_metrics(labels, np.stack([1 - p1, p1], axis=1))
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    # positives .60 .70 vs negatives .20 .65: .60 beats 1, .70 beats 2 -> 3/4.
    assert metrics["roc_auc"] == pytest.approx(3 / 4)
    # class 0: TP 1, FP 0, FN 1 -> F1 2/3; class 1: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 4/5.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # p_o = 3/4; true marginals [2, 2]/4, predicted [1, 3]/4; p_e = (2 + 6)/16 = 1/2 -> kappa 1/2.
    assert metrics["kappa"] == pytest.approx(1 / 2)


def test_zero_probability_on_the_true_class_gives_a_finite_loss():
    metrics = classification_metrics(np.array([0, 1]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    # -(log 1 + log 1e-12) / 2 with probabilities clipped at 1e-12.
    assert metrics["loss"] == pytest.approx(-math.log(1e-12) / 2, rel=1e-6)
    assert metrics["class_1_accuracy"] == 0.0
