"""Fang et al.'s attacks on Krum and on trimmed mean / median (USENIX Security 2020) against references computed here.

Krum attack: the module's Krum rule against :mod:`strategies.krum` and ByzFL's Krum (ByzFL counts
n − f − 1 neighbours, so its ``f + 1`` is the paper's n − f − 2 at f); the bound on λ worked out by
hand on a small round; the λ halving against a transcription in numpy that builds the forged
updates and asks :func:`strategies.krum.krum_choice`. Trimmed-mean attack: the intervals worked out
by hand, every draw inside its interval, and the effect on ByzFL's median and trimmed mean.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from byzfl import Krum as ByzflKrum
from byzfl import Median as ByzflMedian
from byzfl import TrMean as ByzflTrMean
from scipy.spatial.distance import cdist

from clients.adversary import COLLUDING, OMNISCIENT, AdversaryContext, AdversaryView
from clients.attacks.fang_krum import ATTACK as FANG_KRUM
from clients.attacks.fang_krum import (
    LAMBDA_THRESHOLD,
    FangKrum,
    krum_choice,
    lambda_bound,
    squared_distances,
    supporter_offsets,
)
from clients.attacks.fang_trmean import ATTACK as FANG_TRMEAN
from clients.attacks.fang_trmean import FangTrimmedMean, full_knowledge_intervals
from clients.threat_model import ThreatModel
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.settings import ConfigError
from strategies.krum import krum_choice as strategies_krum_choice


def view_of(own: np.ndarray, benign: np.ndarray | None, seed: int = 0) -> AdversaryView:
    return AdversaryView(
        server_round=2,
        knowledge=OMNISCIENT if benign is not None else COLLUDING,
        own=torch.from_numpy(own),
        benign=None if benign is None else torch.from_numpy(benign),
        num_sampled=len(own) + (0 if benign is None else len(benign)),
        generator=torch.Generator().manual_seed(seed),
    )


def gaussian_round(seed: int, rows: int, dim: int, drift: float = 0.2, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return drift + spread * rng.normal(size=(rows, dim))


# ---------------------------------------------------------------- Krum attack


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_byzantine", [1, 2, 3])
def test_krum_choice_is_the_rule_of_strategies_krum_and_byzfl(seed, num_byzantine):
    rows = gaussian_round(seed, rows=10, dim=6)
    rows[3] = rows[7]  # a duplicate pair: ties go to the lower index
    distances = torch.from_numpy(cdist(rows, rows, "sqeuclidean"))
    chosen = krum_choice(distances, num_byzantine)
    assert chosen == strategies_krum_choice(distances, num_byzantine, range(10))
    np.testing.assert_array_equal(ByzflKrum(f=num_byzantine + 1)(rows), rows[chosen])


def test_krum_choice_on_few_rows_counts_at_least_one_neighbour():
    rows = np.array([[0.0], [1.0], [1.5], [10.0]])
    distances = torch.from_numpy(cdist(rows, rows, "sqeuclidean"))
    # n − f − 2 = 0 for f = 2: one neighbour each; rows 1 and 2 tie at 0.25, the lower index wins
    assert krum_choice(distances, 2) == strategies_krum_choice(distances, 2, range(4)) == 1


def test_squared_distances_match_scipy():
    rows = gaussian_round(1, rows=7, dim=50, drift=3.0)
    np.testing.assert_allclose(
        squared_distances(torch.from_numpy(rows)).numpy(), cdist(rows, rows, "sqeuclidean"), rtol=1e-12, atol=1e-12
    )


def test_lambda_bound_worked_by_hand():
    # five benign updates in one dimension, one attacker: m = 6, m − 2c − 1 = 3, Γ_i: the 3 nearest
    # sums of distances to the 3 nearest others: 1 → 6, 2 → 4, 3 → 4, 4 → 6, 10 → 21; min 4
    # λ_max = 4 / (3 · √1) + max |r_i| / √1 = 4/3 + 10
    reference = torch.tensor([[1.0], [2.0], [3.0], [4.0], [10.0]], dtype=torch.float64)
    norms = torch.linalg.vector_norm(reference, dim=1)
    assert lambda_bound(squared_distances(reference), norms, 1, 1) == pytest.approx(4 / 3 + 10, rel=1e-12)
    # two attackers and only three reference updates: m − 2c − 1 = 0, the first term is left out
    assert lambda_bound(squared_distances(reference[:3]), norms[:3], 1, 2) == pytest.approx(3.0)


def numpy_bound(reference: np.ndarray, attackers: int) -> float:
    size, dim = len(reference) + attackers, reference.shape[1]
    farthest = np.linalg.norm(reference, axis=1).max() / math.sqrt(dim)
    if size - 2 * attackers - 1 <= 0:
        return float(farthest)
    distances = cdist(reference, reference)
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, : size - attackers - 2].sum(axis=1)
    return float(nearest.min() / ((size - 2 * attackers - 1) * math.sqrt(dim)) + farthest)


def transcribed_krum_attack(
    reference: np.ndarray, attackers: int, offsets: np.ndarray
) -> tuple[float, bool, np.ndarray, int]:
    """The paper's λ halving written out: forged rows built explicitly, Krum from strategies.krum."""
    direction = np.sign(reference.mean(axis=0))
    scale, halvings = numpy_bound(reference, attackers), 0
    while True:
        forged = -scale * direction + offsets
        everything = np.vstack([reference, forged])
        distances = torch.from_numpy(cdist(everything, everything, "sqeuclidean"))
        selected = strategies_krum_choice(distances, attackers, range(len(everything))) >= len(reference)
        if selected or scale < LAMBDA_THRESHOLD:
            return scale, selected, forged, halvings
        scale /= 2
        halvings += 1


