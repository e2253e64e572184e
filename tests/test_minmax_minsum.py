"""MinMax and MinSum (Shejwalkar & Houmansadr, NDSS 2021) against references computed here.

The references: the perturbations written from their definitions in numpy; γ* in closed form
(MinSum: Σ_i ‖μ − ∇_i‖² + r γ²‖∇p‖² = bound; MinMax: the smallest positive root over i of
‖μ − ∇_i + γ∇p‖² = bound); a hand transcription of the search (bracket doubling from γ_init, then
bisection to τ) over distances computed directly with scipy; a dense grid of γ; and a
transcription of the authors' step-halving rule, which cannot go above 2γ_init (the pitfall).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from clients.adversary import COLLUDING, OMNISCIENT, AdversaryContext, AdversaryView
from clients.agr_agnostic import (
    GAMMA_INIT,
    GAMMA_TOLERANCE,
    MINMAX_PERTURBATION,
    AgrAgnosticAttack,
    Constraint,
    largest_feasible,
)
from clients.attacks.minmax import ATTACK as MINMAX
from clients.attacks.minmax import MinMaxConstraint
from clients.attacks.minsum import ATTACK as MINSUM
from clients.attacks.minsum import MinSumConstraint
from clients.threat_model import ThreatModel
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.settings import ConfigError

KINDS = ("unit-vector", "sign", "std")
CONSTRAINTS: dict[str, Constraint] = {"minmax": MinMaxConstraint(), "minsum": MinSumConstraint()}


# ---------------------------------------------------------------- independent references (numpy)


def numpy_direction(reference: np.ndarray, kind: str) -> np.ndarray:
    mean = reference.mean(axis=0)
    if kind == "unit-vector":
        return -mean / np.linalg.norm(mean)
    if kind == "sign":
        return -np.sign(mean)
    return -reference.std(axis=0, ddof=1)


def candidate(reference: np.ndarray, kind: str, gamma: float) -> np.ndarray:
    return reference.mean(axis=0) + gamma * numpy_direction(reference, kind)


def holds(reference: np.ndarray, malicious: np.ndarray, which: str) -> bool:
    """The paper's constraint, from distances computed directly."""
    pairwise = cdist(reference, reference)
    distances = np.linalg.norm(reference - malicious, axis=1)
    if which == "minmax":
        return bool(distances.max() <= pairwise.max())
    return bool(np.sum(distances**2) <= np.max(np.sum(pairwise**2, axis=1)))


def closed_form_gamma(reference: np.ndarray, kind: str, which: str) -> float:
    mean, direction = reference.mean(axis=0), numpy_direction(reference, kind)
    pairwise = cdist(reference, reference, "sqeuclidean")
    offsets = mean - reference
    a = np.sum(offsets**2, axis=1)
    b = offsets @ direction
    c = float(direction @ direction)
    if which == "minsum":
        bound = pairwise.sum(axis=1).max()
        return float(np.sqrt((bound - a.sum()) / (len(reference) * c)))
    bound = pairwise.max()
    roots = (-b + np.sqrt(b**2 - c * (a - bound))) / c  # the positive root of c γ² + 2bγ + a − bound
    return float(roots.min())


def transcribed_search(reference: np.ndarray, kind: str, which: str) -> float:
    """The module's search written out again: double from γ_init while it holds, bisect to τ."""
    low, high = 0.0, GAMMA_INIT
    while holds(reference, candidate(reference, kind, high), which):
        low, high = high, 2 * high
    while high - low > GAMMA_TOLERANCE:
        middle = (low + high) / 2
        if holds(reference, candidate(reference, kind, middle), which):
            low = middle
        else:
            high = middle
    return low


def authors_step_halving(reference: np.ndarray, kind: str, which: str) -> float:
    """Algorithm 1 as the authors' code runs it: steps of γ_init/2, /4, ... around γ_init."""
    gamma, step, succeeded = GAMMA_INIT, GAMMA_INIT, 0.0
    while abs(succeeded - gamma) > GAMMA_TOLERANCE:
        if holds(reference, candidate(reference, kind, gamma), which):
            succeeded = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return succeeded


# ---------------------------------------------------------------- rounds


