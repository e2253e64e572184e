"""Resumable sweeps: grids of settings, each cell one real ``fl-poison run``.

A sweep file is TOML with a ``[base]`` table (settings shared by every cell, as for
``fl-poison run``) and either one ``[grid]`` table (setting = list of values) or several named
grids ``[grid.NAME]``. In a named grid a list is an axis and a single value a setting fixed for
that grid only, so one file can hold a study made of several comparisons (e.g. seed 001: attacker
ratios, FedAvg vs Krum, DBA vs blend). The cells of a grid are the Cartesian product of its axes,
in the order the grid lists them. Each cell runs through the same path as ``fl-poison run`` into
``DIR/<cell-id>/``, where the cell id is the hash of its resolved settings, so a cell is
recognised by what it runs, not by its position in the file, and a cell shared by two grids runs
once.

**Replicates.** ``replicates = N`` (in ``[base]``, in ``[grid]`` or in a ``[grid.NAME]``; or
``--set replicates=N``) repeats every cell of a grid over N seeds: ``seed, seed + 1, ...,
seed + N - 1``, where ``seed`` is the grid's own fixed ``seed``, else the base's, else the default
(42). It is the same as listing those seeds as the grid's last axis, which is what ``sweep.json``
records (``replicates = 1`` changes nothing). A grid's own ``replicates`` replaces the base's. A
value that is not an integer >= 1, or ``replicates`` for a grid that also lists seeds (``seed =
[...]``), is refused in one line before any cell runs. Cells that differ only in their seed are
the replicates of one group (see :mod:`experiments.statistics`).

``DIR/sweep.csv`` holds one row per cell (``cell_id``, ``grid``, a column per setting any grid
sets, ``status``, the final metrics, ``wall_seconds``, ``folder``, ``error``) and is rewritten
atomically after every cell: interrupting the sweep loses no finished cell, and running it again
skips the cells already ``ok``, reruns failed or unfinished ones and never duplicates a row.
``DIR/sweep.json`` records the sweep definition; a folder holding a different sweep is refused.
Every cell folder gets a ``cell.log`` (settings, status, the whole error), also for cells that
fail before Flower starts.

**Reuse.** ``--reuse OTHER`` (repeatable) takes the cells that another sweep folder already
finished instead of running them again: a cell id is the hash of every setting that shapes the
run, so a cell with the same id in ``OTHER`` ran the same settings and seed; it is the same run
when it also ran the same code (its ``config.json`` records the code's fingerprint; the sweep
says how many copied cells ran other code or did not record it). Its folder is copied into
``DIR``, its row (metrics and ``wall_seconds`` of the original run) is written under this sweep's
grids, and its ``cell.log`` ends with the folder it came from and the code it ran.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import queue
import re
import shutil
import statistics
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from fl_poison.apps.algorithms import catalogue, experiment_config
from fl_poison.core.provenance import processor_description, source_fingerprint
from fl_poison.core.ray_head import RAY_ADDRESS_VARIABLE, RayHeadError, worker_port_range
from fl_poison.core.results import (
    RUN_FILES,
    SUMMARY_METRICS,
    atomic_write_bytes,
    read_csv,
    remove_unfinished_run,
    write_csv,
    write_json,
)
from fl_poison.core.settings import ConfigError
from fl_poison.launch import check_client_resources, run_experiment
from fl_poison.warm_runtime import FORK_BY_DEFAULT, WarmRuntime, WarmRuntimeError, warm_runtime

SWEEP_DEFINITION = "sweep.json"
SWEEP_TABLE = "sweep.csv"
CELL_LOG = "cell.log"
SINGLE_GRID = "grid"
RESULT_COLUMNS = (
    *SUMMARY_METRICS,
    "asr",
    "mta",
    "ts_ata",
    "max_ata",
    "detection_precision",
    "detection_recall",
    "detection_fpr",
    "rejection_precision",
    "rejection_recall",
    "rejection_fpr",
    "wall_seconds",
)
# A cell id is the 8 hex digits of ExperimentConfig.fingerprint(); it names the cell's folder and
# its figures, so an id read back from a (possibly hand-edited) sweep.csv must be one.
CELL_ID_PATTERN = re.compile(r"[0-9a-f]{8}")
# A grid's name goes into sweep.csv (joined by ';') and into figure file names.
GRID_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
GRID_NAME_ALLOWED = "up to 64 letters, digits, '_', '.' or '-', starting with a letter or a digit"
Runner = Callable[[dict[str, object], float, float, bool], Path]
Grids = dict[str, dict[str, object]]


@dataclass(frozen=True)
class SweepCell:
    """One cell of a sweep.

    Attributes
    ----------
    cell_id : str
        Hash of the resolved settings (see :meth:`fl_poison.core.config.ExperimentConfig.fingerprint`).
    values : dict[str, object]
        The settings the cell's grids set (axes and per-grid values), as the run config writes them.
    settings : dict[str, object]
        Base settings overridden by the grid's values: what the cell runs.
    grids : tuple[str, ...]
        The names of the grids the cell belongs to.
    """

    cell_id: str
    values: dict[str, object]
    settings: dict[str, object]
    grids: tuple[str, ...] = (SINGLE_GRID,)


def _check_keys(keys: list[str]) -> None:
    known = [setting.key for setting in catalogue().settings()]
    for key in keys:
        if key not in known:
            raise ConfigError(f"{key}: unknown setting in the sweep file; allowed: {', '.join(known)}")


REPLICATES = "replicates"
REPLICATES_ALLOWED = "an integer >= 1 (the cells run with seeds seed, seed+1, ..., seed+N-1)"
SEED = "seed"


def check_replicates(value: object, where: str) -> int:
    """``value`` of ``replicates`` as an int, or a one-line error naming the key and ``where`` it is set.

    Parameters
    ----------
    value : object
        The value as the sweep file (or ``--set``) gives it.
    where : str
        Where it is set (``[base]``, ``grid 'a'``, ``--set``), for the message.

    Raises
    ------
    ConfigError
        When ``value`` is not an integer >= 1 (a bool, a float such as 2.0 or a string is refused too).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{REPLICATES}: bad value {value!r} in {where}; allowed: {REPLICATES_ALLOWED}")
    return value