def forge_krum(own: np.ndarray, benign: np.ndarray | None, epsilon: float = 0.0, seed: int = 0):
    forged = FangKrum(epsilon).forge(view_of(own, benign, seed))
    return forged.updates.numpy(), dict(forged.parameters)


@pytest.mark.parametrize(
    ("drift", "spread", "attackers", "selected"),
    [
        (0.05, 1.0, 3, True),  # spread-out benign updates: λ comes down from the bound until Krum selects
        (0.0, 1.0, 2, True),
        (1.0, 0.05, 2, False),  # a tight benign cluster away from 0: no λ ≥ 1e-5 gets selected
    ],
)
def test_lambda_halving_matches_the_transcription(drift, spread, attackers, selected):
    benign = gaussian_round(21, rows=12, dim=40, drift=drift, spread=spread)
    own = gaussian_round(22, rows=attackers, dim=40, drift=drift, spread=spread)
    updates, parameters = forge_krum(own, benign)
    scale, transcribed_selected, forged, halvings = transcribed_krum_attack(
        benign, attackers, np.zeros((attackers, 40))
    )
    assert halvings > 0 and transcribed_selected == selected
    assert parameters["lambda"] == pytest.approx(scale, rel=1e-12)
    assert parameters["lambda_bound"] == pytest.approx(numpy_bound(benign, attackers), rel=1e-12)
    assert parameters["krum_selected"] == float(selected)
    np.testing.assert_allclose(updates, forged, rtol=0, atol=1e-12)
    # copies: every attacker sends −λ s
    np.testing.assert_array_equal(
        updates, np.tile(-parameters["lambda"] * np.sign(benign.mean(axis=0)), (attackers, 1))
    )


def test_the_returned_lambda_gets_krum_to_select_a_forged_update_and_twice_it_did_not():
    benign = gaussian_round(23, rows=12, dim=40, drift=0.05)
    updates, parameters = forge_krum(gaussian_round(24, rows=3, dim=40), benign)
    assert parameters["krum_selected"] == 1.0 and parameters["lambda"] < parameters["lambda_bound"]
    everything = np.vstack([benign, updates])
    distances = torch.from_numpy(cdist(everything, everything, "sqeuclidean"))
    assert strategies_krum_choice(distances, 3, range(15)) >= 12
    doubled = np.vstack([benign, 2 * updates])
    distances = torch.from_numpy(cdist(doubled, doubled, "sqeuclidean"))
    assert strategies_krum_choice(distances, 3, range(15)) < 12


def test_a_lone_attacker_far_from_a_tight_cluster_gives_up_below_the_threshold():
    # one attacker, no supporters: −λ s can only win if it is closer to the cluster than its members,
    # which no λ > 0 achieves when the cluster sits on the side of +s
    benign = 5.0 + 1e-3 * gaussian_round(25, rows=8, dim=10, drift=0.0)
    updates, parameters = forge_krum(gaussian_round(26, rows=1, dim=10), benign)
    scale, selected, forged, _ = transcribed_krum_attack(benign, 1, np.zeros((1, 10)))
    assert parameters["krum_selected"] == 0.0 and not selected
    assert parameters["lambda"] == pytest.approx(scale) and scale < LAMBDA_THRESHOLD <= 2 * scale
    np.testing.assert_allclose(updates, forged, atol=1e-15)


