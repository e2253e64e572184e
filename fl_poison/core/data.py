"""Client partitions and the test set as in-memory tensors, decoded once per process.

A :class:`DataSpec` holds the settings that determine the data. :func:`client_data` and
:func:`test_data` are memoised on it: in a Ray actor that hosts many virtual clients, or in the
ServerApp, each partition is decoded into tensors once and reused every round. The cache holds
immutable results of pure functions of the spec (no per-client state lives here; that goes in
Flower's ``context.state``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import datasets
import numpy as np
import torch
from flwr_datasets.partitioner import Partitioner

from fl_poison.core.config import ConfigError, ExperimentConfig
from fl_poison.core.data_sources import SourceSplits, class_values, load_node_folder, load_source
from fl_poison.core.partitioning import build_partitioner, partition_rows


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

    @classmethod
    def from_config(cls, config: ExperimentConfig, num_partitions: int | None = None) -> DataSpec:
        """The data part of an experiment config (``num_partitions`` defaults to ``num-clients``)."""
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
        )


@dataclass(frozen=True)
class LabeledTensors:
    """Inputs scaled to [0, 1] as ``float32`` ``(N, C, H, W)`` and integer labels ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data."""

    num_classes: int
    input_shape: tuple[int, int, int]


@lru_cache(maxsize=4)
def _source(dataset: str, image_column: str, label_column: str, test_fraction: float) -> SourceSplits:
    return load_source(dataset, image_column, label_column, test_fraction)


def source_of(spec: DataSpec) -> SourceSplits:
    """The raw splits of ``spec``'s dataset (memoised per process)."""
    datasets.disable_progress_bars()
    return _source(spec.dataset, spec.image_column, spec.label_column, spec.test_fraction)


def partitioner_of(spec: DataSpec) -> Partitioner:
    """The partitioner that divides ``spec``'s training split, checked against the dataset; no data assigned yet.

    :func:`all_partition_indices` reads its partitions; ``fl-poison plot`` draws their label
    distributions after :func:`fl_poison.core.partitioning.assign_training_split`.
    """
    source = source_of(spec)
    if spec.partitioning == "pathological" and spec.classes_per_client > source.num_classes:
        raise ConfigError.bad_value(
            "classes-per-client", spec.classes_per_client, f"an integer between 1 and {source.num_classes}"
        )
    if spec.partitioning == "random-subsets" and spec.samples_per_client > len(source.train):
        raise ConfigError.bad_value(
            "samples-per-client", spec.samples_per_client, f"an integer between 1 and {len(source.train)} (the training rows)"
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
    """Row indices of the training split for every partition id (memoised per process)."""
    return tuple(tuple(rows) for rows in partition_rows(partitioner_of(spec), source_of(spec).train, spec.seed))


@lru_cache(maxsize=64)
def client_data(spec: DataSpec, partition_id: int) -> LabeledTensors:
    """The tensors of one client's partition (memoised per process)."""
    if not 0 <= partition_id < spec.num_partitions:
        raise ConfigError.bad_value("partition-id", partition_id, f"0 .. {spec.num_partitions - 1}")
    source = source_of(spec)
    rows = all_partition_indices(spec)[partition_id]
    return to_tensors(source.train.select(rows), source.image_column, source.label_column, source.pixel_max)


def node_data(data_path: str, image_column: str, label_column: str, info: DatasetInfo) -> LabeledTensors:
    """The tensors of a SuperNode's own data folder (``data-path`` in its node config).

    Classes named by integers (``imagefolder`` sub-folders ``0`` .. ``9``) keep their numbers;
    the images must have the run's input shape and the labels be classes of the run.

    Parameters
    ----------
    data_path : str
        The folder (see :func:`fl_poison.core.data_sources.load_node_folder`).
    image_column, label_column : str
        Columns to read (``image-column``, ``label-column``).
    info : DatasetInfo
        Number of classes and input shape of the run's dataset.
    """
    datasets.disable_progress_bars()
    source = load_node_folder(data_path, image_column, label_column)
    data = to_tensors(source.train, source.image_column, source.label_column, source.pixel_max)
    values = class_values(source.train, source.label_column)
    labels = torch.from_numpy(values)[data.y] if values is not None else data.y
    if len(data) == 0:
        raise ConfigError(f"data-path: {data_path!r} holds no images; allowed: a folder with training images")
    shape = tuple(int(size) for size in data.x.shape[1:])
    if shape != info.input_shape:
        raise ConfigError(
            f"data-path: images of {data_path!r} are shaped {shape}; allowed: images shaped like the run's "
            f"dataset {info.input_shape} (channels, height, width)"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= info.num_classes:
        raise ConfigError(
            f"data-path: labels of {data_path!r} reach {int(labels.max())}; allowed: classes 0 .. {info.num_classes - 1}"
        )
    return LabeledTensors(x=data.x, y=labels)


@lru_cache(maxsize=4)
def test_data(spec: DataSpec) -> LabeledTensors:
    """The held-out test set as tensors (memoised per process)."""
    source = source_of(spec)
    return to_tensors(source.test, source.image_column, source.label_column, source.pixel_max)


def dataset_info(spec: DataSpec) -> DatasetInfo:
    """Number of classes and input shape of ``spec``'s dataset."""
    source = source_of(spec)
    sample = to_tensors(source.test.select(range(1)), source.image_column, source.label_column, source.pixel_max)
    channels, height, width = sample.x.shape[1:]
    return DatasetInfo(num_classes=source.num_classes, input_shape=(int(channels), int(height), int(width)))


def to_tensors(split: datasets.Dataset, image_column: str, label_column: str, pixel_max: float) -> LabeledTensors:
    """Decode a split into ``float32`` images in [0, 1] laid out ``(N, C, H, W)`` and ``int64`` labels.

    Grayscale images ``(H, W)`` get one channel; colour images ``(H, W, C)`` are moved to
    channels-first.
    """
    columns = split.with_format("numpy", columns=[image_column, label_column])
    images = [np.asarray(image) for image in columns[image_column]]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ConfigError(
            f"dataset: images have different shapes {sorted(shapes)[:3]}; allowed: images of one size"
        )
    array = np.stack(images).astype(np.float32) / np.float32(pixel_max) if images else np.zeros((0, 1, 1, 1), np.float32)
    if array.ndim == 3:
        array = array[:, None, :, :]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3):
        array = np.transpose(array, (0, 3, 1, 2))
    labels = np.asarray(columns[label_column], dtype=np.int64)
    return LabeledTensors(x=torch.from_numpy(np.ascontiguousarray(array)), y=torch.from_numpy(labels))
