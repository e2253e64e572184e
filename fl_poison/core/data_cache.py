"""A node-local cache of decoded data, so that a fresh process needs neither ``datasets`` nor ``flwr_datasets``.

On real Flower SuperNodes every message starts a new ClientApp process; without this cache each
one would import ``datasets`` and ``flwr_datasets``, load the source and decode its partition
again. :mod:`fl_poison.core.data` stores what it decodes here (a client's partition, the test set,
the partition row indices, the dataset's classes and input shape) and reads it back in later
processes: each array is one ``.npy`` file, opened with ``np.load(mmap_mode="r")`` (read-only
pages shared through the operating system's file cache, nothing copied), and
:mod:`fl_poison.core.data` wraps the arrays with ``torch.from_numpy`` (no copy either). Nothing
may write into those tensors (a write into a read-only mapping kills the process): the training
code and the attacks work on copies (``clone``, indexing, ``trigger.apply`` returns a new tensor).

Location: the folder named by the environment variable ``FL_POISON_CACHE_DIR``, by default
``~/.cache/fl_poison``; ``FL_POISON_CACHE_DIR=off`` (or empty) turns the cache off. A folder
that cannot be written turns it off too, with one warning line. The folder may be deleted at any
time.

Each entry is a folder named by :func:`entry_key`: the sha256 of the settings that determine the
data (every field of :class:`~fl_poison.core.data.DataSpec`, or the source fields for the test
set and the dataset's facts), a fingerprint of the source (:func:`source_fingerprint`), the
cache format, the versions of :data:`KEYED_PACKAGES` and a hash of the code that decodes and
partitions (:data:`KEYED_CODE`), so that a changed source, setting, package or decoder never
reads an old entry. Files are written atomically (a temporary file in the same folder, then
``os.replace``); a file that cannot be read back (truncated, not an array, of the wrong type or
shape) counts as missing, so the entry is rebuilt and overwritten, never trusted and never fatal.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fl_poison.core.config import DATASET_ALIASES

CACHE_DIR_VARIABLE = "FL_POISON_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/fl_poison"
DISABLED_VALUES = ("", "off")
# Bump when the layout of an entry changes.
CACHE_FORMAT = 1
# Packages whose version changes what is decoded or how rows are partitioned.
KEYED_PACKAGES = ("fl-poison", "flwr-datasets", "datasets")
# Modules (next to this one) whose code decides the decoded arrays: editing one makes new entries.
KEYED_CODE = ("data.py", "data_sources.py", "partitioning.py", "random_subsets.py", "data_cache.py")

logger = logging.getLogger(__name__)


def cache_root() -> Path | None:
    """The cache folder: ``FL_POISON_CACHE_DIR``, by default ``~/.cache/fl_poison``; None when turned off.

    ``off`` (any case) or an empty value turns the cache off. A relative path is taken from the
    current directory.
    """
    value = os.environ.get(CACHE_DIR_VARIABLE, DEFAULT_CACHE_DIR).strip()
    if value.lower() in DISABLED_VALUES:
        return None
    return Path(os.path.abspath(os.path.expanduser(value)))


@lru_cache(maxsize=8)
def package_version(package: str) -> str:
    """The installed version of ``package`` (``not installed`` when it is not), memoised per process.

    Parameters
    ----------
    package : str
        The distribution name, e.g. ``flwr-datasets``.
    """
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the modules in :data:`KEYED_CODE` (``unknown`` when they cannot be read), memoised per process."""
    digest = hashlib.sha256()
    try:
        for name in KEYED_CODE:
            digest.update(name.encode())
            digest.update((Path(__file__).parent / name).read_bytes())
    except OSError:
        return "unknown"
    return digest.hexdigest()