def test_supporters_lie_within_epsilon_of_the_first_attacker():
    benign = gaussian_round(27, rows=12, dim=30, drift=0.05)
    own = gaussian_round(28, rows=4, dim=30)
    updates, parameters = forge_krum(own, benign, epsilon=0.01, seed=5)
    first = -parameters["lambda"] * np.sign(benign.mean(axis=0))
    np.testing.assert_allclose(updates[0], first, atol=1e-15)
    gaps = np.linalg.norm(updates[1:] - first, axis=1)
    assert np.all(gaps <= 0.01 + 1e-12) and np.all(gaps > 0) and len(set(gaps.round(15))) == 3
    # the search ran on the updates actually sent
    offsets = supporter_offsets(4, 30, 0.01, torch.Generator().manual_seed(5)).numpy()
    scale, selected, forged, _ = transcribed_krum_attack(benign, 4, offsets)
    assert parameters["lambda"] == pytest.approx(scale) and parameters["krum_selected"] == float(selected)
    np.testing.assert_allclose(updates, forged, atol=1e-12)
    # the same seed draws the same supporters
    np.testing.assert_array_equal(forge_krum(own, benign, epsilon=0.01, seed=5)[0], updates)


def test_supporter_offsets_fill_the_ball():
    offsets = supporter_offsets(2001, 2, 1.0, torch.Generator().manual_seed(0)).numpy()
    assert np.all(offsets[0] == 0)
    radii = np.linalg.norm(offsets[1:], axis=1)
    assert radii.max() <= 1.0
    # uniform in the disc: P(r ≤ 1/√2) = 1/2
    assert abs(np.mean(radii <= 1 / math.sqrt(2)) - 0.5) < 0.05


def test_colluding_attackers_simulate_their_own_round():
    own = gaussian_round(29, rows=3, dim=20, drift=0.3)
    updates, parameters = forge_krum(own, None)
    # 2c updates: the supporters fill w'_1's neighbourhood; λ is the bound, the largest own norm over √d
    assert parameters["lambda_bound"] == pytest.approx(np.linalg.norm(own, axis=1).max() / math.sqrt(20))
    assert parameters["lambda"] == parameters["lambda_bound"] and parameters["krum_selected"] == 1.0
    np.testing.assert_allclose(updates, np.tile(-parameters["lambda"] * np.sign(own.mean(axis=0)), (3, 1)))


def test_krum_attack_without_benign_updates_sends_the_honest_ones():
    own = gaussian_round(30, rows=2, dim=5)
    updates, parameters = forge_krum(own, np.zeros((0, 5)))
    assert np.array_equal(updates, own) and parameters["lambda"] == 0.0


# ---------------------------------------------------------------- trimmed-mean / median attack


def test_full_knowledge_intervals_worked_by_hand():
    # columns: mean < 0 with max > 0; mean < 0 with max ≤ 0; mean > 0 with min > 0; mean > 0 with
    # min ≤ 0; mean = 0 (pushed down, min ≤ 0)
    benign = torch.tensor(
        [
            [-1.0, -1.0, 1.0, 4.0, 1.0],
            [-4.0, -4.0, 2.0, 2.0, -1.0],
            [2.0, -2.0, 6.0, -3.0, 0.0],
        ],
        dtype=torch.float64,
    )
    low, high = full_knowledge_intervals(benign, 2.0)
    assert low.tolist() == [2.0, -1.0, 0.5, -6.0, -2.0]
    assert high.tolist() == [4.0, -0.5, 1.0, -3.0, -1.0]


def forge_trmean(own: np.ndarray, benign: np.ndarray | None, b: float = 2.0, seed: int = 0) -> np.ndarray:
    return FangTrimmedMean(b).forge(view_of(own, benign, seed)).updates.numpy()


