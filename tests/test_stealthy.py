"""Stealthy model poisoning (Bhagoji et al., 2019) against hand computations on a linear model.

On a linear softmax classifier z = W x + b the gradient of the mean cross-entropy is
(softmax(z) − onehot(y))ᵀ x / N for W and the mean of softmax(z) − onehot(y) for b; the stealth
term (ρ/2)‖w − w_ben‖² adds ρ (w − w_ben). Every expected value below is computed from these
formulas in float64 numpy, independently of the module.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import fl_poison_run, read_rows
from torch import nn

from clients.attacks.stealthy import (
    StealthyClient,
    boosted_malicious_step,
    malicious_examples,
    stealth_data,
    stealth_step,
)
from clients.base import TrainingJob
from clients.benign import BenignClient
from clients.registry import behaviour_for, evaluation_for
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.data import DatasetInfo, LabeledTensors
from fl_poison.core.models import SplitClassifier, small_cnn
from fl_poison.core.training import LocalTraining
from fl_poison.core.weights import float_state

CPU = torch.device("cpu")
WEIGHT = np.array([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6], [-0.1, 0.2, 0.3]])
BIAS = np.array([0.05, -0.1, 0.0])
INPUTS = np.array([[1.0, 0.5, -0.5], [0.2, -1.0, 0.3], [-0.4, 0.8, 1.0], [0.6, 0.1, -0.2], [0.9, -0.3, 0.4]])
LABELS = np.array([0, 1, 1, 0, 1])
# Two samples of the source class 2, to be classified as the target 0.
SOURCE_INPUTS = np.array([[0.3, 0.3, 0.9], [-0.2, 0.5, 0.7]])
SOURCE, TARGET = 2, 0


def linear_model(weight: np.ndarray, bias: np.ndarray) -> SplitClassifier:
    classifier = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        classifier.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return SplitClassifier(nn.Flatten(), classifier)


def weights_of(model: SplitClassifier) -> tuple[np.ndarray, np.ndarray]:
    layer = model.classifier
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


def tensors(x: np.ndarray, y: np.ndarray) -> LabeledTensors:
    return LabeledTensors(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64))


def ce_gradient(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the mean cross-entropy of softmax(x Wᵀ + b) by hand."""
    logits = x @ weight.T + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    residual = probabilities - np.eye(weight.shape[0])[y]
    return residual.T @ x / len(x), residual.mean(axis=0)


def sgd(model: nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=learning_rate)


# ---------------------------------------------------------------- one step of each objective


def test_a_stealth_step_descends_the_clean_loss_plus_the_distance_to_the_benign_update():
    rho, learning_rate = 0.5, 0.1
    benign_weight, benign_bias = WEIGHT + 0.3, BIAS - 0.2  # w_ben = w_G + δ̄_ben
    model = linear_model(WEIGHT, BIAS)
    benign = [torch.tensor(benign_weight, dtype=torch.float32), torch.tensor(benign_bias, dtype=torch.float32)]
    loss = stealth_step(model, sgd(model, learning_rate), tensors(INPUTS, LABELS), benign, rho)
    grad_weight, grad_bias = ce_gradient(WEIGHT, BIAS, INPUTS, LABELS)
    # ∇ (ρ/2)‖δ − δ̄_ben‖² = ρ (w − w_ben): the distance pulls w towards w_ben
    expected_weight = WEIGHT - learning_rate * (grad_weight + rho * (WEIGHT - benign_weight))
    expected_bias = BIAS - learning_rate * (grad_bias + rho * (BIAS - benign_bias))
    weight, bias = weights_of(model)
    np.testing.assert_allclose(weight, expected_weight, atol=1e-6)
    np.testing.assert_allclose(bias, expected_bias, atol=1e-6)
    # the reported loss is the clean cross-entropy alone
    logits = INPUTS @ WEIGHT.T + BIAS
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_softmax[np.arange(len(LABELS)), LABELS].mean(), abs=1e-6)
    # without the term the step differs by exactly lr ρ (w − w_ben)
    plain = linear_model(WEIGHT, BIAS)
    stealth_step(plain, sgd(plain, learning_rate), tensors(INPUTS, LABELS), benign, 0.0)
    np.testing.assert_allclose(weights_of(plain)[0] - weight, learning_rate * rho * (WEIGHT - benign_weight), atol=1e-6)


@pytest.mark.parametrize("boost", [1.0, 4.0, 10.0])
def test_boosting_multiplies_the_malicious_step_exactly(boost):
    learning_rate = 0.1
    examples = malicious_examples(
        tensors(np.vstack([INPUTS, SOURCE_INPUTS]), np.array([*LABELS, SOURCE, SOURCE])), SOURCE, TARGET
    )
    assert examples.y.tolist() == [TARGET, TARGET]
    model = linear_model(WEIGHT, BIAS)
    boosted_malicious_step(model, sgd(model, learning_rate), examples, boost)
    grad_weight, grad_bias = ce_gradient(WEIGHT, BIAS, SOURCE_INPUTS, np.array([TARGET, TARGET]))
    weight, bias = weights_of(model)
    np.testing.assert_allclose(weight - WEIGHT, -boost * learning_rate * grad_weight, atol=1e-6)
    np.testing.assert_allclose(bias - BIAS, -boost * learning_rate * grad_bias, atol=1e-6)