def _refuse_seed_list(name: str, grid: Mapping[str, object], source: str) -> None:
    if isinstance(grid.get(SEED), list):
        raise ConfigError(
            f"{REPLICATES}: {source} sets it and grid {name!r} lists seeds {grid[SEED]!r}; allowed: "
            f"either replicates = N or a seed list for a grid, not both"
        )


def read_sweep_file(path: Path) -> tuple[dict[str, object], Grids]:
    """The ``[base]`` table and the grids of a sweep file (by name), checked key by key, as written.

    A plain ``[grid]`` table (every value a list) is the one grid named ``grid``; ``[grid.NAME]``
    tables are named grids, where a list is an axis and a single value a fixed setting. A
    ``replicates`` key is checked and left in each grid it applies to (the base's goes into every
    grid that sets none); :func:`expand_replicates` turns it into seeds.

    Parameters
    ----------
    path : Path
        The sweep file.

    Raises
    ------
    ConfigError
        One line naming the key (or table) at fault.
    """
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"sweep file: cannot read {str(path)!r} ({error}); allowed: a TOML file with [base] and [grid]"
        ) from None
    unknown_tables = sorted(set(document) - {"base", "grid"})
    if unknown_tables:
        raise ConfigError(f"sweep file: unknown table [{unknown_tables[0]}]; allowed: [base], [grid] or [grid.NAME]")
    for table_name in ("base", "grid"):
        if not isinstance(document.get(table_name, {}), dict):
            raise ConfigError(
                f"{table_name}: bad value {document[table_name]!r} in the sweep file; allowed: a table [{table_name}] of settings"
            )
    base = dict(document.get("base", {}))
    base_replicates = check_replicates(base.pop(REPLICATES), "[base]") if REPLICATES in base else None
    _check_keys(list(base))
    table = dict(document.get("grid", {}))
    if not table:
        raise ConfigError(
            "grid: empty; allowed: at least one setting with a list of values, e.g. num-malicious = [0, 1, 2]"
        )
    named = [key for key, value in table.items() if isinstance(value, dict)]
    if named and len(named) != len(table):
        plain = next(key for key in table if key not in named)
        raise ConfigError(
            f"grid: {plain!r} sits beside named grids; allowed: either [grid] with lists or only [grid.NAME] tables"
        )
    for name in named:
        if not GRID_NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"grid: bad grid name {name!r}; allowed: {GRID_NAME_ALLOWED}")
    grids: Grids = {name: dict(values) for name, values in table.items()} if named else {SINGLE_GRID: table}
    for name, grid in grids.items():
        own = check_replicates(grid.pop(REPLICATES), f"grid {name!r}") if REPLICATES in grid else None
        _check_keys(list(grid))
        if not grid:
            raise ConfigError(f"grid.{name}: empty; allowed: settings with a value or a list of values")
        for key, values in grid.items():
            if isinstance(values, list) and not values:
                raise ConfigError(f"{key}: empty list in grid {name!r}; allowed: e.g. {key} = [a, b]")
            if not named and not isinstance(values, list):
                raise ConfigError(f"{key}: grid value {values!r} is not a non-empty list; allowed: e.g. {key} = [a, b]")
        if own is not None:
            _refuse_seed_list(name, grid, f"grid {name!r}")
            grid[REPLICATES] = own
        elif base_replicates is not None:
            _refuse_seed_list(name, grid, "[base]")
            grid[REPLICATES] = base_replicates
    return base, grids


def apply_overrides(
    base: Mapping[str, object], grids: Grids, overrides: Mapping[str, object]
) -> tuple[dict[str, object], Grids]:
    """Base and grids with ``--set`` values in place of the file's (e.g. ``dataset=cifar10``).

    A value replaces the base's and any grid's fixed value of that setting; a setting some grid
    varies cannot be set. ``replicates`` replaces every grid's (refused for a grid that lists seeds).

    Parameters
    ----------
    base : Mapping[str, object]
        The ``[base]`` settings.
    grids : Grids
        The grids, as :func:`read_sweep_file` returns them.
    overrides : Mapping[str, object]
        The ``--set`` values.
    """
    settings = {key: value for key, value in overrides.items() if key != REPLICATES}
    _check_keys(list(settings))
    for key in settings:
        for name, grid in grids.items():
            if isinstance(grid.get(key), list):
                raise ConfigError(f"--set {key}: grid {name!r} varies it; allowed: a setting no grid lists values for")
    changed = {name: {key: settings.get(key, value) for key, value in grid.items()} for name, grid in grids.items()}
    if REPLICATES in overrides:
        replicates = check_replicates(overrides[REPLICATES], "--set")
        for name, grid in changed.items():
            _refuse_seed_list(name, grid, "--set")
            grid[REPLICATES] = replicates
    return {**base, **settings}, changed


