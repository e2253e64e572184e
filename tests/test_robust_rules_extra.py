"""Geometric median, centered clipping, NNM, bucketing, DnC and RLR against independent references.

ByzFL (``byzfl``) is the reference for the geometric median, centered clipping, NNM and bucketing,
with its conventions stated where they differ from ours; DnC's filtered set is recomputed by a
transcription of the paper's Algorithm 2 with numpy's SVD on the same random coordinates; RLR is
checked on an example worked out by hand. The rules run on rounds decoded from real Flower
replies (:func:`strategy_helpers.decoded_round`), the references on the float64 values of the
float32 updates the server sees.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import byzfl
import numpy as np
import pytest
from strategy_helpers import as_numpy, decoded_round

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import ConfigError
from strategies.bucketing import BUCKETING_SALT, Bucketing
from strategies.centered_clipping import CenteredClipping
from strategies.dnc import DNC_SALT, DivideAndConquer
from strategies.fedavg import FedAvg
from strategies.geomed import GeometricMedian
from strategies.krum import Krum
from strategies.nnm import NearestNeighborMixing
from strategies.norm_clip import NormClip
from strategies.registry import build_defense
from strategies.rlr import RobustLearningRate
from strategies.spec import Defense, Outcome

# byzfl.aggregators re-exports the classes under the package's name: reach the module itself.
byzfl_preaggregators = importlib.import_module("byzfl.aggregators.preaggregators")

# ---------------------------------------------------------------- helpers


def clustered_round(n: int, d: int, seed: int, outliers=(), counts=None, scale: float = 5.0) -> RoundUpdates:
    """n clients around a common direction, the ``outliers`` far off; global model zero (updates exact)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(0.0, 1.0, d)
    rows = []
    for row in range(n):
        value = centre + 0.3 * rng.normal(0.0, 1.0, d)
        if row in outliers:
            value = -scale * centre + rng.normal(0.0, 1.0, d)
        rows.append(value)
    return decoded_round(np.zeros(d), rows, num_examples=counts)


def seen(updates: RoundUpdates) -> np.ndarray:
    """The rows as the defense sees them, float64 (numpy)."""
    return as_numpy(updates.matrix) * as_numpy(updates.scale)[:, None]


class Captured(Defense):
    """FedAvg that keeps the round it was handed (to read what a pre-aggregator made of the updates)."""

    def __init__(self) -> None:
        self.rounds: list[RoundUpdates] = []

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        self.rounds.append(updates)
        return FedAvg().aggregate(updates)

    def describe(self) -> str:
        return "captured fedavg"


# ---------------------------------------------------------------- geometric median


def reference_weiszfeld(points: np.ndarray, counts, nu: float, iterations: int, tolerance: float):
    """RFA's smoothed Weiszfeld, transcribed: start at the weighted mean, distances from the points themselves."""
    alphas = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    z = alphas @ points
    objective = float(sum(a * np.linalg.norm(z - p) for a, p in zip(alphas, points, strict=True)))
    used = 0
    for _ in range(iterations):
        betas = np.array([a / max(nu, np.linalg.norm(z - p)) for a, p in zip(alphas, points, strict=True)])
        z = (betas / betas.sum()) @ points
        previous = objective
        objective = float(sum(a * np.linalg.norm(z - p) for a, p in zip(alphas, points, strict=True)))
        used += 1
        if abs(previous - objective) < tolerance * objective:
            break
    return z, used


@pytest.mark.parametrize("seed", range(3))
def test_geomed_converges_to_byzfls_geometric_median(seed):
    # ByzFL starts from 0, weighs uniformly and runs a fixed T; with equal counts, no tolerance and
    # many iterations both reach the minimiser of the sum of distances. (ByzFL turns torch inputs
    # into float32: it gets float64 numpy arrays throughout these tests.)
    updates = clustered_round(9, 40, seed, outliers=(2, 6))
    points = seen(updates)
    ours = GeometricMedian(iterations=2000, tolerance=0.0, nu=1e-12).aggregate(updates)
    theirs = byzfl.GeometricMedian(nu=1e-12, T=2000)(points)
    np.testing.assert_allclose(as_numpy(ours.update), theirs, rtol=0, atol=1e-10)

    def objective(z):
        return sum(np.linalg.norm(z - p) for p in points)

    assert objective(as_numpy(ours.update)) <= objective(theirs) + 1e-9
    assert objective(as_numpy(ours.update)) < objective(points.mean(axis=0))  # the mean is not the median