# ---------------------------------------------------------------- the whole round


def job_for(model: SplitClassifier, data: LabeledTensors, training: LocalTraining, seed: int = 17) -> TrainingJob:
    return TrainingJob(model=model, data=data, training=training, device=CPU, seed=seed, server_round=1, partition_id=0)


def attacker_data() -> LabeledTensors:
    return tensors(np.vstack([INPUTS[:4], SOURCE_INPUTS]), np.array([*LABELS[:4], SOURCE, SOURCE]))


def test_one_block_is_a_boosted_malicious_step_then_a_stealth_step_towards_the_honest_update():
    # 4 clean samples, batch size 4, one epoch, one stealth step per block: exactly one block
    learning_rate, rho, boost = 0.2, 0.3, 5.0
    training = LocalTraining(epochs=1, batch_size=4, learning_rate=learning_rate)
    data = attacker_data()
    honest = BenignClient().run(job_for(linear_model(WEIGHT, BIAS), data, training))  # δ̄_ben, by definition
    benign_weight, benign_bias = weights_of(honest.model)
    update = StealthyClient(SOURCE, TARGET, boost, rho, benign_steps=1).run(
        job_for(linear_model(WEIGHT, BIAS), data, training)
    )
    # by hand: w̃ = w_G − λ η ∇CE_mal(w_G); w = w̃ − η (∇CE_clean(w̃) + ρ (w̃ − w_ben))
    grad_weight, grad_bias = ce_gradient(WEIGHT, BIAS, SOURCE_INPUTS, np.array([TARGET, TARGET]))
    boosted_weight = WEIGHT - boost * learning_rate * grad_weight
    boosted_bias = BIAS - boost * learning_rate * grad_bias
    grad_weight, grad_bias = ce_gradient(boosted_weight, boosted_bias, INPUTS[:4], LABELS[:4])
    expected_weight = boosted_weight - learning_rate * (grad_weight + rho * (boosted_weight - benign_weight))
    expected_bias = boosted_bias - learning_rate * (grad_bias + rho * (boosted_bias - benign_bias))
    weight, bias = weights_of(update.model)
    np.testing.assert_allclose(weight, expected_weight, atol=1e-6)
    np.testing.assert_allclose(bias, expected_bias, atol=1e-6)
    assert update.malicious and update.attacked and update.attack_target == TARGET
    assert update.num_examples == len(data)


def test_blocks_alternate_benign_steps_stealth_steps_per_malicious_step():
    # 8 clean samples, batch 2, one epoch: 4 stealth steps; 3 per block -> 2 blocks, so 2 malicious steps,
    # replayed by hand (ρ = 0 here: the distance term is tested above) in the module's batch order.
    learning_rate, boost = 0.1, 3.0
    clean_x = np.vstack([INPUTS, -INPUTS[:3]])
    clean_labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    x = np.vstack([clean_x, SOURCE_INPUTS])
    data = tensors(x, np.array([*clean_labels, SOURCE, SOURCE]))
    training = LocalTraining(epochs=1, batch_size=2, learning_rate=learning_rate)
    client = StealthyClient(SOURCE, TARGET, boost, 0.0, benign_steps=3)
    update = client.run(job_for(linear_model(np.zeros((3, 3)), np.zeros(3)), data, training))
    weight, bias = np.zeros((3, 3)), np.zeros(3)
    generator = torch.Generator().manual_seed(17)
    order = torch.randperm(8, generator=generator).numpy()
    batches = [order[start : start + 2] for start in range(0, 8, 2)]
    for block in range(2):
        grad_weight, grad_bias = ce_gradient(weight, bias, SOURCE_INPUTS, np.array([TARGET, TARGET]))
        weight, bias = weight - boost * learning_rate * grad_weight, bias - boost * learning_rate * grad_bias
        for rows in batches[block * 3 : (block + 1) * 3]:
            grad_weight, grad_bias = ce_gradient(weight, bias, clean_x[rows], clean_labels[rows])
            weight, bias = weight - learning_rate * grad_weight, bias - learning_rate * grad_bias
    sent_weight, sent_bias = weights_of(update.model)
    np.testing.assert_allclose(sent_weight, weight, atol=1e-6)
    np.testing.assert_allclose(sent_bias, bias, atol=1e-6)


def cnn_job(seed: int) -> TrainingJob:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(3)
    data = LabeledTensors(torch.rand(40, 1, 8, 8, generator=generator), torch.arange(40) % 4)
    return job_for(
        small_cnn(1, 8, 4), data, LocalTraining(epochs=2, batch_size=8, learning_rate=0.1, momentum=0.9), seed
    )


def test_the_same_seed_sends_the_same_update_and_another_seed_another():
    client = StealthyClient(SOURCE, TARGET, boost=10.0, rho=1e-4, benign_steps=2)
    first = float_state(client.run(cnn_job(seed=11)).model)
    again = float_state(client.run(cnn_job(seed=11)).model)
    other = float_state(client.run(cnn_job(seed=12)).model)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)


