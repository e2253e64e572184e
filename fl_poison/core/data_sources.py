"""Where the raw data comes from: scikit-learn's digits, a Hugging Face hub id, or a local folder.

Every source is turned into a :class:`SourceSplits`: a Hugging Face ``datasets.Dataset`` for the
training split (the one that gets partitioned among clients), one for the held-out test split,
and the names of its image and label columns. Hub ids and folders that ``datasets.load_dataset``
reads (imagefolder, parquet, csv, ...) go through flwr-datasets' ``FederatedDataset``; a folder
written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` is read with
``datasets.load_from_disk``. When a source has no test split, a stratified ``test-fraction`` of
its training split is held out (fixed seed 0, so every experiment sees the same test set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import numpy as np

from fl_poison.core.config import DATASET_ALIASES, ConfigError

IMAGE_COLUMN_CANDIDATES = ("image", "img", "pixel_values")
HELD_OUT_SEED = 0


@dataclass(frozen=True)
class SourceSplits:
    """The training and test splits of a dataset, with the columns to read.

    Attributes
    ----------
    train : datasets.Dataset
        The split that partitioners divide among clients.
    test : datasets.Dataset
        The held-out split for centralized evaluation.
    image_column, label_column : str
        Column names of the inputs and of the integer class labels.
    num_classes : int
        Number of classes (from a ``ClassLabel`` feature, else the largest label + 1).
    pixel_max : float
        The value that maps to 1.0 when inputs are scaled to [0, 1] (16 for digits, 255 for images).
    """

    train: datasets.Dataset
    test: datasets.Dataset
    image_column: str
    label_column: str
    num_classes: int
    pixel_max: float


def load_source(dataset: str, image_column: str, label_column: str, test_fraction: float) -> SourceSplits:
    """Load the raw splits of ``dataset`` (a validated ``dataset`` setting).

    Parameters
    ----------
    dataset : str
        ``digits``, an alias from :data:`DATASET_ALIASES`, a hub id, or an absolute folder path.
    image_column : str
        The image column, or ``auto`` to take the first of :data:`IMAGE_COLUMN_CANDIDATES`
        (or the first ``Image`` feature) that the data has.
    label_column : str
        The label column.
    test_fraction : float
        Share of the training split held out when the source has no ``test`` split.
    """
    if dataset == "digits":
        return digits_source(test_fraction)
    splits = _load_dataset_dict(DATASET_ALIASES.get(dataset, dataset))
    if "train" not in splits:
        raise ConfigError(
            f"dataset: {dataset!r} has no 'train' split (it has {', '.join(splits)}); allowed: a dataset with a train split"
        )
    image_col = resolve_image_column(splits["train"], image_column, dataset)
    if label_column not in splits["train"].column_names:
        raise ConfigError(
            f"label-column: bad value {label_column!r}; allowed: one of {', '.join(splits['train'].column_names)}"
        )
    train = splits["train"]
    if "test" in splits:
        test = splits["test"]
    else:
        train, test = hold_out(train, label_column, test_fraction)
    return SourceSplits(
        train=train,
        test=test,
        image_column=image_col,
        label_column=label_column,
        num_classes=count_classes(splits["train"], label_column),
        pixel_max=255.0,
    )


def load_node_folder(path: str, image_column: str, label_column: str) -> SourceSplits:
    """A SuperNode's own data folder, read with the loaders of local datasets; nothing is held out.

    The node trains on all of the folder's ``train`` split (its ``test`` split, if any, is
    ignored; ``test`` of the result is an empty selection). Images are scaled by 255.

    Parameters
    ----------
    path : str
        The folder (``data-path`` of the node config).
    image_column, label_column : str
        As for :func:`load_source`.
    """
    if not os.path.isdir(path):
        raise ConfigError(f"data-path: folder {path!r} does not exist; allowed: a dataset folder on this node")
    splits = _load_dataset_dict(path)
    if "train" not in splits:
        raise ConfigError(
            f"data-path: {path!r} has no 'train' split (it has {', '.join(splits)}); allowed: a dataset with a train split"
        )
    train = splits["train"]
    if label_column not in train.column_names and label_column == "label" and os.path.isdir(os.path.join(path, "train")):
        # imagefolder drops the labels of a tree with a single class folder (a node holding one class)
        train = datasets.load_dataset("imagefolder", data_dir=path, split="train", drop_labels=False)
    if label_column not in train.column_names:
        raise ConfigError(
            f"label-column: bad value {label_column!r} for data-path {path!r}; allowed: one of {', '.join(train.column_names)}"
        )
    return SourceSplits(
        train=train,
        test=train.select([]),
        image_column=resolve_image_column(train, image_column, path),
        label_column=label_column,
        num_classes=count_classes(train, label_column),
        pixel_max=255.0,
    )


def class_values(split: datasets.Dataset, label_column: str) -> np.ndarray | None:
    """The class each label index stands for, when the classes are named by integers.

    An ``imagefolder`` tree names its classes after its sub-folders and numbers them in sorted
    order, so a node holding only folders ``3`` and ``7`` gets labels 0 and 1. When every class
    name is an integer, this returns those integers (here ``[3, 7]``) to map labels back;
    otherwise None.
    """
    feature = split.features.get(label_column)
    if not isinstance(feature, datasets.ClassLabel) or not feature.names:
        return None
    if not all(name.strip().isdigit() for name in feature.names):
        return None
    return np.array([int(name) for name in feature.names], dtype=np.int64)


def digits_source(test_fraction: float) -> SourceSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, values 0-16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)
    full = datasets.Dataset.from_dict(
        {"image": images, "label": bunch.target.astype(np.int64)},
        features=datasets.Features(
            {
                "image": datasets.Array2D(shape=(8, 8), dtype="float32"),
                "label": datasets.ClassLabel(num_classes=10),
            }
        ),
    )
    train, test = hold_out(full, "label", test_fraction)
    return SourceSplits(train, test, "image", "label", 10, 16.0)


def hold_out(
    train: datasets.Dataset, label_column: str, test_fraction: float
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off a stratified test set (seed :data:`HELD_OUT_SEED`), falling back to a plain split."""
    try:
        parts = train.train_test_split(
            test_size=test_fraction, seed=HELD_OUT_SEED, stratify_by_column=label_column
        )
    except ValueError:
        parts = train.train_test_split(test_size=test_fraction, seed=HELD_OUT_SEED)
    return parts["train"], parts["test"]