def folder_fingerprint(folder: str) -> dict[str, object]:
    """The resolved path of a local dataset folder and a digest of the names, sizes and mtimes of its files.

    Every file under the folder counts, except entries whose name starts with a dot (caches and
    editor files that do not hold data); any added, removed, resized or rewritten file gives
    another digest.

    Parameters
    ----------
    folder : str
        The folder (the ``dataset`` setting).
    """
    root = os.path.realpath(folder)
    digest = hashlib.sha256()
    files = 0
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            try:
                status = os.stat(path)
            except OSError:
                continue  # a dangling link: the loaders do not read it either
            relative = os.path.relpath(path, root)
            digest.update(f"{relative}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
            files += 1
    return {"kind": "folder", "path": root, "files": files, "digest": digest.hexdigest()}


def source_fingerprint(dataset: str) -> dict[str, object]:
    """What identifies the data behind a ``dataset`` setting, without reading it.

    Parameters
    ----------
    dataset : str
        ``digits`` (fingerprint: the scikit-learn version that bundles it), a local folder (see
        :func:`folder_fingerprint`) or a hub id or alias (the hub id).
    """
    if dataset == "digits":
        return {"kind": "digits", "scikit-learn": package_version("scikit-learn")}
    name = DATASET_ALIASES.get(dataset, dataset)
    if os.path.isdir(name):
        return folder_fingerprint(name)
    return {"kind": "hub", "id": name}


def entry_key(settings: Mapping[str, object], source: Mapping[str, object] | None = None) -> str:
    """The sha256 (hex) that names the cache entry of ``settings``.

    Parameters
    ----------
    settings : Mapping[str, object]
        JSON-serialisable settings that determine the cached arrays; ``settings["dataset"]``
        names the source, whose :func:`source_fingerprint` is part of the key.
    source : Mapping[str, object] | None
        That fingerprint when the caller has it already; None to compute it.
    """
    document = {
        "format": CACHE_FORMAT,
        "code": code_fingerprint(),
        "packages": {package: package_version(package) for package in KEYED_PACKAGES},
        "settings": dict(settings),
        "source": dict(source) if source is not None else source_fingerprint(str(settings["dataset"])),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """The folder of one cache entry; each array is the file ``<name>.<part>.npy`` in it.

    Attributes
    ----------
    folder : Path
        ``<cache root>/<entry key>``; created by the first :meth:`store`.
    """

    folder: Path

    def path(self, name: str, part: str) -> Path:
        """The file of array ``part`` of ``name``.

        Parameters
        ----------
        name : str
            What the arrays are (``test``, ``client-3``, ...).
        part : str
            Which of its arrays (``x``, ``y``, ...).
        """
        return self.folder / f"{name}.{part}.npy"

    def load(self, name: str, parts: Sequence[str]) -> tuple[np.ndarray, ...] | None:
        """The arrays ``parts`` of ``name``, memory-mapped read-only; None when any is missing or unreadable.

        Parameters
        ----------
        name : str
            What the arrays are.
        parts : Sequence[str]
            Which of its arrays, in the order returned.
        """
        arrays = []
        for part in parts:
            path = self.path(name, part)
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                return None
            except (OSError, ValueError, EOFError) as error:
                logger.warning("fl_poison data cache: ignoring unreadable %s (%s); it is rebuilt", path, error)
                return None
            if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
                logger.warning("fl_poison data cache: ignoring %s (not an array); it is rebuilt", path)
                return None
            arrays.append(array)
        return tuple(arrays)

    def store(self, name: str, arrays: Mapping[str, np.ndarray]) -> bool:
        """Write the arrays of ``name`` atomically, one file per part; False (and one warning line) on failure.

        Parameters
        ----------
        name : str
            What the arrays are.
        arrays : Mapping[str, np.ndarray]
            Part name to array (saved without pickling, so only plain numeric arrays).
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for part, array in arrays.items():
                handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.{part}.", suffix=".tmp")
                try:
                    with os.fdopen(handle, "wb") as file:
                        np.save(file, np.ascontiguousarray(array), allow_pickle=False)
                    os.replace(temporary, self.path(name, part))
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temporary)
                    raise
        except OSError as error:
            logger.warning("fl_poison data cache: cannot write %s to %s (%s); not cached", name, self.folder, error)
            return False
        return True


def load_labeled_arrays(entry: CacheEntry, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Images ``float32 (N, C, H, W)`` and labels ``int64 (N,)`` of ``name``; None when missing or malformed.

    Parameters
    ----------
    entry : CacheEntry
        The entry to read.
    name : str
        What the arrays are (``test``, ``client-3``).
    """
    arrays = entry.load(name, ("x", "y"))
    if arrays is None:
        return None
    x, y = arrays
    if x.dtype != np.float32 or x.ndim != 4 or y.dtype != np.int64 or y.ndim != 1 or len(x) != len(y):
        logger.warning("fl_poison data cache: ignoring malformed %s in %s; it is rebuilt", name, entry.folder)
        return None
    return x, y


def store_labeled_arrays(entry: CacheEntry, name: str, x: np.ndarray, y: np.ndarray) -> bool:
    """Store images and labels of ``name`` (see :func:`load_labeled_arrays`).

    Parameters
    ----------
    entry : CacheEntry
        The entry to write.
    name : str
        What the arrays are.
    x, y : np.ndarray
        Images ``float32 (N, C, H, W)`` and labels ``int64 (N,)``.
    """
    return entry.store(name, {"x": x, "y": y})


def load_partitions(entry: CacheEntry, num_partitions: int) -> tuple[tuple[int, ...], ...] | None:
    """The row indices of every partition, as stored by :func:`store_partitions`; None when missing or malformed.

    Parameters
    ----------
    entry : CacheEntry
        The entry to read.
    num_partitions : int
        The number of partitions expected.
    """
    arrays = entry.load("partitions", ("offsets", "rows"))
    if arrays is None:
        return None
    offsets, rows = arrays
    well_formed = (
        offsets.dtype == np.int64
        and rows.dtype == np.int64
        and offsets.shape == (num_partitions + 1,)
        and rows.ndim == 1
        and int(offsets[0]) == 0
        and int(offsets[-1]) == len(rows)
        and bool(np.all(np.diff(offsets) >= 0))
        and (len(rows) == 0 or int(rows.min()) >= 0)
    )
    if not well_formed:
        logger.warning("fl_poison data cache: ignoring malformed partitions in %s; they are rebuilt", entry.folder)
        return None
    bounds = offsets.tolist()
    values = rows.tolist()
    return tuple(tuple(values[start:end]) for start, end in zip(bounds[:-1], bounds[1:], strict=True))


def store_partitions(entry: CacheEntry, partitions: Sequence[Sequence[int]]) -> bool:
    """Store the row indices of every partition as one flat array and its offsets.

    Parameters
    ----------
    entry : CacheEntry
        The entry to write.
    partitions : Sequence[Sequence[int]]
        Row indices per partition id.
    """
    sizes = np.array([len(members) for members in partitions], dtype=np.int64)
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes, dtype=np.int64)])
    rows = np.fromiter((row for members in partitions for row in members), dtype=np.int64, count=int(offsets[-1]))
    return entry.store("partitions", {"offsets": offsets, "rows": rows})


