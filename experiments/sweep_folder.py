"""Reading a sweep folder written by ``fl-poison sweep``: its definition, its table, its cells.

A sweep folder ``DIR`` holds ``sweep.json`` (``{"base": {setting: value}, "grids": {name:
{setting: list or value}}}``: in a grid a list is an axis, a single value a setting fixed for that
grid only), ``sweep.csv`` (one row per cell: ``cell_id``, ``grid`` with the names of the grids the
cell belongs to joined by ``;``, a column per setting any grid sets, ``status``, the final metrics,
``folder``, ``error``) and one result folder per cell. This module turns them into typed objects
for the plots and the report; it never writes. A cell's seed is its ``seed`` column, or, when no
grid sets ``seed``, the base's (or the default): :meth:`SweepFolder.seed_of`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.sweep import (
    CELL_ID_PATTERN,
    GRID_NAME_ALLOWED,
    GRID_NAME_PATTERN,
    RESULT_COLUMNS,
    SINGLE_GRID,
    SWEEP_DEFINITION,
    SWEEP_TABLE,
)
from fl_poison.apps.algorithms import catalogue
from fl_poison.core.results import read_csv
from fl_poison.core.settings import ConfigError
from fl_poison.launch import parse_value

ALLOWED_FOLDER = "a folder written by fl-poison sweep"
SEED_SETTING = "seed"
GRID_SEPARATOR = ";"


class SweepFolderError(ConfigError):
    """A folder that is not a readable sweep folder; the message is one line.

    Parameters
    ----------
    folder : Path
        The folder given on the command line.
    reason : str
        What is wrong with it.
    """

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"{folder}: {reason}; allowed: {ALLOWED_FOLDER}")


@dataclass(frozen=True)
class SweepDefinition:
    """The contents of ``sweep.json``.

    Attributes
    ----------
    base : dict[str, object]
        Settings shared by every cell.
    grids : dict[str, dict[str, object]]
        Each grid's table: a list value is an axis, a single value an override for that grid.
    """

    base: dict[str, object]
    grids: dict[str, dict[str, object]]

    def axes(self, grid: str) -> dict[str, list[object]]:
        """The settings ``grid`` varies, with their values in file order."""
        return {key: list(value) for key, value in self.grids.get(grid, {}).items() if isinstance(value, list)}

    def overrides(self, grid: str) -> dict[str, object]:
        """The settings ``grid`` fixes for its own cells only."""
        return {key: value for key, value in self.grids.get(grid, {}).items() if not isinstance(value, list)}

    def listed_values(self, key: str) -> list[object]:
        """Every value the definition gives ``key`` (base, axes, overrides), first appearance first."""
        values: list[object] = []
        candidates = [self.base.get(key)] if key in self.base else []
        for table in self.grids.values():
            if key in table:
                value = table[key]
                candidates.extend(value if isinstance(value, list) else [value])
        for value in candidates:
            if value not in values:
                values.append(value)
        return values


@dataclass(frozen=True)
class CellRow:
    """One row of ``sweep.csv``, typed.

    Attributes
    ----------
    cell_id : str
        The cell's id (its folder name).
    grids : tuple[str, ...]
        The grids the cell belongs to.
    values : dict[str, object]
        The cell's value of every setting column of the table (numbers as numbers).
    status : str
        ``ok`` or ``failed``.
    metrics : dict[str, float]
        Every result column; NaN where the run has no such metric.
    folder : Path
        The cell's result folder (``DIR/<cell_id>`` when the recorded one no longer exists).
    error : str
        Why the cell failed (empty when ok).
    """

    cell_id: str
    grids: tuple[str, ...]
    values: dict[str, object]
    status: str
    metrics: dict[str, float]
    folder: Path
    error: str

    @property
    def ok(self) -> bool:
        """True when the cell's run finished."""
        return self.status == "ok"

    def metric(self, name: str) -> float:
        """The final value of metric ``name``; NaN when absent."""
        return self.metrics.get(name, math.nan)