@pytest.mark.parametrize("seed", range(3))
def test_geomed_follows_rfas_iterations_with_example_weights(seed):
    counts = [10, 20, 5, 40, 10, 15, 30]
    updates = clustered_round(7, 25, seed, outliers=(1,), counts=counts)
    rule = GeometricMedian(iterations=100, tolerance=1e-6, nu=1e-5)
    outcome = rule.aggregate(updates)
    expected, used = reference_weiszfeld(seen(updates), counts, nu=1e-5, iterations=100, tolerance=1e-6)
    np.testing.assert_allclose(as_numpy(outcome.update), expected, rtol=0, atol=1e-9)
    assert rule.iterations_used == used and 1 < used < 100
    assert outcome.diagnostics == {"iterations": used}  # the defense_iterations column of rounds.csv
    assert f"iterations in the latest round: {used}" in rule.describe()


def test_geomed_stops_after_the_iteration_budget():
    updates = clustered_round(7, 25, 0, outliers=(1,))
    rule = GeometricMedian(iterations=2, tolerance=0.0, nu=1e-5)
    outcome = rule.aggregate(updates)
    expected, used = reference_weiszfeld(seen(updates), [10] * 7, nu=1e-5, iterations=2, tolerance=0.0)
    assert rule.iterations_used == used == 2 == outcome.diagnostics["iterations"]
    np.testing.assert_allclose(as_numpy(outcome.update), expected, rtol=0, atol=1e-9)


def test_geomed_weights_are_the_shares_of_the_median():
    updates = clustered_round(8, 30, 4, outliers=(5,))
    outcome = GeometricMedian(iterations=100, tolerance=1e-9, nu=1e-5).aggregate(updates)
    weights = [decision.weight for decision in outcome.decisions]
    assert {decision.decision for decision in outcome.decisions} == {"accepted"}
    assert math.fsum(weights) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(np.asarray(weights) @ seen(updates), as_numpy(outcome.update), rtol=0, atol=1e-12)
    assert weights[5] < 0.5 * min(weight for row, weight in enumerate(weights) if row != 5)


# ---------------------------------------------------------------- centered clipping


def test_centered_clipping_matches_byzfl_over_rounds():
    # ByzFL's CenteredClipping keeps its output as the next call's starting point, as the rule does.
    rule = CenteredClipping(radius=1.5, iterations=3)
    reference = byzfl.CenteredClipping(L=3, tau=1.5)
    for seed in range(4):
        updates = clustered_round(7, 20, seed, outliers=(0, 4))
        ours = rule.aggregate(updates)
        theirs = reference(seen(updates))
        np.testing.assert_allclose(as_numpy(ours.update), theirs, rtol=0, atol=1e-12)
        np.testing.assert_allclose(as_numpy(rule.reference), theirs, rtol=0, atol=1e-12)


def test_centered_clipping_decisions_record_who_was_clipped():
    updates = clustered_round(6, 10, 1, outliers=(3,))
    points = seen(updates)
    radius = 4.0
    rule = CenteredClipping(radius=radius, iterations=2)
    outcome = rule.aggregate(updates)
    v, clipped, last = np.zeros(points.shape[1]), set(), None
    for _ in range(2):  # the paper's iteration, transcribed
        last = np.linalg.norm(points - v, axis=1)
        clipped |= {row for row in range(6) if last[row] > radius}
        v = v + np.mean([(p - v) * min(1.0, radius / dist) for p, dist in zip(points, last, strict=True)], axis=0)
    np.testing.assert_allclose(as_numpy(outcome.update), v, rtol=0, atol=1e-12)
    assert 3 in clipped and len(clipped) < 6
    for row, decision in enumerate(outcome.decisions):
        assert decision.decision == ("clipped" if row in clipped else "accepted")
        assert decision.norm_after == pytest.approx(min(last[row], radius), rel=1e-12)
        assert decision.bound == radius and math.isnan(decision.weight)


