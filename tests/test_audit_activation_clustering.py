"""Activation clustering (``fl_poison.audit.activation_clustering``) by hand, against ART, and on a planted backdoor.

- A hand case in two dimensions (no reduction: two features are fewer than ``dims``), whose
  relative sizes, silhouettes (a numpy transcription of Rousseeuw's definition), anomaly indices
  and precision / recall are worked out below.
- ART 1.20's ``cluster_activations`` (PCA and 2-means per class) as the reference for the target
  class's split and silhouette on Gaussian activations with a planted poison cluster. (ART's
  ``ClusteringAnalyzer.analyze_by_relative_size`` fails on numpy 2, ``cluster_id in
  np.where(...)``; its rule, the smaller cluster flagged below 0.35 of the class, is transcribed.)
- The stand-in poisoned set's counts and contents.
- The planted-backdoor model of ``tests/planted_backdoor.py``: segmented by prediction, the
  target class splits into its genuine rows and the stamped ones for the backdoored model and
  holds no stamped row for the clean one; segmented by label, it splits for both (the module
  docstring's caveat).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from art.defences.detector.poison.activation_defence import cluster_activations
from planted_backdoor import SIDE, TARGET, dark_corner, planted_model, white_corner
from sklearn.metrics import silhouette_score

from fl_poison.audit.activation_clustering import (
    ActivationClusteringSettings,
    activation_clustering,
    anomaly_indices,
    cluster_by_class,
    stamped_count,
    stand_in_poisoned_set,
)
from fl_poison.core.data import LabeledTensors
from fl_poison.core.settings import ConfigError

CLASSES = 4


def hand_silhouette(points: np.ndarray, clusters: np.ndarray) -> float:
    """Rousseeuw (1987): s(i) = (b - a) / max(a, b), a = mean distance to the own cluster's others, b = to the other's."""
    scores = []
    for i, point in enumerate(points):
        distances = [math.dist(point, other) for other in points]
        own = [d for j, d in enumerate(distances) if clusters[j] == clusters[i] and j != i]
        other = [d for j, d in enumerate(distances) if clusters[j] != clusters[i]]
        a, b = sum(own) / len(own), sum(other) / len(other)
        scores.append((b - a) / max(a, b))
    return sum(scores) / len(scores)


def test_two_dimensional_hand_case():
    # class 0 (target): five genuine rows around (0.5, 0.5), a stamped row among them at (0.5, 0)
    # and two stamped rows far off at (10, 10), (10, 11): 2-means puts the far two apart ->
    # relative size 2 / 8 = 0.25 < 0.35, silhouette ~0.9 > 0.1 -> flagged; suspicious = the far
    # two, both stamped: precision 2 / 2, recall 2 / 3 (the stamped row at (0.5, 0) is missed).
    # class 1: a 4 x 1 rectangle, split into its left and right sides: relative size 2 / 4 = 0.5,
    # silhouette: a = 1, b = (4 + sqrt(17)) / 2 = 4.0615528, s = (b - 1) / b = 0.7537887 for every
    # row. class 2: two rows, too few to split.
    target_rows = [(0, 0), (1, 0), (0, 1), (1, 1), (0.5, 0.5), (0.5, 0), (10, 10), (10, 11)]
    class_one = [(0, 0), (0, 1), (4, 0), (4, 1)]
    activations = np.array([*target_rows, *class_one, (3, 3), (3, 4)], dtype=float)
    classes = np.array([0] * 8 + [1] * 4 + [2] * 2)
    stamped = np.zeros(14, dtype=bool)
    stamped[[5, 6, 7]] = True
    result = cluster_by_class(activations, classes, stamped, 0, ActivationClusteringSettings())

    zero, one, two = result.classes
    far = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    assert (zero.rows, zero.stamped_rows, zero.smaller_cluster_rows) == (8, 3, 2)
    assert zero.relative_size == 0.25
    assert zero.silhouette == pytest.approx(hand_silhouette(activations[:8], far))
    assert zero.flagged
    assert (one.relative_size, one.flagged) == (0.5, False)
    assert one.silhouette == pytest.approx(1 - 1 / ((4 + math.sqrt(17)) / 2))
    assert one.silhouette == pytest.approx(0.7537887, abs=1e-7)
    assert (two.rows, two.smaller_cluster_rows, two.flagged) == (2, 0, False)
    assert math.isnan(two.silhouette) and math.isnan(two.silhouette_anomaly)
    # two split classes: median = their mean, MAD = half their gap -> anomaly = +-1 / 1.4826
    assert zero.silhouette_anomaly == pytest.approx(1 / 1.4826)
    assert one.silhouette_anomaly == pytest.approx(-1 / 1.4826)

    assert result.flagged_classes == (0,) and result.target_flagged
    np.testing.assert_array_equal(np.flatnonzero(result.suspicious), [6, 7])
    assert result.precision == 1.0
    assert result.recall == pytest.approx(2 / 3)
    assert (result.target_cluster_precision, result.target_cluster_recall) == (1.0, pytest.approx(2 / 3))


def test_anomaly_index_by_hand():
    # values 1, 2, 3, 4, 10: median 3, |v - 3| = 2, 1, 0, 1, 7 -> MAD 1, scale 1.4826
    np.testing.assert_allclose(anomaly_indices(np.array([1, 2, 3, 4, 10])), np.array([-2, -1, 0, 1, 7]) / 1.4826)
    assert np.isnan(anomaly_indices(np.array([0.3, 0.3, 0.3, 0.9]))).all()  # MAD 0


def gaussian_classes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes of 80 rows in 64 dimensions around random centres; 16 rows of class 0 shifted by 8 in 5 dimensions."""
    rng = np.random.default_rng(seed)
    blocks, classes, stamped = [], [], []
    for label in range(3):
        block = rng.normal(0.0, 3.0, 64) + rng.normal(0.0, 1.0, (80, 64))
        poisoned = np.zeros(80, dtype=bool)
        if label == 0:
            poisoned[:16] = True
            block[:16, :5] += 8.0
        blocks.append(block)
        classes += [label] * 80
        stamped.append(poisoned)
    return np.concatenate(blocks), np.array(classes), np.concatenate(stamped)


