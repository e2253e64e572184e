"""FLAME, the backdoor defense of Nguyen et al. (USENIX Security 2022), against a hand transcription of
its clipping, averaging and noise on constructed rounds: the minority cluster is rejected, the
admitted updates are clipped to the median norm of all updates and averaged, and the noise has the
standard deviation λ·S_t, drawn from a generator seeded by the run's seed and the round."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import sklearn.cluster
import torch
from strategy_helpers import as_numpy, decoded_round

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.settings import ConfigError
from strategies.flame import FLAME_LAMBDA, Flame, cosine_distances, majority_cluster
from strategies.registry import build_defense

D = 4000


def two_clusters(seed: int = 0, honest: int = 7, attackers: int = 4) -> np.ndarray:
    """``honest`` updates around one direction (lengths 0.5 .. 2) and ``attackers`` long ones around another."""
    rng = np.random.default_rng(seed)
    benign, backdoor = rng.standard_normal(D), rng.standard_normal(D)
    rows = [rng.uniform(0.5, 2.0) * (benign + 0.3 * rng.standard_normal(D)) / math.sqrt(D) for _ in range(honest)]
    rows += [5.0 * (backdoor + 0.05 * rng.standard_normal(D)) / math.sqrt(D) for _ in range(attackers)]
    return np.array(rows)


def reference_flame(rows: np.ndarray, admitted: list[int]) -> tuple[np.ndarray, float]:
    """The paper's steps after the clustering, transcribed: S_t = median of all norms, W_c = Δ·min(1, S_t/e), mean."""
    norms = [math.sqrt(float(np.dot(row, row))) for row in rows]
    bound = float(np.median(norms))
    clipped = [rows[i] * min(1.0, bound / norms[i]) for i in admitted]
    return sum(clipped) / len(clipped), bound


def reference_cosine_distances(rows: np.ndarray) -> np.ndarray:
    """1 − x·y / (‖x‖‖y‖), pair by pair."""
    out = np.zeros((len(rows), len(rows)))
    for i, x in enumerate(rows):
        for j, y in enumerate(rows):
            if i != j:
                out[i, j] = 1.0 - float(np.dot(x, y)) / (np.linalg.norm(x) * np.linalg.norm(y))
    return out


def test_the_minority_cluster_is_rejected_and_the_rest_clipped_and_averaged():
    updates = decoded_round(np.zeros(D), two_clusters())
    rows = as_numpy(updates.matrix)

    outcome = Flame(0.0, seed=1).aggregate(updates)

    admitted = [row for row, d in enumerate(outcome.decisions) if d.decision != "rejected"]
    # HDBSCAN (min_samples = 1, a single cluster allowed) may leave the honest update that joins
    # the cluster last as noise; the attackers' cluster, a minority, is never admitted.
    assert set(admitted) <= set(range(7)) and len(admitted) >= 11 // 2 + 1
    assert admitted == majority_cluster(reference_cosine_distances(rows))
    expected, bound = reference_flame(rows, admitted)
    np.testing.assert_allclose(as_numpy(outcome.update), expected, rtol=1e-12, atol=1e-15)
    norms = np.linalg.norm(rows, axis=1)
    for row in admitted:
        decision = outcome.decisions[row]
        if abs(norms[row] - bound) > 1e-9 * bound:  # the median update itself is at the bound
            assert decision.decision == ("clipped" if norms[row] > bound else "accepted")
        assert decision.weight == pytest.approx(1 / len(admitted), rel=1e-15)
        assert decision.norm_after == pytest.approx(min(norms[row], bound), rel=1e-12)
        assert decision.norm_after <= bound
    assert [d.bound for d in outcome.decisions] == [pytest.approx(bound, rel=1e-12)] * len(rows)
    assert outcome.metric_rows == tuple(admitted)
    assert outcome.diagnostics == {
        "majority_size": len(admitted),
        "clipping_bound": pytest.approx(bound),
        "noise_sd": 0.0,
    }