def numpy_full_intervals(benign: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    largest, smallest, up = benign.max(axis=0), benign.min(axis=0), benign.mean(axis=0) < 0
    low = np.where(up, largest, np.where(smallest > 0, smallest / b, b * smallest))
    high = np.where(up, np.where(largest > 0, b * largest, largest / b), smallest)
    return low, high


@pytest.mark.parametrize("b", [2.0, 1.5, 4.0])
def test_full_knowledge_draws_lie_in_their_intervals_beyond_the_benign_extremes(b):
    benign = gaussian_round(31, rows=9, dim=200, drift=0.0)
    forged = forge_trmean(gaussian_round(32, rows=3, dim=200), benign, b=b)
    low, high = numpy_full_intervals(benign, b)
    assert forged.shape == (3, 200)
    assert np.all(forged >= low) and np.all(forged <= high)
    up = benign.mean(axis=0) < 0
    assert np.all(forged[:, up] >= benign.max(axis=0)[up])
    assert np.all(forged[:, ~up] <= benign.min(axis=0)[~up])
    # every attacker draws its own values, and they fill the intervals (not just one end)
    assert not np.allclose(forged[0], forged[1])
    position = (forged - low) / (high - low)
    assert 0.4 < position.mean() < 0.6 and position.min() < 0.05 and position.max() > 0.95


def test_the_draw_is_reproducible_from_the_round_generator():
    benign, own = gaussian_round(33, rows=6, dim=30), gaussian_round(34, rows=2, dim=30)
    np.testing.assert_array_equal(forge_trmean(own, benign, seed=3), forge_trmean(own, benign, seed=3))
    assert not np.array_equal(forge_trmean(own, benign, seed=3), forge_trmean(own, benign, seed=4))


def test_partial_knowledge_draws_three_to_four_deviations_against_the_direction():
    own = gaussian_round(35, rows=4, dim=300, drift=0.0)
    forged = forge_trmean(own, None)
    mean, deviation = own.mean(axis=0), own.std(axis=0, ddof=0)
    up = mean < 0
    low = np.where(up, mean + 3 * deviation, mean - 4 * deviation)
    high = np.where(up, mean + 4 * deviation, mean - 3 * deviation)
    assert np.all(forged >= low - 1e-12) and np.all(forged <= high + 1e-12)
    assert up.any() and (~up).any()


@pytest.mark.parametrize("attackers", [2, 3])
def test_the_median_and_trimmed_mean_move_against_the_direction_of_change(attackers):
    # ByzFL's rules on the round as the server gets it: adding values beyond the benign extreme can
    # only move the median against s_j, and trimmed mean (f = c) keeps the benign values of the far side
    benign = gaussian_round(36, rows=9, dim=500, drift=0.0)
    forged = forge_trmean(gaussian_round(37, rows=attackers, dim=500), benign)
    everything = np.vstack([benign, forged])
    up = benign.mean(axis=0) < 0
    shift_median = ByzflMedian()(everything) - ByzflMedian()(benign)
    assert np.all(shift_median[up] >= 0) and np.all(shift_median[~up] <= 0)
    shift_trmean = ByzflTrMean(f=attackers)(everything) - benign.mean(axis=0)
    assert np.all(shift_trmean[up] > 0) and np.all(shift_trmean[~up] < 0)


def test_trmean_attack_without_benign_updates_sends_the_honest_ones():
    own = gaussian_round(38, rows=2, dim=5)
    assert np.array_equal(forge_trmean(own, np.zeros((0, 5))), own)


# ---------------------------------------------------------------- specs and settings


def test_specs_and_settings():
    assert FANG_KRUM.knowledge == FANG_TRMEAN.knowledge == (OMNISCIENT, COLLUDING)
    assert [setting.key for setting in FANG_KRUM.settings] == ["fang-krum-epsilon", "attack-knowledge"]
    assert [setting.key for setting in FANG_TRMEAN.settings] == ["fang-b", "attack-knowledge"]
    base = {"num-clients": 7, "malicious-ids": "5,6"}
    config = experiment_config({**base, "update-attack": "fang-trmean", "fang-b": 3})
    context = AdversaryContext(config=config, threat=ThreatModel.from_config(config), knowledge=OMNISCIENT)
    assert FANG_TRMEAN.adversary is not None and FANG_TRMEAN.adversary(context) == FangTrimmedMean(3.0)
    config = experiment_config({**base, "update-attack": "fang-krum", "fang-krum-epsilon": 0.5})
    context = AdversaryContext(config=config, threat=ThreatModel.from_config(config), knowledge=COLLUDING)
    assert FANG_KRUM.adversary is not None and FANG_KRUM.adversary(context) == FangKrum(0.5)
    for attack, key, bad in (
        ("fang-trmean", "fang-b", 1),
        ("fang-trmean", "fang-b", "two"),
        ("fang-krum", "fang-krum-epsilon", -0.1),
    ):
        with pytest.raises(ConfigError) as refused:
            experiment_config({**base, "update-attack": attack, key: bad})
        assert str(refused.value).startswith(f"{key}: bad value") and "\n" not in str(refused.value)
