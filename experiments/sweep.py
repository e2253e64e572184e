"""Resumable sweeps: a grid of settings, each cell one real ``fl-poison run``.

A sweep file is TOML with a ``[base]`` table (settings shared by every cell, as for
``fl-poison run``) and a ``[grid]`` table (setting = list of values); the cells are the Cartesian
product of the grid, in the order the grid lists its settings. Each cell runs through the same
path as ``fl-poison run`` into ``DIR/<cell-id>/``, where the cell id is the hash of its resolved
settings, so a cell is recognised by what it runs, not by its position in the file.

``DIR/sweep.csv`` holds one row per cell (a column per grid setting, ``status``, the final
metrics, ``wall_seconds``, ``folder``, ``error``) and is rewritten atomically after every cell:
interrupting the sweep loses no finished cell, and running it again skips the cells already
``ok``, reruns failed or unfinished ones and never duplicates a row. ``DIR/sweep.json`` records
the sweep definition; a folder holding a different sweep is refused.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fl_poison.cli import CommandError, run_experiment
from fl_poison.config import SETTINGS_BY_KEY, ConfigError, parse_config
from fl_poison.results import SUMMARY_METRICS, read_csv, write_csv, write_json

SWEEP_DEFINITION = "sweep.json"
SWEEP_TABLE = "sweep.csv"
RESULT_COLUMNS = (
    *SUMMARY_METRICS, "asr", "mta", "ts_ata", "max_ata",
    "detection_precision", "detection_recall", "detection_fpr", "wall_seconds",
)
Runner = Callable[[dict[str, object], float, float, bool], Path]


@dataclass(frozen=True)
class SweepCell:
    """One cell of a sweep.

    Attributes
    ----------
    cell_id : str
        Hash of the resolved settings (see :meth:`fl_poison.config.ExperimentConfig.fingerprint`).
    values : dict[str, object]
        The grid settings of this cell.
    settings : dict[str, object]
        Base settings overridden by ``values``.
    """

    cell_id: str
    values: dict[str, object]
    settings: dict[str, object]


def load_sweep(path: Path) -> tuple[dict[str, object], dict[str, list[object]]]:
    """The ``[base]`` and ``[grid]`` tables of a sweep file, checked key by key."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"sweep file: cannot read {str(path)!r} ({error}); allowed: a TOML file with [base] and [grid]") from None
    unknown_tables = sorted(set(document) - {"base", "grid"})
    if unknown_tables:
        raise ConfigError(f"sweep file: unknown table [{unknown_tables[0]}]; allowed: [base], [grid]")
    base = dict(document.get("base", {}))
    grid = dict(document.get("grid", {}))
    for key in [*base, *grid]:
        if key not in SETTINGS_BY_KEY:
            raise ConfigError(f"{key}: unknown setting in the sweep file; allowed: {', '.join(SETTINGS_BY_KEY)}")
    if not grid:
        raise ConfigError("grid: empty; allowed: at least one setting with a list of values, e.g. num-malicious = [0, 1, 2]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key}: grid value {values!r} is not a non-empty list; allowed: e.g. {key} = [a, b]")
    return base, grid


def expand_grid(base: Mapping[str, object], grid: Mapping[str, list[object]]) -> list[SweepCell]:
    """Every cell of the grid, validated, in grid order; cells with identical settings appear once."""
    cells: list[SweepCell] = []
    seen: set[str] = set()
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        settings = {**base, **values}
        config = parse_config(settings)
        cell_id = config.fingerprint()
        if cell_id not in seen:
            seen.add(cell_id)
            cells.append(SweepCell(cell_id, values, settings))
    return cells


def check_folder(out: Path, base: Mapping[str, object], grid: Mapping[str, list[object]]) -> None:
    """Refuse an output folder that already holds a different sweep; record this one."""
    definition = {"base": dict(base), "grid": dict(grid)}
    stored = out / SWEEP_DEFINITION
    if stored.is_file():
        previous = json.loads(stored.read_text())
        if previous != json.loads(json.dumps(definition)):
            raise ConfigError(f"--out: {str(out)!r} holds a different sweep; allowed: its own sweep file or a new folder")
    write_json(stored, definition)


