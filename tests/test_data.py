"""Data sources and partitions: digits, label skew, and local folders in the hub layouts."""

from __future__ import annotations

import io
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.data import DataSpec, LabeledTensors, all_partition_indices, client_data, dataset_info, source_of
from fl_poison.core.data import test_data as held_out_data  # not named test_*: pytest would collect it
from fl_poison.core.settings import ConfigError

NUM_DIGITS = len(load_digits().target)  # 1797
TEST_FRACTION = 0.2
# train_test_split takes ceil(test_size * n) rows for the test split.
DIGITS_TEST_ROWS = math.ceil(TEST_FRACTION * NUM_DIGITS)
DIGITS_TRAIN_ROWS = NUM_DIGITS - DIGITS_TEST_ROWS


def spec_of(**settings) -> DataSpec:
    return DataSpec.from_config(experiment_config(settings))


def train_labels(spec: DataSpec) -> np.ndarray:
    source = source_of(spec)
    return np.asarray(source.train[source.label_column])


def total_variation_skew(spec: DataSpec) -> float:
    """Mean over clients of 0.5 * sum_c |p_client(c) - p_global(c)|."""
    labels = train_labels(spec)
    num_classes = source_of(spec).num_classes
    overall = np.bincount(labels, minlength=num_classes) / len(labels)
    distances = []
    for rows in all_partition_indices(spec):
        local = np.bincount(labels[list(rows)], minlength=num_classes) / len(rows)
        distances.append(0.5 * np.abs(local - overall).sum())
    return float(np.mean(distances))


# ---------------------------------------------------------------- digits


def test_digits_split_sizes_match_the_hold_out():
    assert (DIGITS_TRAIN_ROWS, DIGITS_TEST_ROWS) == (1437, 360)
    spec = spec_of()
    assert len(source_of(spec).train) == DIGITS_TRAIN_ROWS
    assert len(held_out_data(spec)) == DIGITS_TEST_ROWS


def test_digits_iid_partitions_are_balanced_disjoint_and_complete():
    spec = spec_of(partitioning="iid", **{"num-clients": 10})
    partitions = all_partition_indices(spec)
    assert len(partitions) == 10
    sizes = [len(rows) for rows in partitions]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == DIGITS_TRAIN_ROWS
    every_row = [row for rows in partitions for row in rows]
    assert len(set(every_row)) == len(every_row)  # disjoint
    assert set(every_row) == set(range(DIGITS_TRAIN_ROWS))  # complete
    # The tensors follow the indices.
    assert [len(client_data(spec, pid)) for pid in range(10)] == sizes


def test_digits_tensors_are_float32_in_unit_range_and_match_sklearn():
    spec = spec_of()
    data = client_data(spec, 0)
    assert data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64
    assert data.x.shape == (len(data), 1, 8, 8)
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
    assert float(data.x.max()) == 1.0  # digits reach 16, which scales to exactly 1
    test = held_out_data(spec)
    assert test.x.shape == (DIGITS_TEST_ROWS, 1, 8, 8)
    assert set(test.y.tolist()) == set(range(10))
    # Every test image, scaled back by 16, is one of sklearn's images with the same label.
    bunch = load_digits()
    lookup = {
        image.astype(np.float32).tobytes(): int(label) for image, label in zip(bunch.images, bunch.target, strict=True)
    }
    for image, label in zip(test.x[:50], test.y[:50], strict=True):
        key = (image[0].numpy() * 16).astype(np.float32).tobytes()
        assert lookup[key] == int(label)


def test_digits_dataset_info():
    info = dataset_info(spec_of())
    assert info.num_classes == 10
    assert info.input_shape == (1, 8, 8)


def test_same_seed_same_partitions_different_seed_different_iid_partitions():
    first = all_partition_indices(spec_of(seed=1))
    all_partition_indices.cache_clear()
    again = all_partition_indices(spec_of(seed=1))
    other = all_partition_indices(spec_of(seed=2))
    assert first == again
    assert first != other
    assert set(first[0]) != set(other[0])
    # Same seed also gives the same tensors.
    assert torch.equal(client_data(spec_of(seed=1), 3).x, client_data(spec_of(seed=1), 3).x)


@pytest.mark.parametrize("seed", [0, 1])
def test_dirichlet_skew_grows_as_alpha_shrinks(seed):
    skews = [
        total_variation_skew(spec_of(partitioning="dirichlet", seed=seed, **{"dirichlet-alpha": alpha}))
        for alpha in (100.0, 1.0, 0.1)
    ]
    assert skews[0] < skews[1] < skews[2], skews


def test_dirichlet_partitions_are_disjoint_and_respect_min_size():
    spec = spec_of(partitioning="dirichlet", **{"dirichlet-alpha": 0.3, "min-partition-size": 20})
    partitions = all_partition_indices(spec)
    every_row = [row for rows in partitions for row in rows]
    assert len(set(every_row)) == len(every_row)
    assert min(len(rows) for rows in partitions) >= 20