# ---------------------------------------------------------------- nearest neighbor mixing


@pytest.mark.parametrize("f", [1, 2, 3])
def test_nnm_mixes_as_byzfl(f):
    # ByzFL's NNM: each vector replaced by the mean of its n - f nearest (itself included), as here.
    updates = clustered_round(9, 30, f, outliers=(1, 7))
    inner = Captured()
    NearestNeighborMixing(f, inner).aggregate(updates)
    mixed = inner.rounds[0]
    theirs = byzfl.NNM(f)(seen(updates))
    np.testing.assert_allclose(seen(mixed), theirs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(as_numpy(mixed.norms), np.linalg.norm(seen(mixed), axis=1), rtol=1e-12)
    assert mixed.partition_ids == updates.partition_ids and mixed.num_examples == updates.num_examples


def test_nnm_in_front_of_fedavg_is_the_weighted_mean_of_the_mixes():
    counts = [10, 30, 20, 10, 40, 10, 20]
    updates = clustered_round(7, 12, 5, outliers=(2,), counts=counts)
    outcome = NearestNeighborMixing(2, FedAvg()).aggregate(updates)
    mixes = byzfl.NNM(2)(seen(updates))
    shares = np.asarray(counts) / sum(counts)
    np.testing.assert_allclose(as_numpy(outcome.update), shares @ mixes, rtol=0, atol=1e-6)
    assert [d.weight for d in outcome.decisions] == pytest.approx(shares.tolist(), rel=1e-12)
    norms = np.linalg.norm(seen(updates), axis=1)
    assert [d.norm_after for d in outcome.decisions] == pytest.approx(norms.tolist(), rel=1e-12)
    assert outcome.exact_row is None


def test_nnm_in_front_of_krum_keeps_the_client_whose_mix_krum_picks():
    updates = clustered_round(9, 20, 2, outliers=(0, 8))
    outcome = NearestNeighborMixing(2, Krum(2)).aggregate(updates)
    mixes = byzfl.NNM(2)(seen(updates))
    chosen = [row for row, d in enumerate(outcome.decisions) if d.decision == "accepted"]
    assert len(chosen) == 1
    np.testing.assert_allclose(as_numpy(outcome.update), mixes[chosen[0]], rtol=0, atol=1e-6)
    assert outcome.exact_row is None  # the mix is not the client's own reply
    assert all(d.weight == 0.0 and d.norm_after == 0.0 for d in outcome.decisions if d.decision == "rejected")


def test_nnm_in_front_of_norm_clip_traces_the_clipping_to_the_clients():
    updates = clustered_round(7, 15, 3, outliers=(4,))
    outcome = NearestNeighborMixing(1, NormClip(1.0, FedAvg())).aggregate(updates)
    norms = as_numpy(updates.scaled_norms())  # norm_before
    mix_norms = np.linalg.norm(byzfl.NNM(1)(seen(updates)), axis=1)
    assert 0 < sum(mix_norms > 1.0) < 7
    for row, decision in enumerate(outcome.decisions):
        assert decision.decision == ("clipped" if mix_norms[row] > 1.0 else "accepted")
        expected = norms[row] * min(1.0, 1.0 / mix_norms[row])
        assert decision.norm_after == pytest.approx(expected, rel=1e-6) and decision.norm_after <= norms[row]
        assert decision.bound == 1.0


# ---------------------------------------------------------------- bucketing


def transcribed_permutation(seed: int, server_round: int, count: int) -> list[int]:
    return [int(i) for i in np.random.default_rng([seed, BUCKETING_SALT, server_round]).permutation(count)]


@pytest.mark.parametrize("n,size", [(8, 2), (9, 2), (10, 3), (7, 7), (5, 1)])
def test_bucket_means_match_byzfl_on_the_same_permutation(monkeypatch, n, size):
    # ByzFL draws its own permutation; here it gets our rows already permuted and keeps their order.
    updates = dataclasses.replace(clustered_round(n, 16, n, outliers=(0,)), server_round=3)
    inner = Captured()
    Bucketing(size, inner, seed=11).aggregate(updates)
    order = transcribed_permutation(11, 3, n)

    class KeepOrder:
        @staticmethod
        def permutation(vectors):
            return vectors

    monkeypatch.setattr(byzfl_preaggregators, "random_tool", lambda vectors: KeepOrder)
    theirs = byzfl.Bucketing(size)(seen(updates)[order])
    np.testing.assert_allclose(seen(inner.rounds[0]), theirs, rtol=1e-6, atol=1e-7)
    assert inner.rounds[0].count == math.ceil(n / size)


def test_bucketing_draws_by_seed_and_round():
    updates = clustered_round(10, 8, 0)

    def buckets(seed, server_round):
        return Bucketing(2, FedAvg(), seed).draw_buckets(updates.count, server_round)

    assert buckets(1, 4) == buckets(1, 4)
    assert buckets(1, 4) != buckets(1, 5) and buckets(1, 4) != buckets(2, 4)
    order = transcribed_permutation(1, 4, 10)
    assert buckets(1, 4) == [order[i : i + 2] for i in range(0, 10, 2)]


def test_bucketing_weighs_within_buckets_so_fedavg_behind_it_is_fedavg():
    counts = [10, 30, 20, 10, 40, 10, 25]
    updates = clustered_round(7, 12, 6, outliers=(3,), counts=counts)
    inner = Captured()
    outcome = Bucketing(3, inner, seed=0).aggregate(updates)
    shares = np.asarray(counts) / sum(counts)
    np.testing.assert_allclose(as_numpy(outcome.update), shares @ seen(updates), rtol=0, atol=1e-6)
    assert [d.weight for d in outcome.decisions] == pytest.approx(shares.tolist(), rel=1e-12)
    buckets = Bucketing(3, FedAvg(), seed=0).draw_buckets(7, 0)
    means = inner.rounds[0]
    for bucket, members in enumerate(buckets):
        total = sum(counts[row] for row in members)
        expected = sum(counts[row] * seen(updates)[row] for row in members) / total
        np.testing.assert_allclose(seen(means)[bucket], expected, rtol=1e-6, atol=1e-7)
        assert means.num_examples[bucket] == total
        assert means.partition_ids[bucket] == min(members)
        assert means.losses[bucket] == pytest.approx(np.mean([updates.losses[row] for row in members]))


def test_bucketing_in_front_of_krum_accepts_the_members_of_the_chosen_bucket():
    counts = [10, 20, 30, 40, 10, 20, 30, 40, 10, 20, 30, 40]
    updates = clustered_round(12, 10, 7, outliers=(5,), counts=counts)
    outcome = Bucketing(2, Krum(1), seed=3).aggregate(updates)
    buckets = Bucketing(2, FedAvg(), seed=3).draw_buckets(12, 0)
    accepted = sorted(row for row, d in enumerate(outcome.decisions) if d.decision == "accepted")
    chosen = [members for members in buckets if sorted(members) == accepted]
    assert len(chosen) == 1
    members = chosen[0]
    total = sum(counts[row] for row in members)
    expected = sum(counts[row] * seen(updates)[row] for row in members) / total
    np.testing.assert_allclose(as_numpy(outcome.update), expected, rtol=0, atol=1e-6)
    for row in members:
        assert outcome.decisions[row].weight == pytest.approx(counts[row] / total, rel=1e-12)
    assert outcome.metric_rows == tuple(sorted(members)) and outcome.exact_row is None


# ---------------------------------------------------------------- DnC


def transcribed_dnc(points: np.ndarray, seed: int, server_round: int, f: int, c: float, b: int, iterations: int):
    """Algorithm 2 of the paper with numpy's SVD, on the coordinates the recipe in strategies/dnc.py draws."""
    n, d = points.shape
    generator = np.random.default_rng([seed, DNC_SALT, server_round])
    good = set(range(n))
    for _ in range(iterations):
        coordinates = np.sort(generator.choice(d, min(b, d), replace=False))
        sample = points[:, coordinates]
        centred = sample - sample.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        scores = (centred @ vt[0]) ** 2
        removed = math.ceil(c * f)
        kept = sorted(range(n), key=lambda i: (scores[i], i))[: n - removed]
        good &= set(kept)
    return sorted(good)


@pytest.mark.parametrize("seed", range(4))
def test_dnc_filters_the_set_the_algorithm_gives(seed):
    counts = [10 + 5 * row for row in range(10)]
    updates = dataclasses.replace(
        clustered_round(10, 300, seed, outliers=(2, 9), counts=counts, scale=1.5), server_round=seed + 1
    )
    outcome = DivideAndConquer(2, 1.0, 40, 3, seed=5).aggregate(updates)
    good = transcribed_dnc(seen(updates), 5, seed + 1, f=2, c=1.0, b=40, iterations=3)
    assert 2 not in good and 9 not in good and len(good) >= 5
    assert [row for row, d in enumerate(outcome.decisions) if d.decision == "accepted"] == good
    shares = np.asarray([counts[row] for row in good]) / sum(counts[row] for row in good)
    np.testing.assert_allclose(as_numpy(outcome.update), shares @ seen(updates)[good], rtol=0, atol=1e-6)


def test_dnc_with_more_coordinates_than_the_model_uses_them_all():
    updates = clustered_round(8, 20, 1, outliers=(4,))
    outcome = DivideAndConquer(1, 1.5, 10_000, 2, seed=0).aggregate(updates)
    good = transcribed_dnc(seen(updates), 0, 0, f=1, c=1.5, b=10_000, iterations=2)
    assert 4 not in good and len(good) == 6  # ceil(1.5) = 2 removed, the same both times
    assert [row for row, d in enumerate(outcome.decisions) if d.decision == "accepted"] == good


# ---------------------------------------------------------------- RLR

RLR_UPDATES = [
    [1.0, 1.0, -1.0, 0.5, 0.0],
    [1.0, -1.0, -1.0, 0.5, 2.0],
    [1.0, 1.0, 1.0, -0.5, 0.0],
    [1.0, -1.0, -1.0, 0.5, 0.0],
    [-1.0, 1.0, -1.0, 0.5, 0.0],
]


def test_rlr_on_a_hand_worked_example():
    # Sign sums per coordinate: 3, 1, -3, 3, 1 (sgn 0 = 0); theta = 3 flips coordinates 2 and 5.
    # Equal counts: means 0.6, 0.2, -0.6, 0.3, 0.4; times +1, -1, +1, +1, -1.
    updates = decoded_round(np.zeros(5), RLR_UPDATES)
    outcome = RobustLearningRate(threshold=3, learning_rate=1.0).aggregate(updates)
    np.testing.assert_allclose(as_numpy(outcome.update), [0.6, -0.2, -0.6, 0.3, -0.4], rtol=0, atol=1e-15)
    assert [d.decision for d in outcome.decisions] == ["accepted"] * 5
    assert [d.weight for d in outcome.decisions] == pytest.approx([0.2] * 5, rel=1e-15)


def test_rlr_with_example_weights_and_a_smaller_learning_rate():
    # Counts 1, 1, 1, 1, 4 (shares /8): means 0, 0.5, -0.75, 0.375, 0.25; theta = 3, eta = 0.5.
    updates = decoded_round(np.zeros(5), RLR_UPDATES, num_examples=[1, 1, 1, 1, 4])
    outcome = RobustLearningRate(threshold=3, learning_rate=0.5).aggregate(updates)
    np.testing.assert_allclose(as_numpy(outcome.update), [0.0, -0.25, -0.375, 0.1875, -0.125], rtol=0, atol=1e-15)
    # theta = 1: every coordinate with a nonzero sign sum keeps +eta.
    loose = RobustLearningRate(threshold=1, learning_rate=0.5).aggregate(updates)
    np.testing.assert_allclose(as_numpy(loose.update), [0.0, 0.25, -0.375, 0.1875, 0.125], rtol=0, atol=1e-15)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"strategy": "norm-clip", "clip-wrap": "nnm", "nnm-wrap": "norm-clip"}, "clip-wrap"),
        ({"strategy": "nnm", "nnm-wrap": "bucketing", "bucketing-wrap": "nnm"}, "nnm-wrap"),
        ({"strategy": "bucketing", "bucketing-wrap": "nnm", "nnm-wrap": "bucketing"}, "bucketing-wrap"),
        ({"strategy": "nnm", "nnm-wrap": "nnm"}, "nnm-wrap"),
        ({"strategy": "bucketing", "bucketing-wrap": "nope"}, "bucketing-wrap"),
        ({"strategy": "nnm", "num-clients": 3, "krum-f": 3}, "krum-f"),
        ({"strategy": "dnc", "num-clients": 4, "krum-f": 2, "dnc-filter-fraction": 2}, "dnc-filter-fraction"),
        ({"strategy": "rlr", "num-clients": 5, "rlr-threshold": 6}, "rlr-threshold"),
        ({"strategy": "rlr", "rlr-learning-rate": 1.5}, "rlr-learning-rate"),
        ({"strategy": "geomed", "geomed-nu": 0}, "geomed-nu"),
        ({"strategy": "centered-clipping", "cc-radius": -1}, "cc-radius"),
        ({"strategy": "centered-clipping", "cc-iterations": 0}, "cc-iterations"),
        ({"strategy": "bucketing", "bucket-size": 0}, "bucket-size"),
    ],
)
def test_bad_settings_of_the_new_rules_give_one_line_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        experiment_config(raw)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{key}: "), message


