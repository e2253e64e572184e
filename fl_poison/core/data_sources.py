"""Where the raw data comes from: scikit-learn's digits, a Hugging Face hub id, or a local folder.

Every source is turned into a :class:`SourceSplits`: a Hugging Face ``datasets.Dataset`` for the
training split (the one that gets partitioned among clients), one for the held-out test split,
and the names of its image and label columns. Hub ids and folders that ``datasets.load_dataset``
reads (imagefolder, parquet, csv, ...) go through flwr-datasets' ``FederatedDataset``; a folder
written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` is read with
``datasets.load_from_disk``. When a source has no test split, a stratified ``test-fraction`` of
its training split is held out (fixed seed 0, so every experiment sees the same test set).

``datasets`` (and scikit-learn, and flwr-datasets) are imported inside the functions that read
data, not with this module: a ClientApp that finds its partition in the node-local cache
(:mod:`fl_poison.core.data_cache`) never reads a source and so never pays for them.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fl_poison.core.config import DATASET_ALIASES, ConfigError
from fl_poison.core.lazy_imports import defer_flwr_datasets_plotting
from fl_poison.core.settings import image_header

if TYPE_CHECKING:
    import datasets

IMAGE_COLUMN_CANDIDATES = ("image", "img", "pixel_values")
HELD_OUT_SEED = 0
# Labels are class indices 0 .. C-1; a dataset with more classes than this is refused (a stray
# huge label would otherwise size the model's last layer, and its memory, after it).
MAX_CLASSES = 10_000
# Files that make ``datasets.load_dataset`` run code: a local dataset folder holding one is refused
# before anything reads it (datasets >= 4 refuses loading scripts too, with a traceback).
CODE_SUFFIXES = (".py", ".pyc", ".pyw", ".so")


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
    splits = _load_dataset_dict(DATASET_ALIASES.get(dataset, dataset), "dataset")
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
    num_classes = checked_labels(train, label_column, "dataset", dataset)
    if "test" in splits:
        test = splits["test"]
        if label_column not in test.column_names or image_col not in test.column_names:
            raise ConfigError(
                f"dataset: the test split of {dataset!r} lacks column {label_column!r} or {image_col!r}; "
                "allowed: train and test splits with the same columns"
            )
        checked_labels(test, label_column, "dataset", dataset, num_classes)
    else:
        train, test = hold_out(train, label_column, test_fraction)
    return SourceSplits(
        train=train,
        test=test,
        image_column=image_col,
        label_column=label_column,
        num_classes=num_classes,
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
    import datasets

    if "\x00" in path or not os.path.isdir(path):
        raise ConfigError(f"data-path: folder {path!r} does not exist; allowed: a dataset folder on this node")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"data-path: folder {path!r} is not readable; allowed: a dataset folder this node can read")
    splits = _load_dataset_dict(path, "data-path")
    if "train" not in splits:
        raise ConfigError(
            f"data-path: {path!r} has no 'train' split (it has {', '.join(splits)}); allowed: a dataset with a train split"
        )
    train = splits["train"]
    if (
        label_column not in train.column_names
        and label_column == "label"
        and os.path.isdir(os.path.join(path, "train"))
    ):
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
        num_classes=checked_labels(train, label_column, "data-path", path),
        pixel_max=255.0,
    )


def class_values(split: datasets.Dataset, label_column: str) -> np.ndarray | None:
    """The class each label index stands for, when the classes are named by integers.

    An ``imagefolder`` tree names its classes after its sub-folders and numbers them in sorted
    order, so a node holding only folders ``3`` and ``7`` gets labels 0 and 1. When every class
    name is an integer, this returns those integers (here ``[3, 7]``) to map labels back;
    otherwise None.

    Parameters
    ----------
    split : datasets.Dataset
        The split whose label feature names the classes.
    label_column : str
        Its label column.
    """
    import datasets

    feature = split.features.get(label_column)
    if not isinstance(feature, datasets.ClassLabel) or not feature.names:
        return None
    if not all(name.strip().isdigit() for name in feature.names):
        return None
    return np.array([int(name) for name in feature.names], dtype=np.int64)


def digits_source(test_fraction: float) -> SourceSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, values 0-16).

    Parameters
    ----------
    test_fraction : float
        Share held out as the test split (see :func:`hold_out`).
    """
    import datasets
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
    """Split off a stratified test set (seed :data:`HELD_OUT_SEED`), falling back to a plain split.

    Parameters
    ----------
    train : datasets.Dataset
        The split to divide.
    label_column : str
        The column to stratify by.
    test_fraction : float
        Share of ``train`` held out.

    Raises
    ------
    ConfigError
        When ``test_fraction`` leaves the test or the training part without a row.
    """
    rows = len(train)
    held = math.ceil(test_fraction * rows)
    if rows < 2 or not 1 <= held <= rows - 1:
        raise ConfigError.bad_value(
            "test-fraction",
            test_fraction,
            f"a share that leaves at least one row on each side of the {rows} training rows",
        )
    try:
        parts = train.train_test_split(test_size=test_fraction, seed=HELD_OUT_SEED, stratify_by_column=label_column)
    except ValueError:
        try:
            parts = train.train_test_split(test_size=test_fraction, seed=HELD_OUT_SEED)
        except ValueError as error:
            raise ConfigError.bad_value(
                "test-fraction", test_fraction, f"a share of the {rows} rows that can be held out ({error})"
            ) from None
    return parts["train"], parts["test"]