def replicate_seeds(start: object, replicates: int) -> list[int]:
    """The seeds of ``replicates`` replicates counting up from ``start``: ``start, start + 1, ...``.

    Parameters
    ----------
    start : object
        The first seed (the grid's fixed seed, else the base's, else the default).
    replicates : int
        How many seeds (>= 1).

    Raises
    ------
    ConfigError
        Naming ``seed`` when ``start`` is not an integer.
    """
    if isinstance(start, bool) or not isinstance(start, int):
        raise ConfigError.bad_value(SEED, start, "an integer (replicates count up from it)")
    return list(range(start, start + replicates))


def expand_replicates(base: Mapping[str, object], grids: Grids) -> tuple[dict[str, object], Grids]:
    """Each grid's ``replicates = N`` replaced by the seed axis ``[seed, ..., seed + N - 1]``, put last.

    ``seed`` is the grid's fixed seed, else the base's, else the setting's default. With N = 1
    the grid keeps its seed as it was.

    Parameters
    ----------
    base : Mapping[str, object]
        The base settings.
    grids : Grids
        The grids, possibly with a ``replicates`` key.
    """
    default_seed = next(setting.default for setting in catalogue().settings() if setting.key == SEED)
    expanded: Grids = {}
    for name, grid in grids.items():
        table = {key: value for key, value in grid.items() if key != REPLICATES}
        replicates = grid.get(REPLICATES)
        if isinstance(replicates, int) and replicates > 1:
            start = table.pop(SEED, base.get(SEED, default_seed))
            table[SEED] = replicate_seeds(start, replicates)
        expanded[name] = table
    return dict(base), expanded


def load_sweep(path: Path, overrides: Mapping[str, object] | None = None) -> tuple[dict[str, object], Grids]:
    """The base settings and the grids of a sweep file, with ``--set`` values and replicates applied.

    What runs, and what ``sweep.json`` records: :func:`read_sweep_file`, then
    :func:`apply_overrides`, then :func:`expand_replicates` (so ``--set seed=7`` moves the
    replicates' first seed).

    Parameters
    ----------
    path : Path
        The sweep file.
    overrides : Mapping[str, object] | None
        ``--set`` values (may hold ``replicates``).
    """
    return expand_replicates(*apply_overrides(*read_sweep_file(path), overrides or {}))


def _axes(grid: Mapping[str, object]) -> dict[str, list[object]]:
    return {key: value if isinstance(value, list) else [value] for key, value in grid.items()}


def expand_grid(
    base: Mapping[str, object], grid: Mapping[str, object], name: str = SINGLE_GRID, columns: list[str] | None = None
) -> list[SweepCell]:
    """Every cell of one grid, validated, in grid order; cells with identical settings appear once.

    Each cell's ``values`` hold its resolved value of every setting in ``columns`` (default:
    the grid's own settings).
    """
    axes = _axes(grid)
    cells: list[SweepCell] = []
    seen: set[str] = set()
    for combination in itertools.product(*axes.values()):
        settings = {**base, **dict(zip(axes, combination, strict=True))}
        config = experiment_config(settings)
        cell_id = config.fingerprint()
        if cell_id not in seen:
            seen.add(cell_id)
            resolved = config.to_dict()
            cells.append(SweepCell(cell_id, {key: resolved[key] for key in columns or axes}, settings, (name,)))
    return cells


def varying_settings(grids: Grids) -> list[str]:
    """The settings any grid sets, in order of first appearance: the leading columns of ``sweep.csv``."""
    keys: list[str] = []
    for grid in grids.values():
        keys.extend(key for key in grid if key not in keys)
    return keys


def expand_sweep(base: Mapping[str, object], grids: Grids) -> list[SweepCell]:
    """The cells of every grid, once each; a cell several grids share lists all their names.

    Each cell's ``values`` hold its resolved value of every setting any grid sets.
    """
    keys = varying_settings(grids)
    merged: dict[str, SweepCell] = {}
    for name, grid in grids.items():
        for cell in expand_grid(base, grid, name, keys):
            known = merged.get(cell.cell_id)
            merged[cell.cell_id] = (
                SweepCell(cell.cell_id, known.values, known.settings, (*known.grids, name)) if known else cell
            )
    return list(merged.values())