def load_facts(entry: CacheEntry) -> tuple[int, ...] | None:
    """The integers stored by :func:`store_facts`; None when missing or malformed.

    Parameters
    ----------
    entry : CacheEntry
        The entry to read.
    """
    arrays = entry.load("dataset", ("facts",))
    if arrays is None:
        return None
    (facts,) = arrays
    if facts.dtype != np.int64 or facts.ndim != 1:
        logger.warning("fl_poison data cache: ignoring malformed dataset facts in %s; they are rebuilt", entry.folder)
        return None
    return tuple(int(value) for value in facts)


def store_facts(entry: CacheEntry, facts: Sequence[int]) -> bool:
    """Store a few integers about a dataset (its classes, input shape, training rows).

    Parameters
    ----------
    entry : CacheEntry
        The entry to write.
    facts : Sequence[int]
        The integers, in an order the caller defines.
    """
    return entry.store("dataset", {"facts": np.asarray(facts, dtype=np.int64)})


@lru_cache(maxsize=8)
def writable_root(root: Path) -> bool:
    """Whether files can be created in ``root`` (created if missing); warns once per process when not.

    Parameters
    ----------
    root : Path
        The cache folder.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=root, prefix=".probe.")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        logger.warning(
            "fl_poison data cache: %s is not writable (%s); caching is off (set %s to another folder, or off)",
            root,
            error.strerror or type(error).__name__,
            CACHE_DIR_VARIABLE,
        )
        return False
    return True


@lru_cache(maxsize=16)
def _source_fingerprint_json(dataset: str) -> str:
    return json.dumps(source_fingerprint(dataset), sort_keys=True)


@lru_cache(maxsize=64)
def _entry(root: Path, settings_json: str) -> CacheEntry:
    settings = json.loads(settings_json)
    return CacheEntry(root / entry_key(settings, json.loads(_source_fingerprint_json(str(settings["dataset"])))))


def cache_entry(settings: Mapping[str, object]) -> CacheEntry | None:
    """The cache entry of ``settings`` under :func:`cache_root`; None when the cache is off or not writable.

    The key is computed once per process for each cache root and settings, and the source's
    fingerprint (which for a local folder lists its files) once per process for each source, as
    the source itself is read once per process (:func:`fl_poison.core.data.source_of`).

    Parameters
    ----------
    settings : Mapping[str, object]
        JSON-serialisable settings that determine the cached arrays, with a ``dataset`` key (see
        :func:`entry_key`).
    """
    root = cache_root()
    if root is None or not writable_root(root):
        return None
    return _entry(root, json.dumps(dict(settings), sort_keys=True))
