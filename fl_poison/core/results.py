"""Writing a run's result folder: config.json, rounds.csv, clients.csv, summary.json, model, plots.

Every file is written atomically: to a temporary file in the same folder, then renamed over the
target, so a reader (or a crash) never sees half a file. ``rounds.csv`` and ``clients.csv`` are
rewritten after every round, so a long run can be watched (and survives an interruption with
everything up to the last finished round). A run's folder is never reused: it is created by
:func:`create_result_folder`, which refuses an existing one, so an earlier run's results are
never overwritten nor mixed with a new run's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fl_poison.core.settings import ConfigError

SUMMARY_METRICS = ("accuracy", "macro_f1", "kappa", "roc_auc", "loss")
ATTACK_SUMMARY_METRICS = ("asr", "mta", "ts_ata", "max_ata")
# Columns of an attack's evaluation that name a class rather than a rate: which class ts_ata measured when
# the attackers choose their own target (ADA), -1 before any was reported.
ATTACK_CLASS_COLUMNS = ("ts_ata_target",)
# mkstemp creates files readable by their owner only; results are meant to be shared
RESULT_FILE_MODE = 0o644
# What a run (and a sweep cell) writes into its folder: what remove_unfinished_run may delete.
RUN_FILES = (
    "config.json",
    "rounds.csv",
    "clients.csv",
    "summary.json",
    "timings.json",
    "model.pt",
    "accuracy_loss.png",
    "update_norms.png",
    "flower.log",
    "cell.log",
)


def run_folder_taken(folder: Path) -> ConfigError:
    """The one-line error for a run folder that already exists (naming ``run-name``).

    Parameters
    ----------
    folder : Path
        The run's folder ``output-dir/run-name``.
    """
    return ConfigError(
        f"run-name: bad value {folder.name!r}; allowed: a name not used yet in output-dir {str(folder.parent)!r} "
        "(an existing run folder is never overwritten)"
    )


def check_new_run_folder(folder: Path) -> None:
    """Refuse ``folder`` when anything (a folder, a file, a link) already has its name.

    Parameters
    ----------
    folder : Path
        The run's folder ``output-dir/run-name``.

    Raises
    ------
    ConfigError
        Naming ``run-name``, when the folder exists.
    """
    if folder.exists() or folder.is_symlink():
        raise run_folder_taken(folder)


def create_result_folder(folder: Path) -> ResultFolder:
    """Create a run's folder, never reusing an existing one, and return its :class:`ResultFolder`.

    The ServerApp calls this before writing anything: two runs with the same ``run-name`` in the
    same ``output-dir`` cannot mix their files, and a finished run is never overwritten.

    Parameters
    ----------
    folder : Path
        The run's folder ``output-dir/run-name`` (see :func:`fl_poison.core.provenance.result_folder_path`);
        its parent is created when missing.

    Raises
    ------
    ConfigError
        Naming ``run-name`` when the folder exists, or ``output-dir`` when it cannot be created.
    """
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"output-dir: bad value {str(folder.parent)!r}; allowed: a folder this user can create and write ({error.strerror})"
        ) from None
    try:
        folder.mkdir()
    except FileExistsError:
        raise run_folder_taken(folder) from None
    except OSError as error:
        raise ConfigError(
            f"output-dir: bad value {str(folder.parent)!r}; allowed: a folder this user can write ({error.strerror})"
        ) from None
    return ResultFolder(folder)


def remove_unfinished_run(folder: Path, finished_too: bool = False) -> None:
    """Delete a run folder that a tool owns and reruns (a failed sweep cell), after checking it is one.

    Only the files a run writes (:data:`RUN_FILES`, and temporary files of atomic writes) are
    deleted; a folder holding anything else, or a link, is left alone and refused.

    Parameters
    ----------
    folder : Path
        The run folder; nothing happens when it does not exist.
    finished_too : bool
        Also delete a folder holding ``summary.json`` (a run its owner recorded as failed).

    Raises
    ------
    ConfigError
        Naming ``run-name``, for a link, a file, a folder of a finished run (unless
        ``finished_too``) or a folder holding files no run writes.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise run_folder_taken(folder)
    if (folder / "summary.json").exists() and not finished_too:
        raise run_folder_taken(folder)
    entries = list(folder.iterdir())
    for entry in entries:
        temporary = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if entry.is_symlink() or not entry.is_file() or not (entry.name in RUN_FILES or temporary):
            raise ConfigError(
                f"run-name: bad value {folder.name!r}; allowed: a run folder holding only a run's files "
                f"({str(entry)!r} is not one; nothing was deleted)"
            )
    for entry in entries:
        entry.unlink()
    folder.rmdir()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, RESULT_FILE_MODE)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: Path, payload: Mapping[str, object]) -> None:
    """Atomically write ``payload`` as indented JSON (NaN/inf become null)."""
    atomic_write_bytes(path, (json.dumps(_json_safe(payload), indent=2, sort_keys=False) + "\n").encode())