def test_the_rule_behind_bucketing_is_checked_on_the_number_of_buckets():
    # 6 clients, buckets of 2: Krum sees 3 bucket means and needs 2f + 2 < 3.
    with pytest.raises(ConfigError) as caught:
        experiment_config({"strategy": "bucketing", "bucketing-wrap": "krum", "num-clients": 6})
    assert str(caught.value).startswith("krum-f: ") and "krum behind bucketing sees 3 updates per round" in str(
        caught.value
    )
    experiment_config({"strategy": "bucketing", "bucketing-wrap": "krum", "num-clients": 10})  # 5 buckets: 4 < 5


def test_a_loop_of_wrapped_rules_is_named_in_the_message():
    with pytest.raises(ConfigError) as caught:
        experiment_config(
            {"strategy": "nnm", "nnm-wrap": "bucketing", "bucketing-wrap": "norm-clip", "clip-wrap": "nnm"}
        )
    assert "(nnm -> bucketing -> norm-clip -> nnm)" in str(caught.value)


def test_the_registry_passes_the_new_rules_their_settings():
    def defense(raw):
        return build_defense(experiment_config(raw))

    geomed = defense({"strategy": "geomed", "geomed-iterations": 7, "geomed-tolerance": 0, "geomed-nu": 1e-3})
    assert (geomed.iterations, geomed.tolerance, geomed.nu) == (7, 0.0, 1e-3)
    clipping = defense({"strategy": "centered-clipping", "cc-radius": 2.5, "cc-iterations": 3})
    assert (clipping.radius, clipping.iterations, clipping.reference) == (2.5, 3, None)
    mixing = defense({"strategy": "nnm", "num-malicious": 2, "nnm-wrap": "krum"})
    assert mixing.num_byzantine == 2 and isinstance(mixing.inner, Krum) and mixing.inner.num_byzantine == 2
    assert type(defense({"strategy": "nnm"}).inner).__name__ == "TrimmedMean"
    buckets = defense({"strategy": "bucketing", "bucket-size": 3, "bucketing-wrap": "geomed", "seed": 9})
    assert (buckets.bucket_size, buckets.seed, type(buckets.inner)) == (3, 9, GeometricMedian)
    assert type(defense({"strategy": "bucketing"}).inner).__name__ == "Median"
    dnc = defense(
        {"strategy": "dnc", "krum-f": 2, "dnc-filter-fraction": 1.5, "dnc-subsample": 50, "dnc-iterations": 2}
    )
    assert (dnc.num_byzantine, dnc.filter_fraction, dnc.subsample, dnc.iterations) == (2, 1.5, 50, 2)
    rlr = defense({"strategy": "rlr", "rlr-threshold": 3, "rlr-learning-rate": 0.5})
    assert (rlr.threshold, rlr.learning_rate) == (3, 0.5)