def cell_row(cell: SweepCell, out: Path, status: str, error: str = "") -> dict[str, object]:
    """The ``sweep.csv`` row of a cell: grid values, status, final metrics, folder, error."""
    folder = out / cell.cell_id
    row: dict[str, object] = {"cell_id": cell.cell_id, **cell.values, "status": status}
    summary_path = folder / "summary.json"
    if status == "ok" and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row.update({key: summary.get(key) for key in RESULT_COLUMNS if key in summary})
    row.update({"folder": str(folder), "error": error})
    return row


class SweepTable:
    """``sweep.csv``, kept in memory by cell id and rewritten atomically on every change.

    Parameters
    ----------
    out : Path
        The sweep folder.
    grid_keys : list[str]
        The grid settings (the table's leading columns after ``cell_id``).
    """

    def __init__(self, out: Path, grid_keys: list[str]) -> None:
        self.path = out / SWEEP_TABLE
        self.columns = ["cell_id", *grid_keys, "status", *RESULT_COLUMNS, "folder", "error"]
        self.rows: dict[str, dict[str, object]] = {}
        if self.path.is_file():
            self.rows = {row["cell_id"]: dict(row) for row in read_csv(self.path)}
        self._lock = threading.Lock()

    def finished(self, cell: SweepCell) -> bool:
        """True when the cell's row is ``ok`` and its summary is on disk."""
        row = self.rows.get(cell.cell_id)
        return bool(row) and row.get("status") == "ok" and Path(str(row.get("folder", ""))).joinpath("summary.json").is_file()

    def record(self, row: dict[str, object]) -> None:
        """Store a cell's row and rewrite the file."""
        with self._lock:
            self.rows[str(row["cell_id"])] = row
            write_csv(self.path, list(self.rows.values()), self.columns)


def run_sweep(
    path: Path, out: Path, jobs: int = 1, runner: Runner = run_experiment, progress: Callable[[str], None] = print
) -> SweepTable:
    """Run every unfinished cell of the sweep in ``path`` into ``out``; return the table.

    Parameters
    ----------
    path : Path
        The sweep file.
    out : Path
        The sweep folder (created if needed).
    jobs : int
        Cells run at once. Each cell's clients then ask Ray for ``jobs`` CPUs, so that all
        running cells together train at most one client per core.
    runner : Runner
        Runs one cell (``fl_poison.cli.run_experiment``; tests pass a stand-in).
    progress : Callable[[str], None]
        Receives one line per finished cell (done / total, ETA).
    """
    if jobs < 1:
        raise ConfigError.bad_value("--jobs", jobs, "an integer >= 1")
    base, grid = load_sweep(path)
    cells = expand_grid(base, grid)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check_folder(out, base, grid)
    table = SweepTable(out, list(grid))
    pending = [cell for cell in cells if not table.finished(cell)]
    total, done = len(cells), len(cells) - len(pending)
    progress(f"[sweep] {total} cells, {done} already done, {len(pending)} to run")
    started = time.monotonic()
    counter = itertools.count(1)
    cpus_per_client = float(max(1, jobs))

    def run_cell(cell: SweepCell) -> None:
        settings = {**cell.settings, "output-dir": str(out), "run-name": cell.cell_id, "save-model": False}
        try:
            runner(settings, cpus_per_client, 0.0, False)
            row = cell_row(cell, out, "ok")
        except (CommandError, ConfigError) as error:
            row = cell_row(cell, out, "failed", str(error).splitlines()[0])
        table.record(row)
        finished = next(counter)
        elapsed = time.monotonic() - started
        eta = elapsed / finished * (len(pending) - finished)
        progress(f"[sweep] {done + finished}/{total} cells ({row['status']}: {cell.cell_id} {cell.values}) ETA {eta:.0f}s")

    if jobs == 1:
        for cell in pending:
            run_cell(cell)
    else:
        with ThreadPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as pool:
            list(pool.map(run_cell, pending))
    return table
