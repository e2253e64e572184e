"""The Byzantine attacks against ByzFL's implementations and hand-computed values.

- sign-flip and gaussian (update transforms, in the ClientApp) against ByzFL's ``SignFlipping``
  (exact) and ``Gaussian`` (the mean and standard deviation of the draws);
- alie, ipm and mimic (model poisoning, server-side) against ByzFL's ``ALittleIsEnough``,
  ``InnerProductManipulation`` and ``Mimic`` on constructed updates, with ByzFL's conventions
  mapped onto ours (ALIE: τ = −z, sample standard deviation in both; IPM: τ = ε; Mimic: the
  index of the mimicked row);
- ALIE's z against values worked out by hand (s = ⌊n/2 + 1⌋ − f, then Φ⁻¹ from SciPy);
- Mimic's automatic choice against the top principal direction computed with NumPy's SVD;
- the specs: knowledge levels, ``auto``, and the ClientApp behaviour of a model-poisoning attacker.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from byzfl import ALittleIsEnough, Gaussian, InnerProductManipulation, Mimic, SignFlipping
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from clients.adversary import COLLUDING, OMNISCIENT, AdversaryView
from clients.adversary_stage import ModelPoisoningStage, adversary_stage_for
from clients.attacks.alie import ALittleIsEnough as Alie
from clients.attacks.alie import alie_z, supporters
from clients.attacks.gaussian import GaussianNoise
from clients.attacks.ipm import InnerProductManipulation as Ipm
from clients.attacks.mimic import Mimic as MimicAttack
from clients.attacks.mimic import most_variant_row
from clients.attacks.sign_flip import SignFlip
from clients.malicious import CleanData, MaliciousClient, NoTransform
from clients.registry import behaviour_for
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.data import DatasetInfo
from fl_poison.core.settings import ConfigError


def view_of(own: np.ndarray, benign: np.ndarray | None, num_sampled: int | None = None) -> AdversaryView:
    """A hand-built view (ids: attackers 0.., benign after them)."""
    own_tensor = torch.as_tensor(own, dtype=torch.float64)
    benign_tensor = None if benign is None else torch.as_tensor(benign, dtype=torch.float64)
    count = len(own) + (0 if benign is None else len(benign))
    return AdversaryView(
        server_round=1,
        knowledge=OMNISCIENT if benign is not None else COLLUDING,
        own=own_tensor,
        benign=benign_tensor,
        num_sampled=count if num_sampled is None else num_sampled,
        generator=torch.Generator().manual_seed(0),
        own_ids=tuple(range(len(own))),
        benign_ids=tuple(range(len(own), count)),
    )


def updates(rows: int, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.3, (rows, size))


# ------------------------------------------------------------------------------------ ALIE


@pytest.mark.parametrize(
    "n, f, s, z",
    [
        (10, 2, 4, 0.2533471031357997),  # Φ⁻¹(6/10)
        (25, 5, 8, 0.4676987991145084),  # Φ⁻¹(17/25)
        (50, 12, 14, 0.5828415072712162),  # Φ⁻¹(36/50)
        (7, 3, 1, 1.0675705238781412),  # Φ⁻¹(6/7)
        (10, 6, 0, 1.2815515655446004),  # s = 0: taken as 1, Φ⁻¹(9/10)
        (2, 1, 1, 0.0),  # Φ⁻¹(1/2)
        (1, 1, 0, 0.0),  # the attacker alone
    ],
)
def test_alie_z_is_the_papers_formula(n, f, s, z):
    assert supporters(n, f) == s
    assert alie_z(n, f) == pytest.approx(z, abs=1e-12)
    assert z == pytest.approx(max(norm.ppf((n - max(s, 1)) / n), 0.0), abs=1e-12)


@pytest.mark.parametrize("knowledge", [COLLUDING, OMNISCIENT])
@pytest.mark.parametrize("z", [None, 1.5])
def test_alie_matches_byzfl_with_tau_minus_z(knowledge, z):
    own, benign = updates(3, seed=1), updates(7, seed=2)
    view = view_of(own, benign if knowledge == OMNISCIENT else None, num_sampled=10)
    forged = Alie(z).forge(view)
    expected_z = alie_z(10, 3) if z is None else z
    assert forged.parameters == {"z": pytest.approx(expected_z, abs=1e-15)}
    reference = benign if knowledge == OMNISCIENT else own
    expected = ALittleIsEnough(tau=-float(expected_z))(reference)
    assert forged.updates.shape == (3, 12)
    for row in forged.updates.numpy():
        np.testing.assert_allclose(row, expected, rtol=1e-12, atol=1e-15)


def test_alie_with_a_single_reference_update_sends_its_mean():
    own = updates(1, seed=3)
    forged = Alie(2.0).forge(view_of(own, None))
    np.testing.assert_array_equal(forged.updates.numpy(), own)


# ------------------------------------------------------------------------------------ IPM


@pytest.mark.parametrize("knowledge", [COLLUDING, OMNISCIENT])
@pytest.mark.parametrize("epsilon", [0.1, 2.0])
def test_ipm_matches_byzfl(knowledge, epsilon):
    own, benign = updates(2, seed=4), updates(6, seed=5)
    view = view_of(own, benign if knowledge == OMNISCIENT else None)
    forged = Ipm(epsilon).forge(view)
    expected = InnerProductManipulation(tau=epsilon)(benign if knowledge == OMNISCIENT else own)
    assert forged.parameters == {"epsilon": epsilon}
    for row in forged.updates.numpy():
        np.testing.assert_allclose(row, expected, rtol=1e-12, atol=1e-15)
    assert float(np.dot(forged.updates.numpy()[0], expected)) > 0


# ------------------------------------------------------------------------------------ Mimic


@pytest.mark.parametrize("index", [0, 3, 5])
def test_mimic_with_a_target_matches_byzfl(index):
    own, benign = updates(2, seed=6), updates(6, seed=7)
    forged = MimicAttack(target=2 + index).forge(view_of(own, benign))  # benign ids are 2..7
    assert forged.parameters == {"target": 2 + index}
    for row in forged.updates.numpy():
        np.testing.assert_array_equal(row, Mimic(epsilon=index)(benign))


def reference_most_variant(rows: np.ndarray) -> int:
    """argmax_i |⟨v, x_i − μ⟩| with v the top right singular vector of the centred rows (NumPy SVD)."""
    centred = rows - rows.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return int(np.argmax(np.abs(centred @ vt[0])))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_mimic_auto_picks_the_row_farthest_along_the_top_principal_direction(rows, size, seed):
    matrix = np.random.default_rng(seed).normal(0, 1, (rows, size))
    projections = np.abs((matrix - matrix.mean(axis=0)) @ np.linalg.svd(matrix - matrix.mean(axis=0))[2][0])
    top_two = np.sort(projections)[-2:]
    if top_two[1] - top_two[0] < 1e-6 * max(top_two[1], 1.0):
        return  # a tie: either row is the answer
    assert most_variant_row(torch.as_tensor(matrix)) == reference_most_variant(matrix)


def test_mimic_auto_copies_the_outlying_client_and_falls_back_when_the_target_is_absent():
    rng = np.random.default_rng(8)
    benign = rng.normal(0, 0.01, (5, 10))
    benign[3] += 5.0  # client 3 of the benign rows lies far out along one direction
    own = updates(2, size=10, seed=9)
    for target in (None, 99):
        forged = MimicAttack(target).forge(view_of(own, benign))
        assert forged.parameters == {"target": 2 + 3}
        np.testing.assert_array_equal(forged.updates.numpy(), np.stack([benign[3], benign[3]]))


def test_mimic_target_must_be_a_partition_of_the_run():
    with pytest.raises(ConfigError, match=r"^mimic-target: bad value 10; allowed: auto \| a partition id in 0 \.\. 9"):
        experiment_config({"update-attack": "mimic", "num-clients": 10, "mimic-target": 10})
    assert experiment_config({"update-attack": "mimic", "num-clients": 10, "mimic-target": 9})


def test_mimic_without_a_benign_update_sends_the_attackers_own():
    own = updates(2, seed=10)
    forged = MimicAttack(None).forge(view_of(own, np.empty((0, 12))))
    assert forged.parameters == {"target": -1}
    np.testing.assert_array_equal(forged.updates.numpy(), own)


# ------------------------------------------------------------------------------------ update transforms


def state(seed: int, shapes=(("w", (40, 25)), ("b", (25,)))) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes}


def flat(values: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([value.double().numpy().ravel() for value in values.values()])


class Job:
    """The part of a TrainingJob the transforms read."""

    def __init__(self, seed: int) -> None:
        self.seed = seed


@pytest.mark.parametrize("factor", [1.0, 4.0])
def test_sign_flip_matches_byzfl_on_the_attackers_own_update(factor):
    reference, trained = state(1), state(2)
    sent = SignFlip(factor).transform(Job(0), trained, reference)
    honest = flat(trained) - flat(reference)
    expected = factor * SignFlipping()(honest[None, :])
    np.testing.assert_allclose(flat(sent) - flat(reference), expected, rtol=1e-6, atol=1e-6)
    assert all(sent[name].dtype == torch.float32 for name in sent)


def test_gaussian_draws_match_byzfls_distribution():
    std = 0.5
    reference = state(3, (("w", (300, 300)), ("b", (1000,))))
    noise = flat(GaussianNoise(std).transform(Job(11), state(4), reference)) - flat(reference)
    byzfl_draws = np.asarray(Gaussian(mu=0.0, sigma=std)(np.zeros((2, noise.size))), dtype=np.float64)
    count = noise.size
    for draws in (noise, byzfl_draws):
        assert abs(draws.mean()) < 5 * std / math.sqrt(count)  # the mean of N(0, σ²) draws
        assert abs(draws.std() - std) < 5 * std / math.sqrt(2 * count)  # the sd's standard error σ/√(2N)
    assert abs(noise.std() - byzfl_draws.std()) < 10 * std / math.sqrt(2 * count)


def test_gaussian_is_seeded_by_the_clients_seed():
    reference = state(5)
    first = GaussianNoise(1.0).transform(Job(7), state(6), reference)
    again = GaussianNoise(1.0).transform(Job(7), state(9), reference)
    other = GaussianNoise(1.0).transform(Job(8), state(6), reference)
    np.testing.assert_array_equal(flat(first), flat(again))  # the trained weights play no part
    assert not np.array_equal(flat(first), flat(other))


# ------------------------------------------------------------------------------------ the specs


@pytest.mark.parametrize(
    "attack, knowledge",
    [("alie", COLLUDING), ("ipm", OMNISCIENT), ("mimic", OMNISCIENT)],
)
def test_auto_knowledge_is_the_attacks_first_level(attack, knowledge):
    config = experiment_config({"update-attack": attack, "num-malicious": 2})
    stage = adversary_stage_for(config)
    assert isinstance(stage, ModelPoisoningStage) and stage.knowledge == knowledge


def test_a_level_the_attack_does_not_declare_fails_at_parse_time_naming_attack_knowledge():
    with pytest.raises(ConfigError, match=r"^attack-knowledge: bad value 'colluding'; allowed: auto \| omniscient"):
        experiment_config({"update-attack": "mimic", "attack-knowledge": "colluding"})
    config = experiment_config({"update-attack": "alie", "attack-knowledge": "omniscient"})
    stage = adversary_stage_for(config)
    assert stage is not None and stage.knowledge == OMNISCIENT


def test_attack_knowledge_is_ignored_without_a_model_poisoning_attack():
    config = experiment_config({"update-attack": "sign-flip", "attack-knowledge": "colluding"})
    assert adversary_stage_for(config) is None
    assert adversary_stage_for(experiment_config({})) is None


def test_a_model_poisoning_attacker_trains_honestly_and_is_marked_attacked():
    config = experiment_config({"update-attack": "alie", "malicious-ids": "1", "num-clients": 4})
    behaviour = behaviour_for(config, 1, 1, DatasetInfo(num_classes=10, input_shape=(1, 8, 8)))
    assert behaviour == MaliciousClient(CleanData(), NoTransform())
    with_data = experiment_config(
        {"attack": "label-flip", "update-attack": "ipm", "malicious-ids": "1", "num-clients": 4}
    )
    behaviour = behaviour_for(with_data, 1, 1, DatasetInfo(num_classes=10, input_shape=(1, 8, 8)))
    assert isinstance(behaviour, MaliciousClient) and behaviour.transform == NoTransform()
    assert not isinstance(behaviour.poisoner, CleanData)
