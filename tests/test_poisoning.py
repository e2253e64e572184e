"""Data poisoning: label flipping, triggers and trigger stamping, checked against hand-built tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clients.attacks.blend import blend_pattern, blend_trigger
from clients.attacks.dba import split_vertically
from clients.backdoors import poison_with_trigger
from clients.label_flipping import ALL_CLASSES, flip_source_to_target, random_labels
from clients.triggers import Trigger, default_trigger_size, patch_trigger
from fl_poison.core.data import LabeledTensors


def numbered_data(labels: list[int], channels: int = 1, side: int = 2) -> LabeledTensors:
    """Images whose every pixel holds the sample index (so rows can be identified), with ``labels``."""
    n = len(labels)
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, channels, side, side).clone()
    return LabeledTensors(x, torch.tensor(labels, dtype=torch.int64))


def sample_index(image: torch.Tensor) -> int:
    value = float(image.flatten()[0])
    assert torch.all(image == value)
    return int(value)


# ---------------------------------------------------------------- random label flipping


def test_random_labels_keep_images_and_stay_in_range():
    data = numbered_data([0, 1, 2, 3, 4] * 40)
    flipped = random_labels(data, num_classes=7, seed=3)
    assert flipped.x is data.x or torch.equal(flipped.x, data.x)
    assert flipped.y.shape == data.y.shape and flipped.y.dtype == data.y.dtype
    assert int(flipped.y.min()) >= 0 and int(flipped.y.max()) <= 6
    assert set(flipped.y.tolist()) == set(range(7))  # 200 draws from 7 classes hit all of them
    assert torch.equal(data.y, torch.tensor([0, 1, 2, 3, 4] * 40))  # input untouched


def test_random_labels_are_deterministic_per_seed():
    data = numbered_data(list(range(10)) * 10)
    assert torch.equal(random_labels(data, 10, 5).y, random_labels(data, 10, 5).y)
    assert not torch.equal(random_labels(data, 10, 5).y, random_labels(data, 10, 6).y)


# ---------------------------------------------------------------- source -> target flipping

LABELS = [2, 0, 1, 2, 3, 2, 1, 0, 3, 2, 1, 3]  # four samples of class 2 at rows 0, 3, 5, 9
SOURCE_ROWS = [0, 3, 5, 9]


def test_flip_at_rate_half_flips_all_source_and_keeps_as_many_others():
    data = numbered_data(LABELS)
    poisoned = flip_source_to_target(data, source=2, target=0, rate=0.5, seed=1)
    rows = [sample_index(image) for image in poisoned.x]
    assert len(poisoned) == 8
    assert len(set(rows)) == 8
    flipped = [(row, int(label)) for row, label in zip(rows, poisoned.y, strict=True) if row in SOURCE_ROWS]
    kept = [(row, int(label)) for row, label in zip(rows, poisoned.y, strict=True) if row not in SOURCE_ROWS]
    assert sorted(row for row, _ in flipped) == SOURCE_ROWS
    assert all(label == 0 for _, label in flipped)
    assert len(kept) == 4
    assert all(label == LABELS[row] and LABELS[row] != 2 for row, label in kept)
    # the poisoned share is the injection rate
    assert len(flipped) / len(poisoned) == 0.5


# kept: round(4 * 0.2 / 0.8) = 1; 4 * 0.75 / 0.25 = 12 > 8 others, so all 8
@pytest.mark.parametrize("rate, kept", [(0.8, 1), (0.25, 8)])
def test_flip_number_of_kept_samples(rate, kept):
    data = numbered_data(LABELS)
    poisoned = flip_source_to_target(data, source=2, target=3, rate=rate, seed=0)
    rows = [sample_index(image) for image in poisoned.x]
    assert len(poisoned) == 4 + kept
    assert sorted(r for r in rows if r in SOURCE_ROWS) == SOURCE_ROWS
    for row, label in zip(rows, poisoned.y.tolist(), strict=True):
        assert label == (3 if row in SOURCE_ROWS else LABELS[row])


def test_flip_at_rate_one_keeps_only_the_flipped_source_samples():
    data = numbered_data(LABELS)
    poisoned = flip_source_to_target(data, source=2, target=1, rate=1.0, seed=0)
    assert sorted(sample_index(image) for image in poisoned.x) == SOURCE_ROWS
    assert poisoned.y.tolist() == [1, 1, 1, 1]


def test_flip_is_deterministic_per_seed_and_leaves_the_input_alone():
    data = numbered_data(LABELS)
    first = flip_source_to_target(data, 2, 0, 0.5, seed=4)
    second = flip_source_to_target(data, 2, 0, 0.5, seed=4)
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert data.y.tolist() == LABELS


def test_all_to_one_flips_a_share_of_non_target_samples_and_keeps_everything():
    labels = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]  # N = 20, five of target 0
    data = numbered_data(labels)
    poisoned = flip_source_to_target(data, source=ALL_CLASSES, target=0, rate=0.4, seed=2)
    assert torch.equal(poisoned.x, data.x)  # every sample kept, in order
    changed = [i for i in range(20) if poisoned.y[i] != labels[i]]
    assert len(changed) == 8  # round(0.4 * 20)
    assert all(labels[i] != 0 and int(poisoned.y[i]) == 0 for i in changed)
    assert data.y.tolist() == labels


def test_all_to_one_is_capped_by_the_non_target_samples():
    labels = [0, 0, 0, 1, 2]
    poisoned = flip_source_to_target(numbered_data(labels), ALL_CLASSES, target=0, rate=1.0, seed=0)
    assert poisoned.y.tolist() == [0, 0, 0, 0, 0]


def test_no_source_samples_returns_the_data_unchanged():
    data = numbered_data([0, 1, 3, 1])
    poisoned = flip_source_to_target(data, source=2, target=0, rate=0.5, seed=0)
    assert torch.equal(poisoned.x, data.x) and torch.equal(poisoned.y, data.y)


# ---------------------------------------------------------------- triggers


def test_trigger_apply_formula_by_hand():
    images = torch.tensor([[[[0.0, 0.5], [1.0, 0.2]]]])  # (1, 1, 2, 2)
    mask = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])
    pattern = torch.tensor([[[0.9, 0.8], [0.0, 0.6]]])
    stamped = Trigger(mask, pattern).apply(images)
    # x * (1 - m) + p * m, pixel by pixel
    expected = torch.tensor([[[[0.0, 0.8], [0.5, 0.2 * 0.75 + 0.6 * 0.25]]]])
    assert torch.allclose(stamped, expected, atol=1e-7)
    assert torch.equal(images, torch.tensor([[[[0.0, 0.5], [1.0, 0.2]]]]))  # input untouched


@pytest.mark.parametrize(
    "position, rows, columns",
    [
        ("bottom-right", range(5, 8), range(5, 8)),
        ("bottom-left", range(5, 8), range(0, 3)),
        ("top-right", range(0, 3), range(5, 8)),
        ("top-left", range(0, 3), range(0, 3)),
    ],
)
def test_patch_trigger_mask_is_the_corner_square(position, rows, columns):
    trigger = patch_trigger((2, 8, 8), size=3, value=0.7, position=position)
    expected = np.zeros((2, 8, 8), np.float32)
    for r in rows:
        for c in columns:
            expected[:, r, c] = 1.0
    assert np.array_equal(trigger.mask.numpy(), expected)
    assert torch.allclose(trigger.pattern, torch.full((2, 8, 8), 0.7))
    stamped = trigger.apply(torch.zeros(1, 2, 8, 8))
    assert float(stamped.sum()) == pytest.approx(0.7 * 9 * 2)


def test_red_patch_on_rgb_and_grey_patch_on_one_channel():
    red = patch_trigger((3, 6, 6), size=2, value=1.0, position="bottom-right", red=True)
    assert torch.all(red.pattern[0] == 1.0)
    assert torch.all(red.pattern[1:] == 0.0)
    stamped = red.apply(torch.full((1, 3, 6, 6), 0.5))
    assert stamped[0, :, 5, 5].tolist() == [1.0, 0.0, 0.0]
    assert stamped[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5]
    grey = patch_trigger((1, 6, 6), size=2, value=0.6, position="top-left", red=True)  # red needs 3 channels
    assert torch.allclose(grey.pattern, torch.full((1, 6, 6), 0.6))


def test_blend_trigger_is_a_convex_mix():
    shape = (1, 4, 4)
    trigger = blend_trigger(shape, alpha=0.25)
    images = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    pattern = trigger.pattern
    expected = 0.75 * images.double() + 0.25 * pattern.double()
    assert torch.allclose(trigger.apply(images).double(), expected, atol=1e-6)
    assert torch.all(trigger.mask == 0.25)


def test_default_blend_pattern_is_a_one_pixel_checkerboard():
    pattern = blend_pattern((3, 5, 5))
    assert pattern.shape == (3, 5, 5) and pattern.dtype == torch.float32
    for row in range(5):
        for column in range(5):
            expected = float((row + column) % 2)  # 0 at the top-left corner, alternating
            assert torch.all(pattern[:, row, column] == expected)


def test_blend_pattern_from_an_image_file(tmp_path):
    # A 4x2 (width x height) RGB image with constant colour -> resizing keeps the colour.
    path = tmp_path / "trigger.png"
    Image.new("RGB", (4, 2), color=(255, 0, 51)).save(path)
    pattern = blend_pattern((3, 6, 8), str(path))
    assert pattern.shape == (3, 6, 8) and pattern.dtype == torch.float32
    assert torch.allclose(pattern[0], torch.ones(6, 8))
    assert torch.allclose(pattern[1], torch.zeros(6, 8))
    assert torch.allclose(pattern[2], torch.full((6, 8), 51 / 255))
    grey = blend_pattern((1, 3, 3), str(path))  # converted to one channel (PIL's luma)
    assert grey.shape == (1, 3, 3)
    luma = round((255 * 299 + 0 * 587 + 51 * 114) / 1000)
    assert torch.allclose(grey, torch.full((1, 3, 3), luma / 255), atol=1.5 / 255)


def test_blend_pattern_keeps_the_layout_of_a_non_constant_image(tmp_path):
    # Left half black, right half white, 8x4 image resized to the same size -> exact.
    array = np.zeros((4, 8), np.uint8)
    array[:, 4:] = 255
    path = tmp_path / "halves.png"
    Image.fromarray(array, mode="L").save(path)
    pattern = blend_pattern((1, 4, 8), str(path))
    assert np.array_equal(pattern[0].numpy(), array.astype(np.float32) / 255.0)


@pytest.mark.parametrize("width", [3, 6])
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_split_vertically_parts_are_disjoint_and_sum_to_the_global_mask(width, parts):
    global_trigger = patch_trigger((3, 10, 10), size=width, value=1.0, position="bottom-right", red=True)
    local = split_vertically(global_trigger, parts)
    assert len(local) == parts
    total = torch.zeros_like(global_trigger.mask)
    for part in local:
        assert torch.equal(part.pattern, global_trigger.pattern)
        overlap = (total > 0) & (part.mask > 0)
        assert not overlap.any()
        total = total + part.mask
    assert torch.equal(total, global_trigger.mask)
    # strips are whole columns of the trigger, as even as possible
    widths = [int((part.mask.sum(dim=(0, 1)) > 0).sum()) for part in local]
    assert sum(widths) == width
    assert max(widths) - min(widths) <= 1
    assert sorted(widths, reverse=True) == widths


def test_split_vertically_strips_by_hand():
    trigger = patch_trigger((1, 4, 4), size=3, value=1.0, position="top-left")
    left, right = split_vertically(trigger, 2)
    expected_left = torch.zeros(1, 4, 4)
    expected_left[0, 0:3, 0:2] = 1.0
    expected_right = torch.zeros(1, 4, 4)
    expected_right[0, 0:3, 2] = 1.0
    assert torch.equal(left.mask, expected_left)
    assert torch.equal(right.mask, expected_right)


@pytest.mark.parametrize("image_size, expected", [(8, 3), (28, 5), (32, 6), (64, 12), (2, 2)])
def test_default_trigger_size(image_size, expected):
    assert default_trigger_size(image_size) == expected


# ---------------------------------------------------------------- stamping a share of the samples


@pytest.mark.parametrize("n, rate", [(10, 0.3), (25, 0.5), (7, 1.0), (40, 0.1)])
def test_poison_with_trigger_stamps_exactly_round_rate_n(n, rate):
    generator = torch.Generator().manual_seed(n)
    images = torch.rand(n, 1, 6, 6, generator=generator) * 0.5  # below the patch value everywhere
    labels = torch.randint(0, 5, (n,), generator=generator)
    data = LabeledTensors(images.clone(), labels.clone())
    trigger = patch_trigger((1, 6, 6), size=2, value=1.0, position="bottom-right")
    poisoned = poison_with_trigger(data, trigger, rate, target=9, seed=1)

    expected_count = round(rate * n)
    stamped = [i for i in range(n) if torch.all(poisoned.x[i, 0, 4:, 4:] == 1.0)]
    untouched = [i for i in range(n) if torch.equal(poisoned.x[i], images[i])]
    assert len(stamped) == expected_count
    assert sorted(stamped + untouched) == list(range(n))
    for i in stamped:
        assert int(poisoned.y[i]) == 9
        # outside the patch the image is the original
        outside = trigger.mask[0] == 0
        assert torch.equal(poisoned.x[i, 0][outside], images[i, 0][outside])
    for i in untouched:
        assert int(poisoned.y[i]) == int(labels[i])
    # the input is not modified
    assert torch.equal(data.x, images) and torch.equal(data.y, labels)


def test_poison_with_trigger_is_deterministic_per_seed():
    data = LabeledTensors(torch.zeros(20, 1, 4, 4), torch.arange(20) % 3)
    trigger = patch_trigger((1, 4, 4), size=1, value=1.0, position="top-left")
    first = poison_with_trigger(data, trigger, 0.5, target=2, seed=8)
    assert torch.equal(first.x, poison_with_trigger(data, trigger, 0.5, target=2, seed=8).x)
    draws = {tuple(poison_with_trigger(data, trigger, 0.5, 2, seed).x[:, 0, 0, 0].tolist()) for seed in range(5)}
    assert len(draws) > 1