@pytest.mark.filterwarnings("ignore:Classes.*will NOT be used:UserWarning")
def test_pathological_gives_each_client_at_most_two_labels():
    spec = spec_of(partitioning="pathological", **{"classes-per-client": 2})
    labels = train_labels(spec)
    partitions = all_partition_indices(spec)
    for rows in partitions:
        assert len(rows) > 0
        assert len(set(labels[list(rows)].tolist())) <= 2
    every_row = [row for rows in partitions for row in rows]
    assert len(set(every_row)) == len(every_row)
    for pid in range(3):
        assert len(set(client_data(spec, pid).y.tolist())) <= 2


def test_pathological_with_more_classes_than_exist_raises():
    spec = spec_of(partitioning="pathological", **{"classes-per-client": 11})
    with pytest.raises(ConfigError) as caught:
        client_data(spec, 0)
    assert str(caught.value).startswith("classes-per-client:")
    assert "\n" not in str(caught.value)


def test_partition_id_out_of_range_raises():
    with pytest.raises(ConfigError):
        client_data(spec_of(), 10)


# ---------------------------------------------------------------- local folders in hub layouts

CLASS_NAMES = [f"class{k}" for k in range(10)]


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path_factory, monkeypatch):
    """Keep the datasets cache that load_dataset writes for local folders out of ~/.cache."""
    cache = tmp_path_factory.mktemp("hf_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


def marked_gray(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A random grayscale image whose pixels encode its label and orientation.

    Pixel (0, 0) = 20 * label, the top-right pixel is 255 and the bottom-left one 0.
    """
    image = rng.integers(30, 226, size=(size, size), dtype=np.uint8)
    image[0, 0] = 20 * label
    image[0, size - 1] = 255
    image[size - 1, 0] = 0
    return image


def marked_rgb(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random RGB image; pixel (0, 0) is (20 * label, 255 - 20 * label, 7); top-right is white."""
    image = rng.integers(30, 226, size=(size, size, 3), dtype=np.uint8)
    image[0, 0] = (20 * label, 255 - 20 * label, 7)
    image[0, size - 1] = 255
    image[size - 1, 0] = 0
    return image


def check_gray_markers(data) -> None:
    assert data.x.dtype == torch.float32
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    pixels = torch.round(data.x * 255).to(torch.int64)
    assert torch.equal(pixels[:, 0, 0, 0], 20 * data.y)
    assert bool((pixels[:, 0, 0, -1] == 255).all())
    assert bool((pixels[:, 0, -1, 0] == 0).all())


def check_rgb_markers(data) -> None:
    assert data.x.dtype == torch.float32
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    pixels = torch.round(data.x * 255).to(torch.int64)
    assert torch.equal(pixels[:, 0, 0, 0], 20 * data.y)
    assert torch.equal(pixels[:, 1, 0, 0], 255 - 20 * data.y)
    assert bool((pixels[:, 2, 0, 0] == 7).all())
    assert bool((pixels[:, :, 0, -1] == 255).all())
    assert bool((pixels[:, :, -1, 0] == 0).all())


def all_clients(spec: DataSpec):
    parts = [client_data(spec, pid) for pid in range(spec.num_partitions)]
    return torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), [len(p) for p in parts]


def test_save_to_disk_folder_like_mnist(tmp_path):
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASS_NAMES)})

    def split(n: int) -> datasets.Dataset:
        labels = [i % 10 for i in range(n)]
        images = [Image.fromarray(marked_gray(label, rng), mode="L") for label in labels]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    folder = tmp_path / "mnist_like"
    datasets.DatasetDict({"train": split(60), "test": split(20)}).save_to_disk(str(folder))

    spec = spec_of(dataset=str(folder), **{"num-clients": 3})
    info = dataset_info(spec)
    assert info.num_classes == 10
    assert info.input_shape == (1, 28, 28)

    x, y, sizes = all_clients(spec)
    assert sizes == [20, 20, 20]
    assert x.shape == (60, 1, 28, 28)
    assert sorted(y.tolist()) == sorted(i % 10 for i in range(60))
    check_gray_markers(client_data(spec, 0))

    test = held_out_data(spec)
    assert test.x.shape == (20, 1, 28, 28)
    assert sorted(test.y.tolist()) == sorted(i % 10 for i in range(20))
    check_gray_markers(test)