def benign_round(seed: int, rows: int = 8, dim: int = 40, drift: float = 0.3, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return drift + spread * rng.normal(size=(rows, dim))


def view_of(own: np.ndarray, benign: np.ndarray | None, num_sampled: int | None = None) -> AdversaryView:
    return AdversaryView(
        server_round=3,
        knowledge=OMNISCIENT if benign is not None else COLLUDING,
        own=torch.from_numpy(own),
        benign=None if benign is None else torch.from_numpy(benign),
        num_sampled=num_sampled or len(own) + (0 if benign is None else len(benign)),
        generator=torch.Generator().manual_seed(0),
    )


def forge(which: str, kind: str, own: np.ndarray, benign: np.ndarray | None) -> tuple[np.ndarray, float]:
    forged = AgrAgnosticAttack(CONSTRAINTS[which], kind).forge(view_of(own, benign))
    return forged.updates.numpy(), forged.parameters["gamma"]


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", KINDS)
def test_every_attacker_sends_the_mean_plus_gamma_times_the_perturbation(kind):
    benign, own = benign_round(1), benign_round(2, rows=3)
    updates, gamma = forge("minmax", kind, own, benign)
    assert updates.shape == own.shape and updates.dtype == np.float64
    np.testing.assert_allclose(updates, np.tile(candidate(benign, kind, gamma), (3, 1)), rtol=0, atol=1e-12)
    assert gamma > 0


@pytest.mark.parametrize("which", sorted(CONSTRAINTS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_gamma_is_the_largest_feasible_value_and_tight(which, kind, seed):
    benign = benign_round(seed, rows=6 + seed, dim=25 + seed)
    _, gamma = forge(which, kind, benign_round(seed + 10, rows=2), benign)
    # the hand transcription of the search makes the same decisions
    assert gamma == pytest.approx(transcribed_search(benign, kind, which), abs=1e-12)
    # the closed form: γ within τ below γ*
    optimum = closed_form_gamma(benign, kind, which)
    assert optimum - GAMMA_TOLERANCE < gamma <= optimum * (1 + 1e-12)
    # tightness: the constraint holds at γ and fails one τ further out
    assert holds(benign, candidate(benign, kind, gamma), which)
    assert not holds(benign, candidate(benign, kind, gamma + GAMMA_TOLERANCE), which)


@pytest.mark.parametrize("which", sorted(CONSTRAINTS))
def test_a_dense_grid_of_gamma_agrees_with_the_search(which):
    benign = benign_round(7, rows=9, dim=30)
    _, gamma = forge(which, "unit-vector", benign_round(8, rows=2), benign)
    grid = np.linspace(0.0, 2.0 * gamma, 2001)
    feasible = np.array([holds(benign, candidate(benign, "unit-vector", value), which) for value in grid])
    assert feasible[grid <= gamma].all()
    assert not feasible[grid >= gamma + GAMMA_TOLERANCE].any()
    assert feasible.any() and not feasible.all()


@pytest.mark.parametrize("which", sorted(CONSTRAINTS))
def test_the_search_is_not_capped_at_twice_gamma_init(which):
    # widely spread updates: the constraint holds far beyond 2 γ_init = 20
    benign = benign_round(11, rows=10, dim=50, drift=0.5, spread=40.0)
    optimum = closed_form_gamma(benign, "unit-vector", which)
    assert optimum > 2 * GAMMA_INIT
    _, gamma = forge(which, "unit-vector", benign_round(12, rows=2), benign)
    assert optimum - GAMMA_TOLERANCE < gamma <= optimum * (1 + 1e-12)
    # the authors' step-halving rule cannot get there
    assert authors_step_halving(benign, "unit-vector", which) < 2 * GAMMA_INIT < gamma


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(2, 12),
    dim=st.integers(1, 20),
    spread=st.floats(1e-3, 1e3),
    which=st.sampled_from(sorted(CONSTRAINTS)),
    kind=st.sampled_from(KINDS),
)
def test_property_gamma_matches_the_closed_form(seed, rows, dim, spread, which, kind):
    benign = benign_round(seed, rows=rows, dim=dim, drift=spread / 3, spread=spread)
    _, gamma = forge(which, kind, benign_round(seed + 1, rows=1), benign)
    optimum = closed_form_gamma(benign, kind, which)
    assert optimum * (1 - 1e-9) - GAMMA_TOLERANCE <= gamma <= optimum * (1 + 1e-9)


def test_perturbations_follow_their_definitions():
    benign = benign_round(13, rows=5, dim=12)
    for kind in KINDS:
        updates, gamma = forge("minsum", kind, benign_round(14, rows=1), benign)
        expected = benign.mean(axis=0) + gamma * numpy_direction(benign, kind)
        np.testing.assert_allclose(updates[0], expected, rtol=0, atol=1e-12)
    mean = benign.mean(axis=0)
    unit = (forge("minsum", "unit-vector", benign[:1], benign)[0][0] - mean) / forge(
        "minsum", "unit-vector", benign[:1], benign
    )[1]
    np.testing.assert_allclose(unit, -mean / np.linalg.norm(mean), atol=1e-12)


def test_colluding_attackers_use_their_own_updates_and_omniscient_ones_the_benign():
    benign, own = benign_round(15), benign_round(16, rows=3, drift=-0.5)
    omniscient, gamma_benign = forge("minmax", "sign", own, benign)
    colluding, gamma_own = forge("minmax", "sign", own, None)
    np.testing.assert_allclose(omniscient[0], candidate(benign, "sign", gamma_benign), atol=1e-12)
    np.testing.assert_allclose(colluding[0], candidate(own, "sign", gamma_own), atol=1e-12)
    assert gamma_own == pytest.approx(transcribed_search(own, "sign", "minmax"), abs=1e-12)


def test_degenerate_rounds():
    own = benign_round(17, rows=1)
    # one colluding attacker: the bound is 0, so m stays (within τ) at its own update
    updates, gamma = forge("minmax", "unit-vector", own, None)
    assert 0.0 <= gamma <= GAMMA_TOLERANCE
    np.testing.assert_allclose(updates[0], own[0], atol=GAMMA_TOLERANCE)
    # the standard deviation of one update is zero: nothing to push along
    assert forge("minsum", "std", own, None)[1] == 0.0
    # a zero mean has no unit vector
    symmetric = np.vstack([own, -own])
    assert forge("minmax", "unit-vector", symmetric, None)[1] == 0.0
    # an omniscient round without benign clients: the honest updates go out unchanged
    updates, gamma = forge("minmax", "sign", own, np.zeros((0, own.shape[1])))
    assert gamma == 0.0 and np.array_equal(updates, own)


def test_an_unbounded_constraint_is_refused():
    with pytest.raises(ArithmeticError, match="not bounded"):
        largest_feasible(lambda gamma: True, 1.0, 1e-3)


def test_minmax_shifts_the_mean_at_least_as_far_as_any_ipm_update_within_the_same_bound():
    # IPM sends -ε μ, on the same line as MinMax's unit-vector update μ − γ μ/‖μ‖ (γ = (1 + ε)‖μ‖):
    # every IPM update that keeps MinMax's bound has an inner product with μ at least MinMax's
    benign = benign_round(19, rows=10, dim=30, drift=1.0)
    mean = benign.mean(axis=0)
    updates, _ = forge("minmax", "unit-vector", benign_round(20, rows=2), benign)
    minmax_shift = float(updates[0] @ mean)
    stealthy_ipm = [epsilon for epsilon in np.linspace(0.0, 5.0, 501) if holds(benign, -epsilon * mean, "minmax")]
    assert stealthy_ipm, "no IPM update within the bound: the comparison would be empty"
    for epsilon in stealthy_ipm:
        assert float(-epsilon * mean @ mean) >= minmax_shift - 1e-9
    # and the strongest of them is weaker: MinMax's bound is tight, the grid's is not
    assert float(-max(stealthy_ipm) * mean @ mean) > minmax_shift
    # FedAvg over the round (8 benign, 2 attackers) moves against μ more under MinMax
    fedavg_minmax = np.vstack([benign, updates]).mean(axis=0) @ mean
    fedavg_ipm = np.vstack([benign, np.tile(-max(stealthy_ipm) * mean, (2, 1))]).mean(axis=0) @ mean
    assert fedavg_minmax < fedavg_ipm


def test_specs_and_settings():
    for spec in (MINMAX, MINSUM):
        assert spec.knowledge == (OMNISCIENT, COLLUDING)
        assert [setting.key for setting in spec.settings] == ["minmax-perturbation", "attack-knowledge"]
        assert MINMAX_PERTURBATION in spec.settings
    config = experiment_config(
        {"num-clients": 7, "malicious-ids": "5,6", "update-attack": "minsum", "minmax-perturbation": "std"}
    )
    context = AdversaryContext(config=config, threat=ThreatModel.from_config(config), knowledge=OMNISCIENT)
    assert MINSUM.adversary is not None
    attack = MINSUM.adversary(context)
    assert isinstance(attack, AgrAgnosticAttack) and attack.kind == "std"
    assert isinstance(attack.constraint, MinSumConstraint)
    with pytest.raises(ConfigError) as refused:
        experiment_config({"update-attack": "minmax", "minmax-perturbation": "diagonal"})
    assert str(refused.value).startswith("minmax-perturbation: bad value 'diagonal'")