@dataclass(frozen=True)
class SweepFolder:
    """A sweep folder, read.

    Attributes
    ----------
    path : Path
        The folder (absolute).
    definition : SweepDefinition
        Its ``sweep.json``.
    cells : list[CellRow]
        The rows of its ``sweep.csv``, in table order.
    setting_columns : list[str]
        The setting columns of ``sweep.csv``, in table order.
    """

    path: Path
    definition: SweepDefinition
    cells: list[CellRow]
    setting_columns: list[str]

    def cells_of(self, grid: str) -> list[CellRow]:
        """The cells that belong to ``grid``, in table order."""
        return [cell for cell in self.cells if grid in cell.grids]

    def grid_settings(self, cell: CellRow) -> list[str]:
        """The settings the cell's grids set (axes and overrides): what tells the cell apart."""
        keys = [key for grid in cell.grids for key in self.definition.grids.get(grid, {})]
        return list(dict.fromkeys(keys))

    def seed_of(self, cell: CellRow) -> object:
        """The cell's seed: its ``seed`` column, else its grids' fixed seed, the base's or the default.

        Parameters
        ----------
        cell : CellRow
            A cell of this sweep.
        """
        if SEED_SETTING in cell.values:
            return cell.values[SEED_SETTING]
        return default_value(SEED_SETTING, cell.grids, self.definition)

    def cell_settings(self, cell: CellRow) -> dict[str, object]:
        """The cell's resolved settings: its ``config.json`` when readable, else base + overrides + table values."""
        try:
            stored = json.loads((cell.folder / "config.json").read_text())
        except (OSError, ValueError):
            stored = {}
        if isinstance(stored, dict) and isinstance(stored.get("settings"), dict):
            return dict(stored["settings"])
        settings = dict(self.definition.base)
        for grid in cell.grids:
            settings.update(self.definition.overrides(grid))
        settings.update(cell.values)
        return settings