def test_imagefolder_layout_through_federated_dataset(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "imagefolder_like"
    counts = {"train": 60, "test": 20}
    for split, n in counts.items():
        for i in range(n):
            label = i % 10
            target = folder / split / CLASS_NAMES[label]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(marked_gray(label, rng), mode="L").save(target / f"{i}.png")

    spec = spec_of(dataset=str(folder), **{"num-clients": 4})
    source = source_of(spec)
    assert source.image_column == "image"
    assert source.train.features["label"].names == CLASS_NAMES
    info = dataset_info(spec)
    assert info.num_classes == 10
    assert info.input_shape == (1, 28, 28)

    x, y, sizes = all_clients(spec)
    assert sizes == [15, 15, 15, 15]
    assert x.shape == (60, 1, 28, 28)
    assert sorted(y.tolist()) == sorted(i % 10 for i in range(60))
    for pid in range(4):
        check_gray_markers(client_data(spec, pid))

    test = held_out_data(spec)
    assert test.x.shape == (20, 1, 28, 28)
    assert sorted(test.y.tolist()) == sorted(i % 10 for i in range(20))
    check_gray_markers(test)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_parquet_folder_like_cifar_without_test_split(tmp_path):
    rng = np.random.default_rng(2)
    n = 80
    labels = [i % 10 for i in range(n)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASS_NAMES)})
    train = datasets.Dataset.from_dict(
        {"img": [{"bytes": png_bytes(marked_rgb(label, rng)), "path": None} for label in labels], "label": labels},
        features=features,
    )
    folder = tmp_path / "cifar_like"
    folder.mkdir()
    train.to_parquet(str(folder / "train.parquet"))

    test_fraction = 0.25
    spec = spec_of(dataset=str(folder), **{"num-clients": 3, "test-fraction": test_fraction})
    source = source_of(spec)
    assert source.image_column == "img"
    info = dataset_info(spec)
    assert info.num_classes == 10
    assert info.input_shape == (3, 32, 32)

    expected_test = math.ceil(test_fraction * n)
    test = held_out_data(spec)
    assert test.x.shape == (expected_test, 3, 32, 32)
    # Stratified hold-out: every class keeps its share in the test set.
    assert np.bincount(test.y.numpy(), minlength=10).tolist() == [expected_test // 10] * 10
    check_rgb_markers(test)

    x, y, sizes = all_clients(spec)
    assert sum(sizes) == n - expected_test
    assert max(sizes) - min(sizes) <= 1
    assert x.shape == (n - expected_test, 3, 32, 32)
    assert np.bincount(y.numpy(), minlength=10).tolist() == [(n - expected_test) // 10] * 10
    for pid in range(3):
        check_rgb_markers(client_data(spec, pid))


# ---------------------------------------------------------------- scaled-down studies


def test_train_rows_partitions_a_seeded_subset_of_the_training_split():
    spec = spec_of(partitioning="iid", **{"num-clients": 4, "train-rows": 400, "seed": 5})
    partitions = all_partition_indices(spec)
    used = sorted(row for members in partitions for row in members)
    assert len(used) == len(set(used)) == 400  # IID: disjoint, complete over the subset
    assert max(used) < DIGITS_TRAIN_ROWS
    assert [len(members) for members in partitions] == [100, 100, 100, 100]
    expected = sorted(np.random.default_rng([5, 4241]).choice(DIGITS_TRAIN_ROWS, size=400, replace=False).tolist())
    assert used == expected
    # the client's tensors are those rows of the training split
    source = source_of(spec)
    first = client_data(spec, 0)
    assert torch.equal(first.y, torch.tensor(np.asarray(source.train[source.label_column])[list(partitions[0])]))
    other_seed = spec_of(partitioning="iid", **{"num-clients": 4, "train-rows": 400, "seed": 6})
    assert sorted(r for m in all_partition_indices(other_seed) for r in m) != used


def test_train_rows_above_the_split_is_refused_in_one_line():
    from fl_poison.core.data import check_partition_plan

    with pytest.raises(ConfigError, match=r"^train-rows: bad value 5000; allowed: 0 \(all\) \.\. 1437"):
        check_partition_plan(spec_of(**{"train-rows": 5000}))


def test_test_rows_is_one_fixed_subset_for_every_seed():
    full = held_out_data(spec_of())
    for seed in (1, 2):
        part = held_out_data(spec_of(**{"test-rows": 100, "seed": seed}))
        rows = sorted(np.random.default_rng(4243).choice(DIGITS_TEST_ROWS, size=100, replace=False).tolist())
        assert torch.equal(part.y, full.y[rows])
        assert torch.equal(part.x, full.x[rows])
    assert len(held_out_data(spec_of(**{"test-rows": 10_000}))) == DIGITS_TEST_ROWS  # more than there are: all


def test_rows_takes_the_samples_at_the_positions_in_their_order():
    data = LabeledTensors(torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1) / 10, torch.tensor([4, 3, 2, 1, 0]))
    for positions in ((3, 0, 3), np.array([3, 0, 3]), [3, 0, 3]):
        taken = data.rows(positions)
        assert taken.x.flatten().tolist() == pytest.approx([0.3, 0.0, 0.3])
        assert taken.y.tolist() == [1, 4, 1]
    assert len(data.rows(())) == 0
