"""STRIP (``fl_poison.audit.strip``): entropies by hand, the boundary against scipy, and constructed models.

The models are built by hand, not trained: a "mean pixel" model whose class probabilities are
known in closed form for constant images, and the planted-backdoor model of
``tests/planted_backdoor.py`` (a unit that fires on a bright bottom-right 2x2 corner and pushes
the target's logit up), which also serves, with that unit cut off, as the model without a
backdoor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from planted_backdoor import SIDE, TARGET, dark_corner, planted_model, white_corner
from scipy.stats import norm
from torch import nn

from fl_poison.audit.strip import (
    StripSettings,
    blend_entropies,
    detection_boundary,
    overlay_indices,
    strip_audit,
    strip_entropies,
    triggered_auroc,
)
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.settings import ConfigError

CLASSES = 4


def constant_images(values: list[float]) -> torch.Tensor:
    """One 1x8x8 image per value, every pixel equal to it."""
    return torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 1, SIDE, SIDE).clone()


def mean_pixel_model(gain: float) -> SplitClassifier:
    """Two classes, logits ``(gain * mean pixel, 0)``: P(class 0) = sigmoid(gain * mean)."""
    mean = nn.Linear(SIDE * SIDE, 1, bias=False)
    classifier = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        mean.weight.fill_(1.0 / (SIDE * SIDE))
        classifier.weight.copy_(torch.tensor([[gain], [0.0]]))
    return SplitClassifier(nn.Sequential(nn.Flatten(), mean), classifier).eval()


def hand_entropy(logits: list[float]) -> float:
    """The paper's per-blend entropy by hand: softmax, then -sum p log2 p."""
    exps = [math.exp(value) for value in logits]
    total = sum(exps)
    return -sum(e / total * math.log2(e / total) for e in exps if e > 0)


def test_normalised_entropy_of_a_constant_image_by_hand():
    # gain = 4 ln 3; pool = an all-0 and an all-1 image; input = all 0.5; N = 2 = the pool, so both
    # are drawn whatever the seed. Blends (alpha 0.5) have mean pixel 0.25 and 0.75: logits (ln 3, 0)
    # and (3 ln 3, 0), probabilities (3/4, 1/4) and (27/28, 1/28):
    #   H_1 = -(0.75 log2 0.75 + 0.25 log2 0.25) = 0.3112781 + 0.5 = 0.8112781
    #   H_2 = -(27/28 log2 27/28 + 1/28 log2 1/28) = 0.0505930 + 0.1716913 = 0.2222848
    #   H = (H_1 + H_2) / 2 = 0.5167815 (the mean over blends)
    model = mean_pixel_model(4.0 * math.log(3.0))
    pool = constant_images([0.0, 1.0])
    for seed in (0, 1, 2):
        entropies = strip_entropies(model, constant_images([0.5]), pool, overlays=2, seed=seed)
        assert entropies == pytest.approx([0.5167815], abs=1e-6)


def test_a_pool_row_is_never_blended_with_itself():
    # pool values 0, 0.5, 1, N = 2: row i is blended with the two others, e.g. row 0 (value 0)
    # with 0.5 and 1 -> blend means 0.25 and 0.5. Blending a row with itself would give its own
    # mean, so each expected value below differs from what a self-draw would give.
    gain = 3.0
    values = [0.0, 0.5, 1.0]
    pool = constant_images(values)
    expected = []
    for own, value in enumerate(values):
        means = [0.5 * value + 0.5 * other for index, other in enumerate(values) if index != own]
        expected.append(sum(hand_entropy([gain * mean, 0.0]) for mean in means) / 2)
    model = mean_pixel_model(gain)
    entropies = strip_entropies(model, pool, pool, overlays=2, seed=5, inputs_are_pool=True)
    np.testing.assert_allclose(entropies, expected, atol=1e-6)


def test_entropy_of_uniform_and_of_certain_outputs():
    uniform = SplitClassifier(nn.Flatten(), nn.Linear(SIDE * SIDE, 4))
    certain = SplitClassifier(nn.Flatten(), nn.Linear(SIDE * SIDE, 3))
    with torch.no_grad():
        uniform.classifier.weight.zero_()
        uniform.classifier.bias.zero_()
        certain.classifier.weight.zero_()
        certain.classifier.bias.copy_(torch.tensor([2000.0, 0.0, 0.0]))  # exp(-2000) underflows: 0 log 0 = 0
    images = constant_images([0.2, 0.9])
    np.testing.assert_allclose(blend_entropies(uniform, images).numpy(), [2.0, 2.0], atol=1e-12)  # log2 4
    np.testing.assert_array_equal(blend_entropies(certain, images).numpy(), [0.0, 0.0])


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 12),
    pool_size=st.integers(2, 15),
    overlays=st.integers(1, 20),
    exclude=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_overlay_draws(count, pool_size, overlays, exclude, seed):
    if exclude:
        count = pool_size
    draws = overlay_indices(count, pool_size, overlays, np.random.default_rng(seed), exclude)
    assert draws.shape == (count, overlays)
    assert draws.min() >= 0 and draws.max() < pool_size
    available = pool_size - 1 if exclude else pool_size
    for row, drawn in enumerate(draws):
        if exclude:
            assert row not in drawn
        if overlays <= available:
            assert len(set(drawn.tolist())) == overlays  # without replacement