def resolved_out(out: Path) -> Path:
    """The sweep folder ``out``, absolute; it need not exist.

    Parameters
    ----------
    out : Path
        The ``--out`` folder.

    Raises
    ------
    ConfigError
        Naming ``--out`` when it is a file.
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError.bad_value("--out", str(out), "a folder (new, or one this sweep wrote); this is a file")
    return out


def prepare_out(out: Path) -> Path:
    """The sweep folder ``out``, absolute, created when missing.

    Parameters
    ----------
    out : Path
        The ``--out`` folder.

    Raises
    ------
    ConfigError
        Naming ``--out`` when it is a file (or lies under one) or cannot be created.
    """
    out = resolved_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError.bad_value(
            "--out", str(out), f"a folder this user can create and write ({error.strerror})"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError.bad_value("--out", str(out), "a folder this user can write")
    return out


def check_folder(out: Path, base: Mapping[str, object], grids: Grids, record: bool = True) -> None:
    """Refuse an output folder that already holds a different sweep; record this one (unless ``record`` is False)."""
    definition = {"base": dict(base), "grids": dict(grids)}
    stored = out / SWEEP_DEFINITION
    if stored.is_file():
        try:
            previous = json.loads(stored.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != json.loads(json.dumps(definition)):
            raise ConfigError(
                f"--out: {str(out)!r} holds a different sweep; allowed: its own sweep file or a new folder"
            )
    if record:
        write_json(stored, definition)


FINISHED_CELL_FILES = ("summary.json", "rounds.csv")
"""A cell whose row is ``ok`` counts as finished while its folder holds one of these."""


def cell_row(
    cell: SweepCell, out: Path, status: str, error: str = "", wall_seconds: float | None = None
) -> dict[str, object]:
    """The ``sweep.csv`` row of a cell: grids, values, status, final metrics, folder, error."""
    folder = out / cell.cell_id
    row: dict[str, object] = {"cell_id": cell.cell_id, "grid": ";".join(cell.grids), **cell.values, "status": status}
    summary_path = folder / "summary.json"
    if status == "ok" and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row.update({key: summary.get(key) for key in RESULT_COLUMNS if key in summary})
    if row.get("wall_seconds") in (None, "") and wall_seconds is not None:
        row["wall_seconds"] = round(wall_seconds, 1)
    row.update({"folder": str(folder), "error": error})
    return row


def write_cell_log(cell: SweepCell, out: Path, status: str, error: str, started: datetime, wall_seconds: float) -> None:
    """``DIR/<cell>/cell.log``: what the cell ran and how it ended (the whole error text)."""
    lines = [
        f"cell: {cell.cell_id} (grids: {', '.join(cell.grids)})",
        f"started: {started.isoformat(timespec='seconds')}",
        f"wall seconds: {wall_seconds:.1f}",
        f"status: {status}",
        "settings:",
        *(f"  {key} = {value!r}" for key, value in cell.settings.items()),
    ]
    if error:
        lines += ["error:", error]
    atomic_write_bytes(out / cell.cell_id / CELL_LOG, ("\n".join(lines) + "\n").encode())


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of an existing ``sweep.csv``, checked: a ``cell_id`` and a ``status`` column, every id a cell id.

    Parameters
    ----------
    path : Path
        The file.

    Raises
    ------
    ConfigError
        Naming the file, when it is not a readable table of the sweep's cells (e.g. edited by hand).
    """
    allowed = f"the {SWEEP_TABLE} fl-poison sweep writes (or a new --out folder)"
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"{SWEEP_TABLE}: {str(path)!r} is not a file; allowed: {allowed}")
    try:
        rows = read_csv(path)
        with open(path, newline="") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise ConfigError(f"{SWEEP_TABLE}: cannot read {str(path)!r} ({error}); allowed: {allowed}") from None
    missing = [column for column in ("cell_id", "status") if column not in header]
    if missing:
        raise ConfigError(f"{SWEEP_TABLE}: {str(path)!r} has no {missing[0]} column; allowed: {allowed}")
    for number, row in enumerate(rows, start=2):
        cell_id = row.get("cell_id")
        if not isinstance(cell_id, str) or not CELL_ID_PATTERN.fullmatch(cell_id):
            raise ConfigError(
                f"{SWEEP_TABLE}: line {number} of {str(path)!r} has cell_id {cell_id!r}; allowed: a cell id of 8 hex digits ({allowed})"
            )
    return rows


class SweepTable:
    """``sweep.csv``, kept in memory by cell id and rewritten atomically on every change.

    Parameters
    ----------
    out : Path
        The sweep folder.
    setting_columns : list[str]
        The settings the grids set (the table's leading columns after ``cell_id`` and ``grid``).
    order : list[str]
        Cell ids in grid order: rows are written in this order whatever order cells finish in
        (``--jobs``), rows of other ids after them.
    """

    def __init__(self, out: Path, setting_columns: list[str], order: list[str] | None = None) -> None:
        self.out = out
        self.path = out / SWEEP_TABLE
        self.rank = {cell_id: position for position, cell_id in enumerate(order or [])}
        self.columns = ["cell_id", "grid", *setting_columns, "status", *RESULT_COLUMNS, "folder", "error"]
        self.rows: dict[str, dict[str, object]] = {}
        if self.path.exists() or self.path.is_symlink():
            self.rows = {row["cell_id"]: dict(row) for row in read_table(self.path)}
        self._lock = threading.Lock()

    def finished(self, cell: SweepCell) -> bool:
        """True when the cell's row is ``ok`` and its folder ``DIR/<cell-id>`` still holds its results.

        The results are the run's ``summary.json`` or, in a folder trimmed to ``sweep.csv`` and
        each cell's ``rounds.csv``, its ``rounds.csv``: a sweep resumed there skips the cells the
        folder already has. A cell whose folder lost both (the committed results keep only
        tables and figures) runs again.
        """
        row = self.rows.get(cell.cell_id)
        if not row or row.get("status") != "ok":
            return False
        folder = self.out / cell.cell_id
        return any((folder / name).is_file() for name in FINISHED_CELL_FILES)

    def record(self, row: dict[str, object]) -> None:
        """Store a cell's row and rewrite the file."""
        with self._lock:
            self.rows[str(row["cell_id"])] = row
            ordered = sorted(self.rows.values(), key=lambda entry: self.rank.get(str(entry["cell_id"]), len(self.rank)))
            write_csv(self.path, ordered, self.columns)