def write_csv(path: Path, rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> None:
    """Atomically write ``rows`` with a header of ``columns`` (missing values left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    atomic_write_bytes(path, buffer.getvalue().encode())


def _csv_value(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def ordered_columns(rows: Iterable[Mapping[str, object]], leading: Sequence[str]) -> list[str]:
    """``leading`` first, then every other key in order of first appearance."""
    columns = list(leading)
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


class GrowingCsv:
    """A CSV file that grows by rows during a run, at a cost that does not grow with the run.

    New rows are appended while the header has a column for every key they carry; a row with a
    new key rewrites the whole file atomically once, with the header :func:`ordered_columns` gives
    (the file is the same as rewriting it after every batch of rows, which costs O(rows) per batch).

    Parameters
    ----------
    path : Path
        The file.
    leading : Sequence[str]
        The columns that come first.
    """

    def __init__(self, path: Path, leading: Sequence[str]) -> None:
        self.path = Path(path)
        self.leading = tuple(leading)
        self.rows: list[dict[str, object]] = []
        self._columns: list[str] | None = None

    def extend(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Add ``rows`` to the file (appended, or the file rewritten when they bring a new column).

        Parameters
        ----------
        rows : Iterable[Mapping[str, object]]
            The new rows.
        """
        added = [dict(row) for row in rows]
        self.rows.extend(added)
        columns = self._columns
        if columns is not None and self.path.exists() and all(key in columns for row in added for key in row):
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            for row in added:
                writer.writerow({key: _csv_value(row.get(key)) for key in columns})
            with open(self.path, "a", newline="") as stream:
                stream.write(buffer.getvalue())
            return
        self._columns = ordered_columns(self.rows, self.leading)
        write_csv(self.path, self.rows, self._columns)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dictionaries of strings."""
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


FAILED_FILE = "failed.json"
# The ServerApp's last line, "[fl-poison] done: accuracy=... -> <folder>", printed once every file is written.
DONE_MARKER = "[fl-poison] done:"


class ResultFolder:
    """The files of one run, kept up to date round by round.

    Parameters
    ----------
    path : Path
        The run's folder (``output-dir/run-name``); created when the first file is written.
    """

    ROUND_LEADING = ("round", *SUMMARY_METRICS)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._rounds = GrowingCsv(self.path / "rounds.csv", self.ROUND_LEADING)
        self._clients: GrowingCsv | None = None

    @property
    def round_rows(self) -> list[dict[str, object]]:
        """The rows of ``rounds.csv`` so far."""
        return self._rounds.rows

    def write_config(self, settings: Mapping[str, object], extra: Mapping[str, object]) -> None:
        """``config.json``: the resolved settings plus provenance (versions, model, devices)."""
        write_json(self.path / "config.json", {"settings": dict(settings), **extra})

    def add_round(self, row: Mapping[str, object]) -> None:
        """Add a round's metrics to ``rounds.csv``.

        Parameters
        ----------
        row : Mapping[str, object]
            The round's metrics (``round`` first).
        """
        self._rounds.extend([row])

    def add_clients(self, rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> None:
        """Add rows to ``clients.csv`` (one row per sampled client per round; the file exists from the first call on).

        Parameters
        ----------
        rows : Sequence[Mapping[str, object]]
            The new rows (a round's clients; may be empty).
        columns : Sequence[str]
            The columns that come first.
        """
        if self._clients is None:
            self._clients = GrowingCsv(self.path / "clients.csv", columns)
        self._clients.extend(rows)

    def write_timings(self, timings: Mapping[str, object]) -> None:
        """``timings.json``: where the run's wall time went (see :class:`fl_poison.core.timings.PhaseClock`).

        Parameters
        ----------
        timings : Mapping[str, object]
            The clock's :meth:`~fl_poison.core.timings.PhaseClock.as_dict`.
        """
        write_json(self.path / "timings.json", timings)

    def write_summary(self, summary: Mapping[str, object]) -> None:
        """``summary.json``: the final metrics of the run."""
        write_json(self.path / "summary.json", summary)

    def mark_failed(self, reason: str) -> None:
        """``failed.json``: the run produced no meaningful result, and why (a failed run has no ``summary.json``).

        Parameters
        ----------
        reason : str
            One line naming the cause.
        """
        write_json(self.path / FAILED_FILE, {"status": "failed", "error": reason})

    def save_model(self, state_dict: Mapping[str, object]) -> None:
        """``model.pt``: the final global state dict (``torch.load`` reads it)."""
        import torch

        buffer = io.BytesIO()
        torch.save(dict(state_dict), buffer)
        atomic_write_bytes(self.path / "model.pt", buffer.getvalue())
