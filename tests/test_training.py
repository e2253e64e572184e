"""Local training: the FedProx proximal term, determinism, learning, and the pull towards the anchor."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.training import LocalTraining, make_optimizer, proximal_term, train_locally

CPU = torch.device("cpu")


def tiny_model(seed: int = 0) -> SplitClassifier:
    torch.manual_seed(seed)
    return SplitClassifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 2))


def separable_data(n: int = 64, seed: int = 0) -> LabeledTensors:
    """Inputs (n, 1, 2, 2); the class is whether the first pixel is above 0.5 (with a margin)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 2, generator=generator)
    y = (torch.arange(n) % 2).to(torch.int64)
    x[:, 0, 0, 0] = torch.where(y == 1, 0.8 + 0.2 * x[:, 0, 0, 0], 0.2 * x[:, 0, 0, 0])
    return LabeledTensors(x=x, y=y)


def parameters_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(torch.sum((x - y) ** 2)) for x, y in zip(a, b, strict=True)))


def full_loss(model: nn.Module, data: LabeledTensors) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(data.x), data.y))


def test_proximal_term_value_and_gradient_match_hand_computation():
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    anchor = [p.detach() + torch.randn(p.shape, generator=generator) for p in model.parameters()]
    mu = 0.3

    term = proximal_term(model, anchor, mu)
    term.backward()

    # mu / 2 * sum ||w - w0||^2, in float64 numpy.
    expected = (
        0.5
        * mu
        * sum(
            float(np.sum((p.detach().numpy().astype(np.float64) - a.numpy().astype(np.float64)) ** 2))
            for p, a in zip(model.parameters(), anchor, strict=True)
        )
    )
    assert float(term.detach()) == pytest.approx(expected, rel=1e-5)
    for parameter, reference in zip(model.parameters(), anchor, strict=True):
        assert parameter.grad is not None
        assert torch.allclose(parameter.grad, mu * (parameter.detach() - reference), atol=1e-6)


def test_proximal_term_is_zero_at_the_anchor():
    model = tiny_model()
    anchor = parameters_of(model)
    term = proximal_term(model, anchor, 5.0)
    term.backward()
    assert float(term) == 0.0
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_fedprox_steps_match_a_hand_written_sgd_loop():
    """Full-batch SGD, two epochs: step 1 sees only the loss, step 2 also mu * (w1 - w0)."""
    data = separable_data(16)
    mu, lr = 2.0, 0.1
    model = tiny_model()
    reference = copy.deepcopy(model)
    settings = LocalTraining(epochs=2, batch_size=len(data), learning_rate=lr, proximal_mu=mu)

    reported = train_locally(model, data, settings, CPU, seed=0)

    w0 = parameters_of(reference)
    losses = []
    for _ in range(2):
        reference.zero_grad()
        loss = nn.functional.cross_entropy(reference(data.x), data.y)
        losses.append(float(loss))
        loss.backward()
        with torch.no_grad():
            for p, anchor in zip(reference.parameters(), w0, strict=True):
                p -= lr * (p.grad + mu * (p - anchor))
    for trained, expected in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(trained, expected, atol=1e-6)
    # The reported loss is the mean cross-entropy, without the proximal term.
    assert reported == pytest.approx(np.mean(losses), rel=1e-5)


def test_train_locally_is_deterministic_for_a_seed():
    data = separable_data()
    settings = LocalTraining(epochs=2, batch_size=8, learning_rate=0.1, momentum=0.9)
    first, second, other = tiny_model(), tiny_model(), tiny_model()

    loss_first = train_locally(first, data, settings, CPU, seed=7)
    loss_second = train_locally(second, data, settings, CPU, seed=7)
    train_locally(other, data, settings, CPU, seed=8)

    assert loss_first == loss_second
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_loss_decreases_on_a_separable_problem():
    data = separable_data()
    model = tiny_model()
    settings = LocalTraining(epochs=1, batch_size=8, learning_rate=0.2, momentum=0.9)
    before = full_loss(model, data)
    epoch_losses = [train_locally(model, data, settings, CPU, seed=epoch) for epoch in range(6)]
    after = full_loss(model, data)

    assert epoch_losses[-1] < epoch_losses[0]
    assert after < 0.5 * before
    with torch.no_grad():
        accuracy = float((model(data.x).argmax(1) == data.y).float().mean())
    assert accuracy == 1.0


def test_large_proximal_mu_keeps_weights_near_the_start():
    data = separable_data()
    start = tiny_model()
    moved = {}
    for mu in (0.0, 10.0):
        model = copy.deepcopy(start)
        settings = LocalTraining(epochs=5, batch_size=8, learning_rate=0.05, proximal_mu=mu)
        train_locally(model, data, settings, CPU, seed=0)
        moved[mu] = distance(parameters_of(model), parameters_of(start))
    assert moved[0.0] > 0
    assert moved[10.0] < 0.5 * moved[0.0]


def test_empty_data_returns_nan_and_leaves_the_model_alone():
    model = tiny_model()
    before = parameters_of(model)
    empty = LabeledTensors(x=torch.zeros(0, 1, 2, 2), y=torch.zeros(0, dtype=torch.int64))
    loss = train_locally(model, empty, LocalTraining(epochs=1, batch_size=4, learning_rate=0.1), CPU, seed=0)
    assert math.isnan(loss)
    assert distance(parameters_of(model), before) == 0.0


def test_make_optimizer_follows_the_setting():
    model = tiny_model()
    adam = make_optimizer(model, LocalTraining(epochs=1, batch_size=1, learning_rate=0.01, optimizer="adam"))
    sgd = make_optimizer(model, LocalTraining(epochs=1, batch_size=1, learning_rate=0.01, momentum=0.5))
    assert isinstance(adam, torch.optim.Adam)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.5
    assert sgd.param_groups[0]["lr"] == 0.01