def distance_to_honest(rho: float) -> float:
    job = cnn_job(seed=5)
    reference = float_state(job.model)
    honest = float_state(BenignClient().run(copy.deepcopy(job)).model)
    sent = float_state(StealthyClient(SOURCE, TARGET, boost=10.0, rho=rho, benign_steps=2).run(job).model)
    return math.sqrt(sum(float(torch.sum((sent[n] - reference[n] - (honest[n] - reference[n])) ** 2)) for n in sent))


def test_the_stealth_term_brings_the_update_closer_to_the_benign_estimate():
    assert distance_to_honest(5.0) < distance_to_honest(0.0)


def test_an_attacker_without_source_samples_trains_honestly():
    training = LocalTraining(epochs=1, batch_size=2, learning_rate=0.1)
    data = tensors(INPUTS, LABELS)  # classes 0 and 1 only
    update = StealthyClient(SOURCE, TARGET, 10.0, 1e-4, 10).run(job_for(linear_model(WEIGHT, BIAS), data, training))
    honest = BenignClient().run(job_for(linear_model(WEIGHT, BIAS), data, training))
    assert update.malicious and not update.attacked
    np.testing.assert_array_equal(weights_of(update.model)[0], weights_of(honest.model)[0])


def test_the_stealth_data_leaves_out_the_attack_examples():
    data = attacker_data()
    clean = stealth_data(data, SOURCE)
    assert clean.y.tolist() == LABELS[:4].tolist()
    assert len(malicious_examples(data, SOURCE, TARGET)) == 2


# ---------------------------------------------------------------- settings and metrics

INFO = DatasetInfo(num_classes=4, input_shape=(1, 8, 8))


def test_auto_boost_is_clients_per_round_over_attackers_sampled():
    # 4 clients, all sampled every round, 2 attackers: λ = 4 / 2
    config = experiment_config({"num-clients": 4, "malicious-ids": "1,2", "attack": "stealthy", "target-class": 1})
    behaviour = behaviour_for(config, 1, 2, INFO)
    assert behaviour == StealthyClient(source=2, target=1, boost=2.0, rho=1e-4, benign_steps=10)
    given = experiment_config(
        {"num-clients": 4, "malicious-ids": "1", "attack": "stealthy", "stealthy-boost": 7, "stealthy-rho": 0.01}
    )
    assert behaviour_for(given, 1, 2, INFO) == StealthyClient(2, 0, 7.0, 0.01, 10)


def test_the_server_measures_the_target_accuracy_of_the_source_class():
    config = experiment_config({"num-clients": 4, "malicious-ids": "1", "attack": "stealthy"})  # source 2 -> target 0
    labels = torch.tensor([2, 2, 2, 0, 1, 3])
    predictions = np.array([0, 0, 2, 0, 1, 1])
    test_set = LabeledTensors(torch.zeros(6, 1, 8, 8), labels)
    metrics = evaluation_for(config, test_set, 4).metrics(small_cnn(1, 8, 4), predictions, CPU, 6, 0)
    assert metrics["ts_ata"] == pytest.approx(2 / 3)
    assert metrics["max_ata"] == pytest.approx(2 / 3)
    assert metrics["mta"] == pytest.approx(2 / 3)  # outside the source class: 0 ok, 1 ok, 3 -> 1 wrong


# ---------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_stealthy_run_reports_its_target_accuracy_and_update_norms(warm_env: dict[str, str], tmp_path: Path) -> None:
    completed = fl_poison_run(
        warm_env,
        "attack=stealthy",
        "malicious-ids=1",
        "num-clients=5",
        "num-rounds=3",
        f"output-dir={tmp_path}",
        "run-name=stealthy",
        "save-model=false",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    folder = tmp_path / "stealthy"
    clients = read_rows(folder / "clients.csv")
    attacker = [row for row in clients if row["partition_id"] == "1"]
    benign = [row for row in clients if row["partition_id"] != "1"]
    assert len(attacker) == 3 and all(row["attacked"] == "1" and row["attack_target"] == "0" for row in attacker)
    assert all(row["attacked"] == "0" for row in benign)
    summary = json.loads((folder / "summary.json").read_text())
    assert {"mta", "ts_ata", "max_ata"} <= set(summary)
    assert 0.0 <= summary["ts_ata"] <= 1.0
    rounds = read_rows(folder / "rounds.csv")
    assert [row["round"] for row in rounds] == ["0", "1", "2", "3"]  # round 0: the initial model
    assert all(0.0 <= float(row["ts_ata"]) <= 1.0 for row in rounds)
    attacker_norms = [float(row["norm_before"]) for row in attacker]
    benign_norms = [float(row["norm_before"]) for row in benign]
    assert all(math.isfinite(norm) and norm > 0 for norm in attacker_norms + benign_norms)
    print(
        f"stealthy e2e: ts_ata {summary['ts_ata']:.3f}; attacker norms {[round(n, 3) for n in attacker_norms]}; "
        f"benign norms {min(benign_norms):.3f} .. {max(benign_norms):.3f}"
    )