def test_the_clipping_bound_is_the_median_of_all_updates_not_of_the_admitted_ones():
    # The attackers' long updates raise the median: with 4 of 9 long ones, S_t is the 5th norm.
    rows = two_clusters(seed=2, honest=5, attackers=4)
    outcome = Flame(0.0, seed=1).aggregate(decoded_round(np.zeros(D), rows))
    admitted_only = float(np.median(np.linalg.norm(rows[:5], axis=1)))
    assert outcome.decisions[0].bound == pytest.approx(float(np.median(np.linalg.norm(rows, axis=1))), rel=1e-6)
    assert outcome.decisions[0].bound != pytest.approx(admitted_only, rel=1e-3)


def test_the_noise_has_sd_lambda_times_the_bound_and_is_seeded_by_seed_and_round():
    updates = decoded_round(np.zeros(D), two_clusters())
    expected, bound = reference_flame(as_numpy(updates.matrix), majority_cluster(cosine_distances(updates)))
    noise_level = 0.05

    def noise(seed: int, server_round: int) -> np.ndarray:
        outcome = Flame(noise_level, seed).aggregate(dataclasses.replace(updates, server_round=server_round))
        return as_numpy(outcome.update) - expected

    first = noise(7, 3)
    sd = noise_level * bound
    assert abs(float(first.mean())) < 4 * sd / math.sqrt(D)
    assert float(first.std()) == pytest.approx(sd, rel=0.05)  # the sample sd of 4,000 draws: within ~2.2 % (2σ)
    np.testing.assert_array_equal(noise(7, 3), first)  # the same seed and round: the same noise
    assert not np.allclose(noise(7, 4), first)  # another round
    assert not np.allclose(noise(8, 3), first)  # another seed


def test_the_distances_are_cosine_distances():
    rows = two_clusters(seed=4)
    np.testing.assert_allclose(
        cosine_distances(decoded_round(np.zeros(D), rows)),
        reference_cosine_distances(as_numpy(decoded_round(np.zeros(D), rows).matrix)),
        rtol=0,
        atol=1e-12,
    )


def test_hdbscan_runs_with_the_papers_parameters(monkeypatch):
    seen = {}

    class Recording(sklearn.cluster.HDBSCAN):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(sklearn.cluster, "HDBSCAN", Recording)
    majority_cluster(reference_cosine_distances(two_clusters()))
    assert seen["min_cluster_size"] == 11 // 2 + 1 and seen["min_samples"] == 1
    assert seen["metric"] == "precomputed" and seen["allow_single_cluster"] is True


def test_without_a_cluster_every_update_is_admitted(monkeypatch):
    class NoCluster:
        def __init__(self, **kwargs):
            pass

        def fit(self, distances):
            self.labels_ = np.full(len(distances), -1)
            return self

    monkeypatch.setattr(sklearn.cluster, "HDBSCAN", NoCluster)
    assert majority_cluster(np.ones((5, 5)) - np.eye(5)) == [0, 1, 2, 3, 4]


def test_one_update_alone_is_admitted_and_clipped_to_its_own_norm():
    rows = two_clusters()[:1]
    outcome = Flame(0.0, seed=1).aggregate(decoded_round(np.zeros(D), rows))
    np.testing.assert_allclose(as_numpy(outcome.update), as_numpy(decoded_round(np.zeros(D), rows).matrix)[0])
    assert [d.decision for d in outcome.decisions] == ["accepted"]


def test_the_setting_and_the_builder():
    defense = build_defense(experiment_config({"strategy": "flame", "flame-lambda": 0.01, "seed": 9}))
    assert isinstance(defense, Flame) and (defense.noise_level, defense.seed) == (0.01, 9)
    assert "Nguyen" in defense.describe()
    assert experiment_config({})[FLAME_LAMBDA] == 0.001
    with pytest.raises(ConfigError, match=r"^flame-lambda: bad value -1; allowed: a number >= 0$"):
        experiment_config({"strategy": "flame", "flame-lambda": -1})


def test_the_gpu_draws_the_cpus_noise():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rows = two_clusters()
    on_cpu = Flame(0.01, 3).aggregate(decoded_round(np.zeros(D), rows))
    on_gpu = Flame(0.01, 3).aggregate(decoded_round(np.zeros(D), rows, device="cuda"))
    np.testing.assert_allclose(as_numpy(on_gpu.update), as_numpy(on_cpu.update), rtol=0, atol=1e-12)