def test_target_split_matches_arts_pca_clustering():
    activations, classes, stamped = gaussian_classes()
    result = cluster_by_class(activations, classes, stamped, 0, ActivationClusteringSettings(reduction="pca"))
    separated = [activations[classes == label] for label in range(3)]
    art_clusters, art_reduced = cluster_activations(separated, nb_clusters=2, nb_dims=10, reduce="PCA")
    art_target = art_clusters[0]
    sizes = np.bincount(art_target)
    art_smaller = art_target == np.argmin(sizes)
    assert sizes.min() / len(art_target) < 0.35  # ART's relative-size rule flags the smaller cluster
    np.testing.assert_array_equal(result.suspicious[classes == 0], art_smaller)
    np.testing.assert_array_equal(art_smaller, stamped[classes == 0])
    target = result.classes[0]
    assert target.silhouette == pytest.approx(silhouette_score(art_reduced[0], art_target), rel=1e-9)
    assert target.relative_size == pytest.approx(0.2)
    assert result.precision == 1.0 and result.recall == 1.0


def test_ica_reduction_finds_the_planted_cluster():
    activations, classes, stamped = gaussian_classes()
    result = cluster_by_class(activations, classes, stamped, 0, ActivationClusteringSettings(reduction="ica"))
    assert result.target_flagged
    np.testing.assert_array_equal(result.suspicious[classes == 0], stamped[classes == 0])
    assert (result.target_cluster_precision, result.target_cluster_recall) == (1.0, 1.0)


def test_stamped_count_by_hand():
    assert stamped_count(36, 0.2) == 9  # 0.2 * 36 / 0.8 = 9: 9 of 45 rows = 0.2
    assert stamped_count(40, 0.25) == 13  # 13.33
    assert stamped_count(0, 0.2) == 0


def labelled_rows(count: int = 200) -> LabeledTensors:
    """Uniform images with a dark corner; labels cycle through the classes."""
    images = dark_corner(torch.rand(count, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(2)))
    return LabeledTensors(images, torch.arange(count) % CLASSES)