def finished_cells_of_sources(sources: Sequence[Path], out: Path) -> list[tuple[Path, dict[str, dict[str, str]]]]:
    """Each ``--reuse`` folder, absolute, with its ``ok`` rows whose cell folders still hold their results, by cell id.

    Read once, before the sweep writes anything; each row's ``folder`` is set to where the cell's
    folder is now.

    Parameters
    ----------
    sources : Sequence[Path]
        The folders as given.
    out : Path
        This sweep's ``--out`` folder (it need not exist yet).

    Raises
    ------
    ConfigError
        Naming ``--reuse``, for the ``--out`` folder itself or a folder without ``sweep.csv``
        (and naming ``sweep.csv`` for one that is not a table of a sweep's cells).
    """
    target = Path(out).expanduser().resolve()
    finished = []
    for source in sources:
        folder = Path(source).expanduser().resolve()
        if folder == target:
            raise ConfigError.bad_value("--reuse", str(source), "another sweep's folder (this one is --out)")
        if not (folder / SWEEP_TABLE).is_file():
            raise ConfigError.bad_value(
                "--reuse", str(source), f"a folder fl-poison sweep wrote (this one has no {SWEEP_TABLE})"
            )
        rows = {
            row["cell_id"]: {**row, "folder": str(folder / row["cell_id"])}
            for row in read_table(folder / SWEEP_TABLE)
            if row.get("status") == "ok"
            and any((folder / row["cell_id"] / name).is_file() for name in FINISHED_CELL_FILES)
        }
        finished.append((folder, rows))
    return finished


class RunProvenance(NamedTuple):
    """What a run's numbers depend on besides its settings (``config.json``'s ``source`` and ``processor``).

    Attributes
    ----------
    code : str
        The fingerprint of the code the run executed ("" when not recorded).
    processor : str
        The signature of the processor it ran on ("" when not recorded).
    """

    code: str
    processor: str


def provenance_of_run(folder: Path) -> RunProvenance:
    """The code and the kind of processor a run folder's run had (empty where ``config.json`` does not say).

    Parameters
    ----------
    folder : Path
        A cell's folder (a committed one keeps no ``config.json``; runs before these records have none).
    """
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return RunProvenance("", "")
    if not isinstance(config, dict):
        return RunProvenance("", "")
    source, processor = config.get("source"), config.get("processor")
    return RunProvenance(
        str(source.get("sha256", "")) if isinstance(source, dict) else "",
        str(processor.get("signature", "")) if isinstance(processor, dict) else "",
    )


def reuse_finished_cells(
    pending: list[SweepCell],
    finished: Sequence[tuple[Path, dict[str, dict[str, str]]]],
    out: Path,
    table: SweepTable,
    here: RunProvenance,
) -> dict[Path, tuple[int, int, int]]:
    """Copy into ``out`` every pending cell that a ``--reuse`` folder finished.

    The first source that has a cell wins. Only the files a run writes are copied (the cell's
    own folder, not what a user added to it). Each copied cell's row keeps the metrics and the
    ``wall_seconds`` of the original run, and its ``cell.log`` ends with a line naming where it
    came from, the code it ran and the processor it ran on. The same cell id means the same
    settings; a re-run gives the same numbers only with the same code on the same kind of
    processor (:func:`fl_poison.core.provenance.processor_description`), which a copied cell
    whose ``config.json`` records others (or none) does not promise.

    Parameters
    ----------
    pending : list[SweepCell]
        The cells this sweep has not finished.
    finished : Sequence[tuple[Path, dict[str, dict[str, str]]]]
        The ``--reuse`` folders with their finished rows (:func:`finished_cells_of_sources`), in
        the order given.
    out : Path
        This sweep's folder (absolute).
    table : SweepTable
        This sweep's table, which records the copied rows.
    here : RunProvenance
        The code this sweep runs and the processor it runs on.

    Returns
    -------
    dict[Path, tuple[int, int, int]]
        Per ``--reuse`` folder: how many cells were copied, how many of them ran other code, and
        how many ran on another kind of processor (a cell that recorded none counts as other).
    """
    reused = {source: 0 for source, _ in finished}
    other_code = {source: 0 for source, _ in finished}
    other_processor = {source: 0 for source, _ in finished}
    for cell in pending:
        match = next(((source, rows[cell.cell_id]) for source, rows in finished if cell.cell_id in rows), None)
        if match is None:
            continue
        source, source_row = match
        origin, target = Path(source_row["folder"]), out / cell.cell_id
        remove_unfinished_run(target, finished_too=True)
        target.mkdir(parents=True)
        for name in RUN_FILES:
            if (origin / name).is_file() and not (origin / name).is_symlink():
                shutil.copy2(origin / name, target / name)
        log = (origin / CELL_LOG).read_text() if (origin / CELL_LOG).is_file() else ""
        ran = provenance_of_run(origin)
        other_code[source] += ran.code != here.code
        other_processor[source] += ran.processor != here.processor
        note = (
            f"reused from: {origin} (its code: {ran.code or 'not recorded'}; this sweep's: {here.code}; "
            f"its processor: {ran.processor or 'not recorded'}; this machine's: {here.processor})\n"
        )
        atomic_write_bytes(target / CELL_LOG, f"{log}{note}".encode())
        row = cell_row(cell, out, "ok")
        row.update(
            {key: source_row[key] for key in RESULT_COLUMNS if row.get(key) in (None, "") and source_row.get(key)}
        )
        table.record(row)
        reused[source] += 1
    return {source: (reused[source], other_code[source], other_processor[source]) for source in reused}


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{rest:02d}s" if hours else f"{minutes}m{rest:02d}s"