def read_definition(path: Path) -> SweepDefinition:
    """Read ``sweep.json`` in the form ``{"base": {...}, "grids": {name: {setting: list or value}}}``.

    Parameters
    ----------
    path : Path
        The ``sweep.json`` file.

    Raises
    ------
    SweepFolderError
        When the file is missing, not JSON, or not of exactly that form.
    """
    folder = path.parent
    try:
        document = json.loads(path.read_text())
    except OSError:
        raise SweepFolderError(folder, f"no readable {SWEEP_DEFINITION}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SweepFolderError(folder, f"{SWEEP_DEFINITION} is not JSON ({error})") from None
    if not isinstance(document, dict) or set(document) != {"base", "grids"}:
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise SweepFolderError(folder, f"{SWEEP_DEFINITION} has {keys}, not the keys ['base', 'grids']")
    base, grids = document["base"], document["grids"]
    if not isinstance(base, dict) or not isinstance(grids, dict) or not grids:
        raise SweepFolderError(folder, f"{SWEEP_DEFINITION}: base must be an object and grids a non-empty object")
    for name, table in grids.items():
        if not isinstance(table, dict):
            raise SweepFolderError(folder, f"{SWEEP_DEFINITION}: grid {name!r} is not an object of settings")
        if name != SINGLE_GRID and not GRID_NAME_PATTERN.fullmatch(name):
            raise SweepFolderError(folder, f"{SWEEP_DEFINITION}: bad grid name {name!r} (allowed: {GRID_NAME_ALLOWED})")
    return SweepDefinition(base=dict(base), grids={name: dict(table) for name, table in grids.items()})


def csv_text(value: object) -> str:
    """How ``sweep.csv`` writes ``value`` (floats by ``repr``, everything else by ``str``)."""
    return repr(value) if isinstance(value, float) else str(value)


def typed_value(key: str, text: str, definition: SweepDefinition) -> object:
    """The value of setting ``key`` whose ``sweep.csv`` text is ``text``.

    A value the definition lists is returned as listed; other text is read as a TOML literal.

    Parameters
    ----------
    key : str
        The setting.
    text : str
        Its text in the table (not empty).
    definition : SweepDefinition
        The sweep definition.
    """
    for value in definition.listed_values(key):
        if csv_text(value) == text:
            return value
    if text in ("True", "False"):
        return text == "True"
    return parse_value(text)


def default_value(key: str, grids: Iterable[str], definition: SweepDefinition) -> object:
    """The value a cell of ``grids`` has for ``key`` when the table leaves it empty."""
    for grid in grids:
        overrides = definition.overrides(grid)
        if key in overrides:
            return overrides[key]
    if key in definition.base:
        return definition.base[key]
    return next(setting.default for setting in catalogue().settings() if setting.key == key)


def metric_value(text: str | None) -> float:
    """A result cell of ``sweep.csv`` as a float; NaN when empty or not a number."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def cell_row(
    row: Mapping[str, str], folder: Path, setting_columns: Sequence[str], definition: SweepDefinition
) -> CellRow:
    """Type one ``sweep.csv`` row.

    Parameters
    ----------
    row : Mapping[str, str]
        The row as read.
    folder : Path
        The sweep folder.
    setting_columns : Sequence[str]
        The table's setting columns.
    definition : SweepDefinition
        The sweep definition.
    """
    cell_id = row.get("cell_id") or ""
    if not CELL_ID_PATTERN.fullmatch(cell_id):
        raise SweepFolderError(folder, f"{SWEEP_TABLE} has cell_id {cell_id!r}, not a cell id of 8 hex digits")
    grids = tuple(name.strip() for name in (row.get("grid") or "").split(GRID_SEPARATOR) if name.strip())
    values = {
        key: typed_value(key, row[key], definition)
        if row.get(key) not in (None, "")
        else default_value(key, grids, definition)
        for key in setting_columns
    }
    return CellRow(
        cell_id=cell_id,
        grids=grids,
        values=values,
        status=row.get("status") or "",
        metrics={name: metric_value(row.get(name)) for name in RESULT_COLUMNS},
        # always the sweep's own DIR/<cell-id> (the table's folder column is not trusted: it may
        # name another machine's path or have been edited)
        folder=folder / cell_id,
        error=row.get("error") or "",
    )


def read_sweep_folder(folder: Path) -> SweepFolder:
    """Read ``folder``'s ``sweep.json`` and ``sweep.csv``.

    Parameters
    ----------
    folder : Path
        A folder written by ``fl-poison sweep``.

    Raises
    ------
    SweepFolderError
        When the folder, its table or its definition is missing or malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SweepFolderError(folder, "no such folder")
    table = folder / SWEEP_TABLE
    if not table.is_file():
        raise SweepFolderError(folder, f"no {SWEEP_TABLE}")
    definition = read_definition(folder / SWEEP_DEFINITION)
    try:
        rows = read_csv(table)
        with open(table, newline="") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise SweepFolderError(folder, f"cannot read {SWEEP_TABLE} ({error})") from None
    if not {"cell_id", "status"} <= set(header):
        raise SweepFolderError(folder, f"{SWEEP_TABLE} has no cell_id and status columns")
    known = {setting.key for setting in catalogue().settings()}
    setting_columns = [column for column in header if column in known]
    absolute = folder.resolve()
    cells = [cell_row(row, absolute, setting_columns, definition) for row in rows]
    for cell in cells:  # every table a figure reads is checked before the first figure is drawn
        if cell.ok:
            read_cell_table(cell, "rounds.csv")
            read_cell_table(cell, "clients.csv")
    return SweepFolder(path=absolute, definition=definition, cells=cells, setting_columns=setting_columns)


def read_cell_table(cell: CellRow, name: str) -> list[dict[str, str]]:
    """The rows of the cell's ``name`` (``rounds.csv``, ``clients.csv``), checked; empty when missing or unreadable.

    Every row's ``round`` must be an integer >= 0 (in ``rounds.csv`` every row has one), and
    every value of ``rounds.csv`` a number or empty: the figures read them as such.

    Parameters
    ----------
    cell : CellRow
        The cell.
    name : str
        The file in the cell's folder.

    Raises
    ------
    SweepFolderError
        Naming the file, the line and the value that is not a number.
    """
    path = cell.folder / name
    try:
        rows = read_csv(path)
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    sweep = cell.folder.parent
    for number, row in enumerate(rows, start=2):
        text = row.get("round")
        if text in (None, "") and name != "rounds.csv":
            continue
        if text is None or not re.fullmatch(r"\s*[0-9]+\s*", text):
            raise SweepFolderError(sweep, f"{path}: line {number} has round {text!r}, not an integer >= 0")
        if name == "rounds.csv":
            for column, value in row.items():
                if value not in (None, "") and not _is_number(value):
                    raise SweepFolderError(sweep, f"{path}: line {number} has {column} {value!r}, not a number")
    return rows


def _is_number(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def varying_settings(cells: Sequence[CellRow], columns: Sequence[str]) -> list[str]:
    """The settings among ``columns`` that take more than one value across ``cells``, in column order."""
    return [key for key in columns if len({csv_text(cell.values.get(key)) for cell in cells}) > 1]


def describe(values: Mapping[str, object], keys: Sequence[str]) -> str:
    """``key=value, ...`` for ``keys`` (the cell's identity within its grid)."""
    return ", ".join(f"{key}={values.get(key)}" for key in keys)


def round_tables(cells: Sequence[CellRow]) -> dict[str, list[dict[str, str]]]:
    """Each finished cell's ``rounds.csv`` rows by cell id (checked as :func:`read_cell_table` does).

    Parameters
    ----------
    cells : Sequence[CellRow]
        The cells (failed ones get no entry; a finished cell without the file an empty list).
    """
    return {cell.cell_id: read_cell_table(cell, "rounds.csv") for cell in cells if cell.ok}