def test_stand_in_set():
    rows = labelled_rows()
    before = rows.x.clone()
    stand_in = stand_in_poisoned_set(rows, white_corner, TARGET, 0.2, seed=3)
    genuine = int((rows.y == TARGET).sum())  # 50 -> round(12.5) = 12 stamped
    assert stand_in.stamped.sum() == stamped_count(genuine, 0.2) == 12
    stamped = np.flatnonzero(stand_in.stamped)
    assert (rows.y[stamped] != TARGET).all()  # drawn from the other classes
    assert (stand_in.data.y[stamped] == TARGET).all()
    torch.testing.assert_close(stand_in.data.x[stamped], white_corner(rows.x[stamped]))
    kept = np.flatnonzero(~stand_in.stamped)
    torch.testing.assert_close(stand_in.data.x[kept], rows.x[kept])
    torch.testing.assert_close(stand_in.data.y[kept], rows.y[kept])
    torch.testing.assert_close(rows.x, before)  # the test set is not modified
    again = stand_in_poisoned_set(rows, white_corner, TARGET, 0.2, seed=3)
    np.testing.assert_array_equal(again.stamped, stand_in.stamped)
    capped = stand_in_poisoned_set(rows, white_corner, TARGET, 0.2, seed=3, max_rows=80)
    assert len(capped.source_rows) == 80 and len(set(capped.source_rows.tolist())) == 80


def prototype_model_and_rows(backdoor: bool) -> tuple[torch.nn.Module, LabeledTensors]:
    """The planted model with evidence ``W = prototypes - their mean`` and 50 noisy copies of each prototype."""
    generator = torch.Generator().manual_seed(4)
    prototypes = dark_corner(torch.rand(CLASSES, 1, SIDE, SIDE, generator=generator))
    flat = prototypes.flatten(1)
    model = planted_model(flat - flat.mean(dim=0), backdoor)
    labels = torch.arange(200) % CLASSES
    noisy = prototypes[labels] + 0.05 * torch.randn(200, 1, SIDE, SIDE, generator=generator)
    images = dark_corner(noisy.clamp(0.0, 1.0))
    with torch.no_grad():
        assert (model(images).argmax(dim=1) == labels).all()
    return model, LabeledTensors(images, labels)


def test_planted_backdoor_is_found_by_prediction_and_a_clean_model_is_not():
    backdoored, rows = prototype_model_and_rows(backdoor=True)
    weights = {name: value.clone() for name, value in backdoored.state_dict().items()}
    result = activation_clustering(backdoored, rows, white_corner, TARGET)
    target = next(summary for summary in result.classes if summary.label == TARGET)
    assert result.segment_by == "prediction"
    assert target.stamped_rows == 12 and target.rows == 62  # every stamped row is sent to the target
    assert result.target_flagged
    assert (result.target_cluster_precision, result.target_cluster_recall) == (1.0, 1.0)
    assert target.relative_size == pytest.approx(12 / 62)
    for name, value in backdoored.state_dict().items():
        torch.testing.assert_close(value, weights[name])  # the audited model is not modified

    clean, _ = prototype_model_and_rows(backdoor=False)
    by_prediction = activation_clustering(clean, rows, white_corner, TARGET)
    target = next(summary for summary in by_prediction.classes if summary.label == TARGET)
    assert target.stamped_rows == 0 and target.rows == 50  # the stamped rows stay in their own classes
    assert math.isnan(by_prediction.target_cluster_recall) or by_prediction.target_cluster_recall == 0.0

    by_label = activation_clustering(
        clean, rows, white_corner, TARGET, ActivationClusteringSettings(segment_by="label")
    )
    assert by_label.target_flagged  # mislabelled rows separate without any backdoor
    assert (by_label.target_cluster_precision, by_label.target_cluster_recall) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dims", 0),
        ("reduction", "tsne"),
        ("segment_by", "cluster"),
        ("stamped_share", 1.0),
        ("size_threshold", 0.6),
        ("silhouette_threshold", 2.0),
        ("max_rows", True),
    ],
)
def test_bad_settings_are_one_line_errors(field, value):
    with pytest.raises(ConfigError, match=f"^{field}: bad value"):
        ActivationClusteringSettings(**{field: value})