class SweepProgress:
    """A progress bar, one line per event: cells done / total, ok and failed counts, elapsed, ETA.

    Parameters
    ----------
    total : int
        Cells in the sweep.
    done : int
        Cells already finished before this invocation (resume).
    emit : Callable[[str], None]
        Receives each line.
    width : int
        Characters of the bar.
    """

    def __init__(self, total: int, done: int, emit: Callable[[str], None], width: int = 24) -> None:
        self.total, self.done, self.emit, self.width = total, done, emit, width
        self.ran = self.failed = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def bar(self) -> str:
        """``[#####.....] 3/12`` for the cells done so far."""
        filled = round(self.width * self.done / self.total) if self.total else self.width
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}"

    def start(self, cell: SweepCell) -> None:
        """Announce a cell that starts running."""
        with self._lock:
            self.emit(f"[sweep] {self.bar()} running {cell.cell_id} {cell.values}")

    def finish(self, cell: SweepCell, status: str) -> None:
        """Count a finished cell and print the bar with the time left, estimated from this invocation's cells."""
        with self._lock:
            self.done += 1
            self.ran += 1
            self.failed += status != "ok"
            elapsed = time.monotonic() - self.started
            left = elapsed / self.ran * (self.total - self.done)
            self.emit(
                f"[sweep] {self.bar()} {status}: {cell.cell_id} · failed {self.failed} · "
                f"elapsed {_duration(elapsed)} · ETA {_duration(left)}"
            )


