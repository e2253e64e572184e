"""Client partitions and the test set as in-memory tensors, decoded once per process and cached on disk.

A :class:`DataSpec` holds the settings that determine the data. :func:`client_data`,
:func:`test_data`, :func:`all_partition_indices` and :func:`dataset_info` are memoised on it (and
:func:`node_data`, a SuperNode's own folder, on its path): in a Ray actor that hosts many
virtual clients, or in the ServerApp, each partition is decoded into tensors once and reused
every round. Behind that memoisation lies the node-local cache of
:mod:`fl_poison.core.data_cache`: what one process decodes, the next reads back as memory-mapped
``.npy`` files, without importing ``datasets`` or ``flwr_datasets`` (on real SuperNodes every
message starts a new ClientApp process). Tensors read from the cache are read-only: nothing may
modify the data in place (poisoning works on copies). The caches hold immutable results of pure
functions of the spec (no per-client state lives here; that goes in Flower's ``context.state``).

``datasets`` and ``flwr_datasets`` are imported only when a source is read (see
:mod:`fl_poison.core.data_sources` and :mod:`fl_poison.core.partitioning`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_poison.core import data_cache
from fl_poison.core.config import DATASET_ALIASES, ConfigError, ExperimentConfig
from fl_poison.core.data_sources import (
    SourceSplits,
    check_image_headers,
    class_values,
    load_node_folder,
    load_source,
)
from fl_poison.core.partitioning import PartitionError, build_partitioner, partition_rows

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner

# The DataSpec fields that determine the source splits (and so the test set and the dataset's facts).
SOURCE_FIELDS = ("dataset", "image_column", "label_column", "test_fraction")


@dataclass(frozen=True)
class DataSpec:
    """The settings that fully determine every client's partition and the test set.

    Parameters
    ----------
    dataset, image_column, label_column, test_fraction :
        The source (see :func:`fl_poison.core.data_sources.load_source`).
    partitioning, dirichlet_alpha, min_partition_size, classes_per_client, samples_per_client :
        How the training split is divided (see :func:`fl_poison.core.partitioning.build_partitioner`).
    seed : int
        Seed of the partitioning.
    num_partitions : int
        Number of clients.
    train_rows : int
        Training rows used, 0 for all: the partitioner divides a random subset of that many rows
        drawn with ``seed`` (see :func:`training_subset`).
    test_rows : int
        Test rows evaluated on, 0 for all: one fixed random subset (see :func:`test_subset`).
    """

    dataset: str
    image_column: str
    label_column: str
    test_fraction: float
    partitioning: str
    dirichlet_alpha: float
    min_partition_size: int
    classes_per_client: int
    seed: int
    num_partitions: int
    samples_per_client: int = 500
    train_rows: int = 0
    test_rows: int = 0

    @classmethod
    def from_config(cls, config: ExperimentConfig, num_partitions: int | None = None) -> DataSpec:
        """The data part of an experiment config.

        Parameters
        ----------
        config : ExperimentConfig
            The run's validated settings.
        num_partitions : int | None
            Number of partitions; None (or 0) for ``num-clients``.
        """
        return cls(
            dataset=config.dataset,
            image_column=config.image_column,
            label_column=config.label_column,
            test_fraction=config.test_fraction,
            partitioning=config.partitioning,
            dirichlet_alpha=config.dirichlet_alpha,
            min_partition_size=config.min_partition_size,
            classes_per_client=config.classes_per_client,
            seed=config.seed,
            num_partitions=num_partitions or config.num_clients,
            samples_per_client=config.samples_per_client,
            train_rows=config.train_rows,
            test_rows=config.test_rows,
        )


@dataclass(frozen=True)
class LabeledTensors:
    """Inputs scaled to [0, 1] as ``float32`` ``(N, C, H, W)`` and integer labels ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, positions: Sequence[int] | np.ndarray) -> LabeledTensors:
        """The samples at ``positions``, in that order.

        Parameters
        ----------
        positions : Sequence[int] | np.ndarray
            Row positions.
        """
        index = torch.as_tensor(positions, dtype=torch.long)
        return LabeledTensors(self.x[index], self.y[index])


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data."""

    num_classes: int
    input_shape: tuple[int, int, int]


@lru_cache(maxsize=4)
def _source(dataset: str, image_column: str, label_column: str, test_fraction: float) -> SourceSplits:
    return load_source(dataset, image_column, label_column, test_fraction)


def source_of(spec: DataSpec) -> SourceSplits:
    """The raw splits of ``spec``'s dataset (memoised per process; imports ``datasets``).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings (only the source fields matter).
    """
    import datasets

    datasets.disable_progress_bars()
    return _source(spec.dataset, spec.image_column, spec.label_column, spec.test_fraction)


def partitioner_of(spec: DataSpec) -> Partitioner:
    """The partitioner that divides ``spec``'s training split, checked against the dataset; no data assigned yet.

    :func:`all_partition_indices` reads its partitions; ``fl-poison plot`` draws their label
    distributions after :func:`fl_poison.core.partitioning.assign_training_split`. Reads the
    source (never the disk cache).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.

    Raises
    ------
    ConfigError
        For more classes per client than the data has, or more samples per client than rows.
    """
    source = source_of(spec)
    if spec.partitioning == "pathological" and spec.classes_per_client > source.num_classes:
        raise ConfigError.bad_value(
            "classes-per-client", spec.classes_per_client, f"an integer between 1 and {source.num_classes}"
        )
    rows = used_training_rows(spec, len(source.train))
    if spec.partitioning == "random-subsets" and spec.samples_per_client > rows:
        raise ConfigError.bad_value(
            "samples-per-client",
            spec.samples_per_client,
            f"an integer between 1 and {rows} (the training rows)",
        )
    return build_partitioner(
        spec.partitioning,
        spec.num_partitions,
        source.label_column,
        spec.seed,
        spec.dirichlet_alpha,
        spec.min_partition_size,
        spec.classes_per_client,
        spec.samples_per_client,
    )


@lru_cache(maxsize=8)
def all_partition_indices(spec: DataSpec) -> tuple[tuple[int, ...], ...]:
    """Row indices of the training split for every partition id (memoised per process, cached on disk).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.

    Raises
    ------
    ConfigError
        When the partitioner cannot divide the training split.
    """
    entry = spec_cache_entry(spec)
    cached = data_cache.load_partitions(entry, spec.num_partitions) if entry is not None else None
    if cached is not None:
        return cached
    train = source_of(spec).train
    subset = training_subset(spec, len(train))
    try:
        if subset is None:
            rows = partition_rows(partitioner_of(spec), train, spec.seed)
        else:
            rows = [
                [subset[row] for row in members]
                for members in partition_rows(partitioner_of(spec), train.select(subset), spec.seed)
            ]
    except PartitionError as error:
        if spec.partitioning != "dirichlet":
            raise
        raise ConfigError(
            f"min-partition-size: bad value {spec.min_partition_size}; allowed: a smaller one, a larger dirichlet-alpha "
            f"({spec.dirichlet_alpha:g}) or fewer clients (the Dirichlet draws failed: {error.reason})"
        ) from None
    partitions = tuple(tuple(int(row) for row in members) for members in rows)
    if entry is not None:
        data_cache.store_partitions(entry, partitions)
    return partitions


# Salts of the subset draws, so that they do not repeat the partitioner's or the threat model's draws.
TRAIN_SUBSET_SALT, TEST_SUBSET_SALT = 4241, 4243


def used_training_rows(spec: DataSpec, available: int) -> int:
    """How many training rows the partitioner divides: ``train-rows`` when set, else all ``available``.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.
    available : int
        Rows of the training split.

    Raises
    ------
    ConfigError
        When ``train-rows`` asks for more rows than the split has.
    """
    if spec.train_rows > available:
        raise ConfigError.bad_value("train-rows", spec.train_rows, f"0 (all) .. {available} (the training rows)")
    return spec.train_rows or available


def training_subset(spec: DataSpec, available: int) -> list[int] | None:
    """The training rows the partitioner divides (sorted), or None for all of them.

    Drawn without replacement with ``seed``: different seeds give different subsets, like they
    give different partitions.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.
    available : int
        Rows of the training split.
    """
    used = used_training_rows(spec, available)
    if used == available:
        return None
    generator = np.random.default_rng([spec.seed, TRAIN_SUBSET_SALT])
    return sorted(int(row) for row in generator.choice(available, size=used, replace=False))


def test_subset(test_rows: int, available: int) -> list[int] | None:
    """The test rows evaluated on (sorted), or None for all: one draw with a fixed seed, the same for every run.

    Parameters
    ----------
    test_rows : int
        ``test-rows`` (0 for all).
    available : int
        Rows of the test split.
    """
    if test_rows == 0 or test_rows >= available:
        return None
    generator = np.random.default_rng(TEST_SUBSET_SALT)
    return sorted(int(row) for row in generator.choice(available, size=test_rows, replace=False))


@lru_cache(maxsize=64)
def client_data(spec: DataSpec, partition_id: int) -> LabeledTensors:
    """The tensors of one client's partition (memoised per process, cached on disk; read-only).

    A process that finds the partition in the cache reads it (and its row count, from the cached
    partition indices) without loading the source.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.
    partition_id : int
        The client.

    Raises
    ------
    ConfigError
        For a partition id out of range, a partition that cannot be built or that is empty.
    """
    if not 0 <= partition_id < spec.num_partitions:
        raise ConfigError.bad_value("partition-id", partition_id, f"0 .. {spec.num_partitions - 1}")
    entry = spec_cache_entry(spec)
    name = f"client-{partition_id}"
    cached = cached_tensors(entry, name)
    if cached is not None and len(cached) == len(all_partition_indices(spec)[partition_id]):
        return cached
    source = source_of(spec)
    rows = all_partition_indices(spec)[partition_id]
    if not rows:
        raise empty_partition_error(spec, partition_id, len(source.train))
    data = to_tensors(source.train.select(rows), source.image_column, source.label_column, source.pixel_max)
    return cache_tensors(entry, name, data)


def empty_partition_error(spec: DataSpec, partition_id: int, rows: int) -> ConfigError:
    """The one-line error for a partition plan that leaves ``partition_id`` without samples.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.
    partition_id : int
        The client left empty.
    rows : int
        Rows of the training split.
    """
    where = f"{spec.partitioning} partitioning of the {rows} training rows leaves client {partition_id} without samples"
    if spec.partitioning == "dirichlet" and spec.min_partition_size == 0:
        return ConfigError(
            f"min-partition-size: bad value 0; allowed: an integer >= 1 ({where} at dirichlet-alpha {spec.dirichlet_alpha:g})"
        )
    return ConfigError(f"num-clients: bad value {spec.num_partitions}; allowed: fewer clients ({where})")


def check_partition_plan(spec: DataSpec) -> None:
    """Check that ``spec``'s partitioning gives every client samples, before any client asks for them.

    Impossible plans are refused from the sizes first (more clients than training rows,
    ``num-clients × min-partition-size`` above the rows, more classes per client than the data
    has, more samples per client than rows); then every partition is computed (memoised, as the
    clients would) and none may be empty.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.

    Raises
    ------
    ConfigError
        One line naming the setting at fault, its value and what is allowed.
    """
    rows = training_rows(spec)
    if spec.partitioning != "random-subsets" and spec.num_partitions > rows:
        raise ConfigError.bad_value(
            "num-clients",
            spec.num_partitions,
            f"at most the {rows} training rows of {spec.dataset!r} ({spec.partitioning} partitioning)",
        )
    if spec.partitioning == "dirichlet" and spec.num_partitions * spec.min_partition_size > rows:
        raise ConfigError.bad_value(
            "min-partition-size",
            spec.min_partition_size,
            f"0 .. {rows // spec.num_partitions} ({rows} training rows shared by {spec.num_partitions} clients)",
        )
    partitions = all_partition_indices(spec)
    empty = next((pid for pid, members in enumerate(partitions) if not members), None)
    if empty is not None:
        raise empty_partition_error(spec, empty, rows)


# The data-cache record saying that a source's images passed :func:`check_images`: the entry's key
# holds the folder's file names, sizes and modification times, so any change checks them again.
IMAGES_CHECKED = "images-checked"


def check_images(spec: DataSpec) -> None:
    """Check the images of ``spec``'s source from their headers: readable, one size and mode in both splits, no bomb.

    Columns of arrays rather than images are decoded and their shapes compared.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings (only the source fields matter).

    Raises
    ------
    ConfigError
        One line naming ``dataset``.
    """
    source = source_of(spec)
    headers = {
        name: check_image_headers(split, source.image_column, "dataset", spec.dataset)
        for name, split in (("train", source.train), ("test", source.test))
        if len(split)
    }
    if len(set(headers.values())) > 1:
        raise ConfigError(
            f"dataset: the train and test images of {spec.dataset!r} differ in size or mode ({headers}); allowed: images of one size and mode"
        )
    if None in headers.values():  # arrays, not images: decode them to compare shapes
        shapes = {
            tuple(to_tensors(split, source.image_column, source.label_column, source.pixel_max).x.shape[1:])
            for split in (source.train, source.test)
            if len(split)
        }
        if len(shapes) > 1:
            raise ConfigError(
                f"dataset: the train and test images of {spec.dataset!r} have different shapes {sorted(shapes)}; allowed: images of one size"
            )


def check_data(spec: DataSpec) -> DatasetInfo:
    """Check everything about ``spec``'s data that training relies on; return its classes and input shape.

    The labels of every split are checked when the source is loaded
    (:func:`fl_poison.core.data_sources.checked_labels`); here the images of a local folder or of
    a hub dataset other than the built-in aliases are checked from their headers (readable, one
    size and mode, no decompression bomb: :func:`check_images`, once per version of the source
    while the disk cache is on) and the partition plan is computed (:func:`check_partition_plan`).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.

    Raises
    ------
    ConfigError
        One line naming the setting at fault.
    """
    if spec.dataset != "digits" and spec.dataset not in DATASET_ALIASES:
        entry = source_cache_entry(spec)
        if entry is None or entry.load(IMAGES_CHECKED, (IMAGES_CHECKED,)) is None:
            check_images(spec)
            if entry is not None:
                entry.store(IMAGES_CHECKED, {IMAGES_CHECKED: np.ones(1, dtype=np.int64)})
    info = dataset_info(spec)
    check_partition_plan(spec)
    return info


@lru_cache(maxsize=8)
def node_data(data_path: str, image_column: str, label_column: str, info: DatasetInfo | None) -> LabeledTensors:
    """The tensors of a SuperNode's own data folder (``data-path`` in its node config), memoised per process.

    Classes named by integers (``imagefolder`` sub-folders ``0`` .. ``9``) keep their numbers;
    the images must be readable and of one size (checked from their headers before decoding),
    have the run's input shape and the labels be classes of the run. The decoded folder is
    cached on disk (:func:`node_folder_tensors`); the checks against ``info`` run every time.

    Parameters
    ----------
    data_path : str
        The folder (see :func:`fl_poison.core.data_sources.load_node_folder`).
    image_column, label_column : str
        Columns to read (``image-column``, ``label-column``).
    info : DatasetInfo | None
        Number of classes and input shape of the run's dataset; None when the node cannot know
        them (then only the folder itself is checked).

    Raises
    ------
    ConfigError
        One line naming ``data-path`` (or the column setting) and what is wrong.
    """
    data = node_folder_tensors(data_path, image_column, label_column)
    if info is None:
        return data
    shape = tuple(int(size) for size in data.x.shape[1:])
    if shape != info.input_shape:
        raise ConfigError(
            f"data-path: images of {data_path!r} are shaped {shape}; allowed: images shaped like the run's "
            f"dataset {info.input_shape} (channels, height, width)"
        )
    if int(data.y.min()) < 0 or int(data.y.max()) >= info.num_classes:
        bad = int(data.y.min()) if int(data.y.min()) < 0 else int(data.y.max())
        raise ConfigError(f"data-path: {data_path!r} has label {bad}; allowed: classes 0 .. {info.num_classes - 1}")
    return data


def node_folder_tensors(data_path: str, image_column: str, label_column: str) -> LabeledTensors:
    """A SuperNode's own data folder decoded, its labels mapped to integer class names (cached on disk; read-only).

    The cache key holds the folder's fingerprint (its files' names, sizes and mtimes, see
    :func:`fl_poison.core.data_cache.folder_fingerprint`), so that a changed folder is decoded
    and checked again.

    Parameters
    ----------
    data_path : str
        The folder.
    image_column, label_column : str
        Columns to read.

    Raises
    ------
    ConfigError
        For a missing, unreadable or empty folder, unreadable images or bad labels.
    """
    entry = data_cache.cache_entry(
        {"dataset": data_path, "image_column": image_column, "label_column": label_column, "node_folder": True}
    )
    cached = cached_tensors(entry, "node")
    if cached is not None and len(cached):
        return cached
    import datasets

    datasets.disable_progress_bars()
    source = load_node_folder(data_path, image_column, label_column)
    check_image_headers(source.train, source.image_column, "data-path", data_path)
    data = to_tensors(source.train, source.image_column, source.label_column, source.pixel_max, key="data-path")
    values = class_values(source.train, source.label_column)
    labels = torch.from_numpy(values)[data.y] if values is not None else data.y
    if len(data) == 0:
        raise ConfigError(f"data-path: {data_path!r} holds no images; allowed: a folder with training images")
    return cache_tensors(entry, "node", LabeledTensors(x=data.x, y=labels))


@lru_cache(maxsize=4)
def test_data(spec: DataSpec) -> LabeledTensors:
    """The held-out test set as tensors (memoised per process, cached on disk; read-only).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings (only the source fields matter).
    """
    entry = source_cache_entry(spec)
    name = f"test-{spec.test_rows}" if spec.test_rows else "test"
    cached = cached_tensors(entry, name)
    if cached is not None:
        return cached
    source = source_of(spec)
    subset = test_subset(spec.test_rows, len(source.test))
    split = source.test if subset is None else source.test.select(subset)
    data = to_tensors(split, source.image_column, source.label_column, source.pixel_max)
    return cache_tensors(entry, name, data)


@lru_cache(maxsize=8)
def dataset_facts(spec: DataSpec) -> tuple[DatasetInfo, int]:
    """Classes and input shape of ``spec``'s dataset, and its number of training rows (memoised, cached on disk).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings (only the source fields matter).
    """
    entry = source_cache_entry(spec)
    facts = data_cache.load_facts(entry) if entry is not None else None
    if facts is not None and len(facts) == 5 and min(facts) >= 0:
        num_classes, channels, height, width, rows = facts
        return DatasetInfo(num_classes=num_classes, input_shape=(channels, height, width)), rows
    source = source_of(spec)
    sample = to_tensors(source.test.select(range(1)), source.image_column, source.label_column, source.pixel_max)
    channels, height, width = (int(size) for size in sample.x.shape[1:])
    info = DatasetInfo(num_classes=source.num_classes, input_shape=(channels, height, width))
    if entry is not None:
        data_cache.store_facts(entry, (info.num_classes, channels, height, width, len(source.train)))
    return info, len(source.train)


def dataset_info(spec: DataSpec) -> DatasetInfo:
    """Number of classes and input shape of ``spec``'s dataset (see :func:`dataset_facts`).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.
    """
    return dataset_facts(spec)[0]


def training_rows(spec: DataSpec) -> int:
    """Number of rows of ``spec``'s training split, the one partitioned among clients (see :func:`dataset_facts`).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.

    Raises
    ------
    ConfigError
        When ``train-rows`` asks for more rows than the split has.
    """
    return used_training_rows(spec, dataset_facts(spec)[1])


def source_cache_entry(spec: DataSpec) -> data_cache.CacheEntry | None:
    """The disk-cache entry of what depends only on ``spec``'s source (test set, classes, shape); None when off.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings; only :data:`SOURCE_FIELDS` make the key, so that runs that differ
        in partitioning share one copy of the test set.
    """
    return data_cache.cache_entry({field: getattr(spec, field) for field in SOURCE_FIELDS})


def spec_cache_entry(spec: DataSpec) -> data_cache.CacheEntry | None:
    """The disk-cache entry of ``spec``'s partitions (row indices, client tensors); None when off.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings; every field makes the key.
    """
    return data_cache.cache_entry(dataclasses.asdict(spec))


def cached_tensors(entry: data_cache.CacheEntry | None, name: str) -> LabeledTensors | None:
    """The tensors ``name`` of a cache entry, sharing the read-only memory-mapped arrays; None when absent.

    Parameters
    ----------
    entry : data_cache.CacheEntry | None
        The entry (None: the cache is off).
    name : str
        ``test`` or ``client-<partition id>``.
    """
    arrays = data_cache.load_labeled_arrays(entry, name) if entry is not None else None
    if arrays is None:
        return None
    with warnings.catch_warnings():
        # "The given NumPy array is not writable": by design, nothing writes into the data
        warnings.simplefilter("ignore", UserWarning)
        return LabeledTensors(x=torch.from_numpy(arrays[0]), y=torch.from_numpy(arrays[1]))


def cache_tensors(entry: data_cache.CacheEntry | None, name: str, data: LabeledTensors) -> LabeledTensors:
    """Store freshly decoded ``data`` in the cache and return it as later processes will see it.

    The stored arrays are read back (memory-mapped, read-only), so that a run behaves the same
    whether it decoded its data or found it cached; when the cache is off or the write fails,
    ``data`` itself is returned.

    Parameters
    ----------
    entry : data_cache.CacheEntry | None
        The entry (None: the cache is off).
    name : str
        ``test`` or ``client-<partition id>``.
    data : LabeledTensors
        The decoded tensors.
    """
    if entry is None or not data_cache.store_labeled_arrays(entry, name, data.x.numpy(), data.y.numpy()):
        return data
    cached = cached_tensors(entry, name)
    return data if cached is None else cached


def to_tensors(
    split: datasets.Dataset, image_column: str, label_column: str, pixel_max: float, key: str = "dataset"
) -> LabeledTensors:
    """Decode a split into ``float32`` images in [0, 1] laid out ``(N, C, H, W)`` and ``int64`` labels.

    Grayscale images ``(H, W)`` get one channel; colour images ``(H, W, C)`` are moved to
    channels-first.

    Parameters
    ----------
    split : datasets.Dataset
        The rows to decode.
    image_column, label_column : str
        The columns to read.
    pixel_max : float
        The value that maps to 1.0.
    key : str
        The setting the data comes from (``dataset`` or ``data-path``), named in errors.

    Raises
    ------
    ConfigError
        For images of different shapes or that are not numeric arrays.
    """
    columns = split.with_format("numpy", columns=[image_column, label_column])
    try:
        images = [np.asarray(image) for image in columns[image_column]]
    except (TypeError, ValueError):
        images = []
    if any(image.dtype.kind not in "biuf" for image in images) or (len(split) and not images):
        raise ConfigError(
            f"{key}: column {image_column!r} holds values that are not numeric images; allowed: images or arrays of numbers"
        )
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ConfigError(f"{key}: images have different shapes {sorted(shapes)[:3]}; allowed: images of one size")
    if images and images[0].ndim not in (2, 3):
        raise ConfigError(
            f"{key}: images are shaped {images[0].shape}; allowed: images (height, width) or (height, width, channels)"
        )
    array = (
        np.stack(images).astype(np.float32) / np.float32(pixel_max) if images else np.zeros((0, 1, 1, 1), np.float32)
    )
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3):
        array = np.transpose(array, (0, 3, 1, 2))
    labels = np.asarray(columns[label_column], dtype=np.int64)
    return LabeledTensors(x=torch.from_numpy(np.ascontiguousarray(array)), y=torch.from_numpy(labels))