def resolve_image_column(split: datasets.Dataset, image_column: str, dataset: str) -> str:
    """The image column to read: the given one, or the first that looks like images."""
    columns = split.column_names
    if image_column != "auto":
        if image_column not in columns:
            raise ConfigError(
                f"image-column: bad value {image_column!r}; allowed: one of {', '.join(columns)}"
            )
        return image_column
    for name, feature in split.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in IMAGE_COLUMN_CANDIDATES:
        if name in columns:
            return name
    raise ConfigError(
        f"image-column: 'auto' found no image column in {dataset!r} (columns: {', '.join(columns)}); "
        "allowed: set image-column to one of them"
    )


def count_classes(split: datasets.Dataset, label_column: str) -> int:
    """Number of classes: from a ``ClassLabel`` feature, else the largest label + 1."""
    feature = split.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        return int(feature.num_classes)
    return int(max(split[label_column])) + 1


def is_saved_to_disk(path: str) -> bool:
    """True for a folder written by ``save_to_disk`` (a DatasetDict or a single Dataset)."""
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(
        os.path.join(path, "state.json")
    )


def _load_dataset_dict(name: str) -> datasets.DatasetDict:
    """Read a hub id or a local folder into a DatasetDict, through FederatedDataset where it can."""
    if os.path.isdir(name) and is_saved_to_disk(name):
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        return loaded
    return _federated_dataset_splits(name)


def _federated_dataset_splits(name: str) -> datasets.DatasetDict:
    """Let flwr-datasets' FederatedDataset download (or read) the data and return every split.

    FederatedDataset shuffles each split with a fixed seed before partitioning, as it does in
    every Flower example; partitioners are then applied by :mod:`fl_poison.core.partitioning`.
    """
    from flwr_datasets import FederatedDataset

    federated = FederatedDataset(dataset=name, partitioners={"train": 1}, shuffle=True, seed=HELD_OUT_SEED)
    try:
        splits = {"train": federated.load_split("train")}
    except FileNotFoundError as error:
        raise ConfigError(f"dataset: cannot read {name!r} ({error}); allowed: a readable hub id or folder") from None
    except (ConnectionError, OSError) as error:
        raise ConfigError(
            f"dataset: cannot reach or read {name!r} ({type(error).__name__}); allowed: a hub id "
            "reachable from this machine (or cached), or a local folder"
        ) from None
    except ValueError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"dataset: cannot use {name!r} ({first_line}); allowed: a dataset with a train split") from None
    try:
        splits["test"] = federated.load_split("test")
    except ValueError:
        pass  # no test split: load_source holds one out of train
    return datasets.DatasetDict(splits)