def print_now(line: str) -> None:
    """Print ``line`` and flush, so that progress shows at once in a log file too.

    The line and its newline go out in one write: cells running at once cannot join their lines.

    Parameters
    ----------
    line : str
        The text to print, without its newline.
    """
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def checked_sweep(
    path: Path,
    out: Path,
    jobs: int,
    overrides: Mapping[str, object] | None,
    gpus_per_client: float,
    reuse: Sequence[Path],
) -> tuple[dict[str, object], Grids, list[SweepCell], int, list[tuple[Path, dict[str, dict[str, str]]]]]:
    """What a sweep checks before it writes anything: the file, every cell, ``--jobs``, the client resources, ``--reuse``.

    Returns the base settings, the grids, the cells, the cells run at once (``jobs``, at most the
    CPU cores) and the ``--reuse`` folders with their finished rows.

    Parameters
    ----------
    path : Path
        The sweep file.
    out : Path
        The sweep folder (a ``--reuse`` folder must be another).
    jobs : int
        ``--jobs``.
    overrides : Mapping[str, object] | None
        ``--set`` values (see :func:`apply_overrides`).
    gpus_per_client : float
        ``--gpus-per-client``.
    reuse : Sequence[Path]
        ``--reuse`` folders (see :func:`finished_cells_of_sources`).

    Raises
    ------
    ConfigError
        Naming the setting, option or file at fault.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError.bad_value("--jobs", jobs, "an integer >= 1")
    base, grids = load_sweep(path, overrides)
    cells = expand_sweep(base, grids)
    workers = min(jobs, os.cpu_count() or 1)
    check_client_resources(float(workers), gpus_per_client)
    return base, grids, cells, workers, finished_cells_of_sources(reuse, Path(out))


def run_sweep(
    path: Path,
    out: Path,
    jobs: int = 1,
    runner: Runner | None = None,
    progress: Callable[[str], None] = print_now,
    overrides: Mapping[str, object] | None = None,
    gpus_per_client: float = 0.0,
    shared_runtime: bool = True,
    fork_simulations: bool = FORK_BY_DEFAULT,
    reuse: Sequence[Path] = (),
) -> SweepTable:
    """Run every unfinished cell of the sweep in ``path`` into ``out``; return the table.

    The sweep file and every cell are checked before any cell runs. A cell that fails (any
    error) is recorded as ``failed`` with the first line of its error, the whole error goes to
    its ``cell.log``, and the sweep goes on.

    Parameters
    ----------
    path : Path
        The sweep file.
    out : Path
        The sweep folder (created if needed).
    jobs : int
        Cells run at once (at most the number of CPU cores), each in a runtime of its own (see
        :class:`SharedRuntime`). Each cell's clients then ask Ray for ``jobs`` CPUs, so that all
        running cells together train at most one client per core.
    runner : Runner | None
        Runs one cell (None: ``fl_poison.launch.run_experiment``, in the shared runtime when
        ``shared_runtime``; tests pass a stand-in, which runs as given).
    progress : Callable[[str], None]
        Receives the progress lines.
    overrides : Mapping[str, object] | None
        ``--set`` values that replace the file's (see :func:`apply_overrides`); the folder's
        ``sweep.json`` records the result, so a sweep resumed with other values is refused.
    gpus_per_client : float
        GPU share of each virtual client (0: CPU).
    shared_runtime : bool
        Run the cells against a SuperLink and a Ray head started for the sweep, one per cell
        running at once (:func:`fl_poison.warm_runtime.warm_runtime`): each cell then skips Ray's start and stop
        (3 s on two quiet cores, 10 s on busy ones). When they do not start, one line says why
        and every cell starts its own Ray, as with False.
    fork_simulations : bool
        In the shared runtime, fork each cell's simulation process from a preloaded executor
        (see :func:`fl_poison.warm_runtime.warm_runtime`; the default on Linux).
    reuse : Sequence[Path]
        Other sweep folders whose finished cells with the same ids are copied instead of run
        again (see :func:`reuse_finished_cells`).
    """
    base, grids, cells, workers, reusable = checked_sweep(path, out, jobs, overrides, gpus_per_client, reuse)
    out = prepare_out(Path(out))
    table = SweepTable(out, varying_settings(grids), [cell.cell_id for cell in cells])
    check_folder(out, base, grids)
    pending = [cell for cell in cells if not table.finished(cell)]
    here = RunProvenance(str(source_fingerprint()["sha256"]), str(processor_description()["signature"]))
    for source, (count, code, processor) in reuse_finished_cells(pending, reusable, out, table, here).items():
        if code or processor:
            progress(
                f"[sweep] reused {count} finished cell(s) of {source} (same cell ids: same settings; {code} of them"
                f" ran other code than this sweep's and {processor} another kind of processor than this machine's,"
                " counting those that did not record it, so a re-run here may give other numbers)"
            )
        else:
            progress(
                f"[sweep] reused {count} finished cell(s) of {source}"
                " (same cell ids, code and kind of processor: same runs)"
            )
    pending = [cell for cell in pending if not table.finished(cell)]
    progress(
        f"[sweep] {len(cells)} cells in {len(grids)} grid(s), {len(cells) - len(pending)} already done, "
        f"{len(pending)} to run, {workers} at a time"
    )
    bar = SweepProgress(len(cells), len(cells) - len(pending), progress)
    cpus_per_client = float(workers)
    enabled = shared_runtime and runner is None and bool(pending)
    with SharedRuntime(progress, enabled=enabled, fork_simulations=fork_simulations, slots=workers) as shared:

        def run_in_shared_runtime(settings: dict[str, object], cpus: float, gpus: float, verbose: bool) -> Path:
            with shared.lease() as environment:
                return run_experiment(settings, cpus, gpus, verbose, environment=environment)

        run_one = runner if runner is not None else run_in_shared_runtime
        _run_cells(pending, out, table, bar, run_one, cpus_per_client, gpus_per_client, workers, progress)
    return table


def plan_sweep(
    path: Path,
    out: Path,
    jobs: int = 1,
    progress: Callable[[str], None] = print_now,
    overrides: Mapping[str, object] | None = None,
    reuse: Sequence[Path] = (),
    gpus_per_client: float = 0.0,
) -> list[SweepCell]:
    """Check the sweep as :func:`run_sweep` does and say what it would do; write nothing. Return the cells it would run.

    One line with the counts (cells, done in ``out``, copied from ``--reuse``, to run), one line per
    cell to run with its settings, and, when ``out`` holds finished cells, the time the rest would
    take with ``jobs`` cells at once: each cell at the median ``wall_seconds`` of the finished
    cells of its grid (of all grids when its grid has none).

    Parameters
    ----------
    path : Path
        The sweep file.
    out : Path
        The sweep folder (need not exist).
    jobs : int
        Cells at once (as ``--jobs``).
    progress : Callable[[str], None]
        Receives the lines.
    overrides : Mapping[str, object] | None
        ``--set`` values (see :func:`apply_overrides`).
    reuse : Sequence[Path]
        ``--reuse`` folders (see :func:`finished_cells_of_sources`).
    gpus_per_client : float
        ``--gpus-per-client``, checked as the sweep checks it.

    Raises
    ------
    ConfigError
        For everything :func:`run_sweep` refuses before it runs a cell.
    """
    base, grids, cells, workers, reusable = checked_sweep(path, out, jobs, overrides, gpus_per_client, reuse)
    out = resolved_out(out)
    if out.is_dir():
        check_folder(out, base, grids, record=False)
    table = SweepTable(out, varying_settings(grids), [cell.cell_id for cell in cells])
    pending = [cell for cell in cells if not table.finished(cell)]
    copied = [cell for cell in pending if any(cell.cell_id in rows for _, rows in reusable)]
    to_run = [cell for cell in pending if cell not in copied]
    progress(
        f"[sweep] plan: {len(cells)} cells in {len(grids)} grid(s), {len(cells) - len(pending)} already done, "
        f"{len(copied)} to copy from --reuse, {len(to_run)} to run, {workers} at a time (nothing written)"
    )
    for cell in to_run:
        progress(f"[sweep] would run {cell.cell_id} {cell.values}")
    seconds: dict[str, list[float]] = {}
    for row in table.rows.values():
        if row.get("status") == "ok" and row.get("wall_seconds") not in (None, ""):
            seconds.setdefault(str(row.get("grid", "")), []).append(float(str(row["wall_seconds"])))
    if to_run and seconds:
        overall = statistics.median(value for values in seconds.values() for value in values)
        estimate = sum(statistics.median(seconds.get(";".join(cell.grids)) or [overall]) for cell in to_run)
        progress(
            f"[sweep] about {_duration(estimate / workers)} for the {len(to_run)} left, {workers} at a time, at the "
            f"median wall seconds of this folder's finished cells of the same grid ({_duration(overall)} over all grids)"
        )
    return to_run


class SharedRuntime:
    """The sweep's warm runtimes (:func:`fl_poison.warm_runtime.warm_runtime`): one per cell running at once.

    A cell leases a runtime for its run (:meth:`lease`); each runtime starts on first use. Cells
    that run at once never share one: Flower sizes a run's actor pool from the Ray head's total
    CPUs, so two runs on one head would each create a full pool, and one run's clients would wait
    for the other run to end (and fail the ServerApp's wait for its nodes). With ``--jobs N`` there are
    N runtimes, each head advertising every core, and each cell's clients ask for N CPUs but train
    on one thread (``OMP_NUM_THREADS=1`` in the runtime, which Ray then leaves alone); their Ray
    heads hand out disjoint worker port ranges (:func:`fl_poison.core.ray_head.worker_port_range`).

    Before every cell the leased runtime is checked: when its SuperLink or Ray head no longer
    answers, a new one is started (with one line), so that one crashed Ray process does not fail
    every later cell of a sweep that runs for hours. When a runtime cannot start, one line says
    why and from then on cells without a runtime start their own Ray through the local SuperLink.

    Parameters
    ----------
    progress : Callable[[str], None]
        Receives the progress lines.
    enabled : bool
        False: never start a runtime (every lease yields None).
    fork_simulations : bool
        Fork each cell's simulation process from the runtime's preloaded executor.
    slots : int
        Cells that run at once (one runtime each).
    """

    def __init__(
        self,
        progress: Callable[[str], None],
        enabled: bool = True,
        fork_simulations: bool = FORK_BY_DEFAULT,
        slots: int = 1,
    ) -> None:
        self._progress = progress
        self._enabled = enabled
        self._fork_simulations = fork_simulations
        self._slots = slots
        self._free: queue.SimpleQueue[_RuntimeSlot] = queue.SimpleQueue()
        self._all = [_RuntimeSlot(number) for number in range(slots)]
        for slot in self._all:
            self._free.put(slot)
        self._lock = threading.Lock()

    def __enter__(self) -> SharedRuntime:
        return self

    def __exit__(self, *exception: object) -> None:
        for slot in self._all:
            slot.stack.close()

    @contextmanager
    def lease(self) -> Iterator[dict[str, str] | None]:
        """A runtime's environment, the runtime held for this cell alone (started or restarted as needed), or None."""
        slot = self._free.get()
        try:
            yield self._environment(slot)
        finally:
            self._free.put(slot)

    def _environment(self, slot: _RuntimeSlot) -> dict[str, str] | None:
        if slot.runtime is not None and not slot.runtime.answers():
            self._progress(f"[sweep] the shared runtime{self._name(slot)} stopped answering; starting a new one")
            slot.stack.close()
            slot.stack, slot.runtime = ExitStack(), None
        with self._lock:
            enabled = self._enabled
        if slot.runtime is None and enabled:
            self._start(slot)
        return None if slot.runtime is None else slot.runtime.environment

    def _name(self, slot: _RuntimeSlot) -> str:
        return "" if self._slots == 1 else f" {slot.number + 1} of {self._slots}"

    def _start(self, slot: _RuntimeSlot) -> None:
        started = time.monotonic()
        try:
            ports, base = None, None
            if self._slots > 1:
                # each client holds N of the head's CPUs, for which Ray would give it N threads:
                # one thread, as with --jobs 1 (unless the user's environment says otherwise)
                ports, base = worker_port_range(slot.number, self._slots), {"OMP_NUM_THREADS": "1", **os.environ}
            slot.runtime = slot.stack.enter_context(
                warm_runtime(base=base, fork_simulations=self._fork_simulations, worker_ports=ports)
            )
        except (RayHeadError, WarmRuntimeError) as error:
            with self._lock:
                said, self._enabled = not self._enabled, False
            if not said:
                self._progress(f"[sweep] no shared runtime ({error}); every cell starts its own Ray")
            return
        environment = slot.runtime.environment
        self._progress(
            f"[sweep] shared runtime{self._name(slot)}: Ray head at {environment[RAY_ADDRESS_VARIABLE]}, SuperLink on "
            f"port {environment['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']} (started in {time.monotonic() - started:.1f}s)"
        )


@dataclass
class _RuntimeSlot:
    """One of :class:`SharedRuntime`'s runtimes: its number, what stops it, and the runtime once started."""

    number: int
    stack: ExitStack = field(default_factory=ExitStack)
    runtime: WarmRuntime | None = None


def _run_cells(
    pending: list[SweepCell],
    out: Path,
    table: SweepTable,
    bar: SweepProgress,
    runner: Runner,
    cpus_per_client: float,
    gpus_per_client: float,
    workers: int,
    progress: Callable[[str], None],
) -> None:
    """Run ``pending`` with ``runner``, ``workers`` at a time, recording each in ``table``.

    Parameters
    ----------
    pending : list[SweepCell]
        The cells to run.
    out : Path
        The sweep folder.
    table : SweepTable
        The sweep's table.
    bar : SweepProgress
        The progress bar.
    runner : Runner
        Runs one cell.
    cpus_per_client : float
        Ray CPUs per virtual client.
    gpus_per_client : float
        GPU share per virtual client.
    workers : int
        Cells at once.
    progress : Callable[[str], None]
        Receives the progress lines.
    """

    def run_cell(cell: SweepCell) -> None:
        # a cell keeps no model unless its sweep file asks for one (save-model = true: to audit it)
        settings = {"save-model": False, **cell.settings, "output-dir": str(out), "run-name": cell.cell_id}
        bar.start(cell)
        started, clock = datetime.now(UTC), time.monotonic()
        try:
            # the sweep owns DIR/<cell-id>: an earlier failed or unfinished attempt is cleared, a
            # run is never written over another's files
            remove_unfinished_run(out / cell.cell_id, finished_too=True)
            runner(settings, cpus_per_client, gpus_per_client, False)
            status, error = "ok", ""
        except Exception as failure:  # noqa: BLE001 - any failure of one cell is recorded, the sweep goes on
            status, error = "failed", str(failure).strip() or type(failure).__name__
        wall = time.monotonic() - clock
        write_cell_log(cell, out, status, error, started, wall)
        table.record(cell_row(cell, out, status, error.splitlines()[0] if error else "", wall))
        bar.finish(cell, status)

    if workers == 1:
        for cell in pending:
            run_cell(cell)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        list(pool.map(run_cell, pending))
    except KeyboardInterrupt:
        progress("[sweep] interrupted: no new cell starts; cells already running finish and are recorded")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