def resolve_image_column(split: datasets.Dataset, image_column: str, dataset: str) -> str:
    """The image column to read: the given one, or the first that looks like images.

    Parameters
    ----------
    split : datasets.Dataset
        The training split.
    image_column : str
        The ``image-column`` setting (a column name, or ``auto``).
    dataset : str
        The dataset's name or folder, named in the error.

    Raises
    ------
    ConfigError
        For a column the split lacks, or ``auto`` finding no image column.
    """
    import datasets

    columns = split.column_names
    if image_column != "auto":
        if image_column not in columns:
            raise ConfigError(f"image-column: bad value {image_column!r}; allowed: one of {', '.join(columns)}")
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
    """Number of classes: from a ``ClassLabel`` feature, else the largest label + 1.

    Parameters
    ----------
    split : datasets.Dataset
        The split to count.
    label_column : str
        Its label column.
    """
    import datasets

    feature = split.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        return int(feature.num_classes)
    return int(max(split[label_column])) + 1


def checked_labels(
    split: datasets.Dataset, label_column: str, key: str, name: str, num_classes: int | None = None
) -> int:
    """The number of classes of ``split``, after checking that every label is a class index.

    Labels must be integers (a ``ClassLabel`` or an integer column) in ``0 .. C-1``, where ``C``
    is ``num_classes`` when given (a test split is checked against its training split), else the
    ``ClassLabel``'s number of classes, else the largest label + 1; ``C`` is at most
    :data:`MAX_CLASSES`.

    Parameters
    ----------
    split : datasets.Dataset
        The split to check.
    label_column : str
        Its label column.
    key : str
        The setting the data comes from (``dataset`` or ``data-path``), named in the error.
    name : str
        The dataset's name or folder, named in the error.
    num_classes : int | None
        The number of classes the labels must fall into; None to count them from ``split``.

    Raises
    ------
    ConfigError
        For non-integer labels, a negative label, a label of no class, or too many classes.
    """
    import datasets

    feature = split.features.get(label_column)
    integral = isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    )
    if not integral:
        dtype = getattr(feature, "dtype", type(feature).__name__)
        raise ConfigError(
            f"label-column: column {label_column!r} of {key} {name!r} holds {dtype} values; allowed: integer class labels"
        )
    column = split.with_format("arrow", columns=[label_column])[:][label_column]  # one Arrow column, not row by row
    if column.null_count:
        raise ConfigError(
            f"label-column: column {label_column!r} of {key} {name!r} has missing labels; allowed: an integer label in every row"
        )
    labels = column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if num_classes is None:
        num_classes = count_classes(split, label_column) if len(labels) else 0
    if num_classes > MAX_CLASSES:
        raise ConfigError(
            f"label-column: labels of {key} {name!r} make {num_classes} classes; allowed: at most {MAX_CLASSES} classes (labels 0 .. {MAX_CLASSES - 1})"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ConfigError(f"label-column: {key} {name!r} has label {bad}; allowed: classes 0 .. {num_classes - 1}")
    return num_classes


def check_image_headers(
    split: datasets.Dataset, image_column: str, key: str, name: str
) -> tuple[tuple[int, int], str] | None:
    """Check that every image of an ``Image`` column is readable, of one size and one mode, and not a bomb.

    Only each image's header is read (nothing is decoded), so a decompression bomb is refused
    before anything decodes it. Columns of arrays (digits, ``Array2D``) are left to
    :func:`fl_poison.core.data.to_tensors`, which refuses mixed shapes.

    Parameters
    ----------
    split : datasets.Dataset
        The split to check.
    image_column : str
        Its image column.
    key : str
        The setting the data comes from (``dataset`` or ``data-path``), named in the error.
    name : str
        The dataset's name or folder, named in the error.

    Returns
    -------
    tuple[tuple[int, int], str] | None
        The common ``(width, height)`` and PIL mode; None for a column that is not of images.

    Raises
    ------
    ConfigError
        For an unreadable image, an image larger than the limit, or images of different sizes or modes.
    """
    import datasets

    if not isinstance(split.features.get(image_column), datasets.Image):
        return None
    raw = split.cast_column(image_column, datasets.Image(decode=False)).select_columns([image_column])
    entries = (entry for batch in raw.iter(batch_size=1024) for entry in batch[image_column])
    first: tuple[tuple[int, int], str] | None = None
    for row, entry in enumerate(entries):
        where = f"{name} row {row}"
        if entry.get("bytes") is not None:
            header = image_header(key, io.BytesIO(entry["bytes"]), where)
        elif entry.get("path"):
            header = image_header(key, str(entry["path"]), str(entry["path"]))
        else:
            raise ConfigError(f"{key}: {where} has no image; allowed: a dataset whose every row holds an image")
        if first is None:
            first = header
        elif header != first:
            (w1, h1), m1 = first
            (w2, h2), m2 = header
            raise ConfigError(
                f"{key}: images of {name!r} differ ({w1}x{h1} {m1} and {w2}x{h2} {m2} at row {row}); allowed: images of one size and mode"
            )
    return first


def refuse_code(path: str, key: str) -> None:
    """Refuse a local dataset folder holding code (a loading script): nothing in it is ever executed.

    Parameters
    ----------
    path : str
        The folder.
    key : str
        The setting naming it (``dataset`` or ``data-path``).

    Raises
    ------
    ConfigError
        When a file of :data:`CODE_SUFFIXES` lies anywhere in the folder.
    """
    for folder, _, files in os.walk(path):
        for file in files:
            if file.lower().endswith(CODE_SUFFIXES):
                found = os.path.join(folder, file)
                raise ConfigError(
                    f"{key}: {path!r} holds code ({found!r}); allowed: a data folder without scripts (they are never run)"
                )


def is_saved_to_disk(path: str) -> bool:
    """True for a folder written by ``save_to_disk`` (a DatasetDict or a single Dataset).

    Parameters
    ----------
    path : str
        The folder.
    """
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json"))


def _load_dataset_dict(name: str, key: str) -> datasets.DatasetDict:
    """Read a hub id or a local folder into a DatasetDict, through FederatedDataset where it can.

    Parameters
    ----------
    name : str
        A hub id or a local folder.
    key : str
        The setting naming it (``dataset`` or ``data-path``), named in errors.
    """
    import datasets

    if os.path.isdir(name):
        refuse_code(name, key)
        if is_saved_to_disk(name):
            try:
                # in memory: operations on a dataset read from files (hold-out, shuffles, casts)
                # would otherwise write their cache files into the user's data folder
                loaded = datasets.load_from_disk(name, keep_in_memory=True)
            except (OSError, ValueError, KeyError, TypeError) as error:
                first_line = (str(error).splitlines() or [type(error).__name__])[0]
                raise ConfigError(
                    f"{key}: cannot read the saved dataset {name!r} ({first_line[:200]}); allowed: a folder written by save_to_disk"
                ) from None
            if isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
            return loaded
    return _federated_dataset_splits(name, key)


def _federated_dataset_splits(name: str, key: str) -> datasets.DatasetDict:
    """Let flwr-datasets' FederatedDataset download (or read) the data and return every split.

    FederatedDataset shuffles each split with a fixed seed before partitioning, as it does in
    every Flower example; partitioners are then applied by :mod:`fl_poison.core.partitioning`.
    """
    import datasets

    defer_flwr_datasets_plotting()
    from flwr_datasets import FederatedDataset

    federated = FederatedDataset(dataset=name, partitioners={"train": 1}, shuffle=True, seed=HELD_OUT_SEED)
    try:
        splits = {"train": federated.load_split("train")}
    except FileNotFoundError as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(
            f"{key}: cannot read {name!r} ({first_line[:200]}); allowed: a readable hub id or folder"
        ) from None
    except (ConnectionError, OSError) as error:
        raise ConfigError(
            f"{key}: cannot reach or read {name!r} ({type(error).__name__}); allowed: a hub id "
            "reachable from this machine (or cached), or a local folder"
        ) from None
    except (ValueError, RuntimeError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(
            f"{key}: cannot use {name!r} ({first_line[:200]}); allowed: a dataset with a train split"
        ) from None
    try:
        splits["test"] = federated.load_split("test")
    except ValueError:
        pass  # no test split: load_source holds one out of train
    return datasets.DatasetDict(splits)