def test_boundary_is_the_frr_quantile_of_scipys_normal_fit():
    entropies = np.random.default_rng(0).normal(0.8, 0.15, size=300)
    mean, spread = norm.fit(entropies)  # the maximum-likelihood fit ART's STRIP uses too
    for rate in (0.01, 0.05):
        assert detection_boundary(entropies, rate) == pytest.approx(norm.ppf(rate, mean, spread), rel=1e-9)
    assert detection_boundary(np.full(5, 0.4), 0.01) == pytest.approx(0.4)


def test_auroc_by_hand():
    # scores -H; pairs (triggered, clean) with the triggered one scored higher (lower H):
    # 0.1 < 0.9 yes, 0.1 < 0.5 yes, 0.6 < 0.9 yes, 0.6 < 0.5 no -> 3 / 4
    assert triggered_auroc(np.array([0.9, 0.5]), np.array([0.1, 0.6])) == pytest.approx(0.75)
    assert math.isnan(triggered_auroc(np.array([0.9]), np.array([])))


def planted(backdoor: bool) -> SplitClassifier:
    """Four classes by ``W x`` (W ~ 0.5 N(0, 1)); the corner unit and, with ``backdoor``, its push to the target."""
    evidence = 0.5 * torch.randn(CLASSES, SIDE * SIDE, generator=torch.Generator().manual_seed(0))
    return planted_model(evidence, backdoor)


def synthetic_rows(model: SplitClassifier, count: int = 400) -> LabeledTensors:
    """Uniform images with a dark corner (the unit never fires), labelled by the model."""
    images = dark_corner(torch.rand(count, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    return LabeledTensors(images, labels)


def test_strip_separates_a_planted_backdoor_and_not_a_clean_model():
    # A blend of a stamped image keeps corner pixels >= 0.5 (sum >= 2): the unit gives >= 10, the
    # target's logit +100, entropy ~0. A blend of two clean images keeps them <= 0.3: the unit is 0.
    backdoored = planted(backdoor=True)
    rows = synthetic_rows(backdoored)
    assert len(set(rows.y.tolist())) == CLASSES
    result = strip_audit(backdoored, rows, white_corner, TARGET)
    assert result.auroc > 0.99
    assert result.triggered_success.all()
    assert result.auroc_successful == pytest.approx(result.auroc)
    assert result.detection_rate > 0.95
    assert result.false_rejection_rate < 0.05
    # the rows: pool and audited rows disjoint, triggered = audited rows not of the target class
    assert len(result.pool_rows) == 100 and len(result.clean_rows) == 200
    assert not set(result.pool_rows) & set(result.clean_rows)
    np.testing.assert_array_equal(result.triggered_rows, result.clean_rows[rows.y[result.clean_rows].numpy() != TARGET])

    clean = planted(backdoor=False)
    unaffected = strip_audit(clean, rows, white_corner, TARGET)
    # the model ignores the corner and each triggered row is blended with its clean version's
    # overlays: the same entropies, so the two samples are one multiset and the AUROC is 1/2
    paired = np.isin(unaffected.clean_rows, unaffected.triggered_rows)
    np.testing.assert_array_equal(unaffected.triggered_entropies, unaffected.clean_entropies[paired])
    assert unaffected.auroc == 0.5
    assert not unaffected.triggered_success.any()
    assert math.isnan(unaffected.auroc_successful)
    assert unaffected.detection_rate < 0.05


def test_strip_audit_is_reproducible_by_seed():
    model = planted(backdoor=True)
    rows = synthetic_rows(model, 200)
    small = StripSettings(overlays=10, pool_rows=50, inputs=60, seed=4)
    first = strip_audit(model, rows, white_corner, TARGET, small)
    again = strip_audit(model, rows, white_corner, TARGET, small)
    other = strip_audit(model, rows, white_corner, TARGET, StripSettings(overlays=10, pool_rows=50, inputs=60, seed=5))
    np.testing.assert_array_equal(first.clean_entropies, again.clean_entropies)
    np.testing.assert_array_equal(first.pool_rows, again.pool_rows)
    assert not np.array_equal(first.pool_rows, other.pool_rows)


@pytest.mark.parametrize(
    ("field", "value"),
    [("overlays", 0), ("pool_rows", -1), ("inputs", 1.5), ("false_rejection_rate", 0.0), ("alpha", 1.0)],
)
def test_bad_settings_are_one_line_errors(field, value):
    with pytest.raises(ConfigError, match=f"^{field}: bad value"):
        StripSettings(**{field: value})


def test_a_pool_as_large_as_the_test_set_is_refused():
    model = planted(backdoor=True)
    with pytest.raises(ConfigError, match="^pool_rows: bad value 100"):
        strip_audit(model, synthetic_rows(model, 100), white_corner, TARGET)
