"""The Markdown report of a sweep folder (``fl-poison report DIR`` writes ``DIR/report.md``).

The report always redraws the figures first (:func:`experiments.sweep_plots.draw_sweep`), so its
tables and its figures come from the same ``sweep.csv``. It holds the base settings; for each
grid its axes, its overrides, a table with one row per cell (the cell's axis values, status, final
accuracy, the attack and detection metrics the grid's cells have, wall seconds, and the error of
a failed cell) and links to the grid's figures; the sweep-wide figures; links to each finished
cell's figures; and a list of the failed cells. Links are relative to ``DIR``. The file is
written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from experiments.sweep_aggregates import has_metric
from experiments.sweep_folder import CellRow, SweepFolder, describe, read_sweep_folder
from experiments.sweep_plots import SweepFigures, Warn, draw_sweep, warn_on_stderr
from fl_poison.core.results import atomic_write_bytes

REPORT_FILE = "report.md"
OPTIONAL_METRICS = (
    ("asr", "ASR"),
    ("mta", "MTA"),
    ("max_ata", "max ATA"),
    ("detection_precision", "detection precision"),
    ("detection_recall", "detection recall"),
)
MISSING = "–"
CELL_FIGURE_NAMES = {"cells": "metrics per round", "norms": "update norms"}


def markdown_cell(text: object) -> str:
    """``text`` made safe for one Markdown table cell (no pipes, no line breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a Markdown table.

    Parameters
    ----------
    header : Sequence[str]
        Column titles.
    rows : Sequence[Sequence[object]]
        Cell contents, one sequence per row.
    """
    lines = ["| " + " | ".join(markdown_cell(title) for title in header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(markdown_cell(value) for value in row) + " |" for row in rows)
    return lines


def format_metric(value: float, digits: int = 3) -> str:
    """A metric with ``digits`` decimals, or "–" when absent."""
    return MISSING if not math.isfinite(value) else f"{value:.{digits}f}"


def format_setting(value: object) -> str:
    """A setting value as inline code."""
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def relative_link(path: Path, folder: Path) -> str:
    """``path`` relative to the sweep ``folder``, with forward slashes."""
    return Path(os.path.relpath(path, folder)).as_posix()


def figure_lines(paths: Sequence[Path], folder: Path) -> list[str]:
    """Markdown image links to ``paths``, one paragraph each."""
    lines: list[str] = []
    for path in paths:
        lines.extend([f"![{path.stem}]({relative_link(path, folder)})", ""])
    return lines


def grid_table(cells: Sequence[CellRow], axes: Sequence[str], folder: Path) -> list[str]:
    """The results table of one grid: one row per cell.

    Parameters
    ----------
    cells : Sequence[CellRow]
        The grid's cells, in table order.
    axes : Sequence[str]
        The grid's axes (one column each).
    folder : Path
        The sweep folder (cell links are relative to it).
    """
    metrics = [(name, title) for name, title in OPTIONAL_METRICS if has_metric(cells, name)]
    with_errors = any(not cell.ok for cell in cells)
    header = ["cell", *axes, "status", "accuracy", *(title for _, title in metrics), "wall s"]
    if with_errors:
        header.append("error")
    rows = []
    for cell in cells:
        row: list[object] = [f"[`{cell.cell_id}`]({relative_link(cell.folder, folder)}/)"]
        row.extend(cell.values.get(key, "") for key in axes)
        row.extend([cell.status, format_metric(cell.metric("accuracy"))])
        row.extend(format_metric(cell.metric(name)) for name, _ in metrics)
        row.append(format_metric(cell.metric("wall_seconds"), 1))
        if with_errors:
            row.append(cell.error)
        rows.append(row)
    return markdown_table(header, rows)


def settings_lines(settings: Mapping[str, object]) -> list[str]:
    """``- `key` = `value``` lines for ``settings``."""
    return [
        f"- `{key}` = " + ", ".join(format_setting(v) for v in (value if isinstance(value, list) else [value]))
        for key, value in settings.items()
    ]


def grid_section(sweep: SweepFolder, grid: str, figures: SweepFigures) -> list[str]:
    """The report section of one grid: axes, overrides, results table, figures.

    Parameters
    ----------
    sweep : SweepFolder
        The sweep.
    grid : str
        The grid's name.
    figures : SweepFigures
        The figures drawn for the sweep.
    """
    axes = sweep.definition.axes(grid)
    overrides = sweep.definition.overrides(grid)
    cells = sweep.cells_of(grid)
    lines = [f"## Grid `{grid}`", "", "Axes:", "", *settings_lines(axes), ""]
    if overrides:
        lines.extend(["Settings fixed for this grid only:", "", *settings_lines(overrides), ""])
    if not cells:
        return [*lines, "No cell of this grid is in sweep.csv yet.", ""]
    ok = sum(cell.ok for cell in cells)
    lines.extend([f"Cells: {len(cells)} ({ok} finished, {len(cells) - ok} failed).", ""])
    lines.extend([*grid_table(cells, list(axes), sweep.path), ""])
    lines.extend(figure_lines(figures.by_grid.get(grid, []), sweep.path))
    return lines


def cell_figure_lines(sweep: SweepFolder, figures: SweepFigures) -> list[str]:
    """One list item per finished cell with links to its figures."""
    lines = []
    for cell in sweep.cells:
        paths = figures.by_cell.get(cell.cell_id, [])
        if paths:
            links = ", ".join(
                f"[{CELL_FIGURE_NAMES.get(path.parent.name, path.stem)}]({relative_link(path, sweep.path)})"
                for path in paths
            )
            lines.append(
                f"- `{cell.cell_id}` ({describe(sweep.cell_settings(cell), sweep.grid_settings(cell))}): {links}"
            )
    return lines


def report_text(sweep: SweepFolder, figures: SweepFigures) -> str:
    """The Markdown of the report.

    Parameters
    ----------
    sweep : SweepFolder
        The sweep.
    figures : SweepFigures
        The figures drawn for it (:func:`experiments.sweep_plots.draw_sweep`).
    """
    failed = [cell for cell in sweep.cells if not cell.ok]
    counts = f"{len(sweep.cells)} cells, {len(sweep.cells) - len(failed)} finished, {len(failed)} failed"
    lines = [
        f"# Sweep report: {sweep.path.name}",
        "",
        f"{counts} (from `sweep.csv`; figures redrawn by `fl-poison report` into `plots/`, PNG and PDF).",
        "",
        "## Base settings",
        "",
    ]
    base = sweep.definition.base
    if base:
        lines.extend(
            markdown_table(["setting", "value"], [[f"`{key}`", format_setting(value)] for key, value in base.items()])
        )
    else:
        lines.append("None: every setting that no grid sets has its default.")
    lines.append("")
    for grid in sweep.definition.grids:
        lines.extend(grid_section(sweep, grid, figures))
    if figures.sweep_wide:
        lines.extend(["## All finished cells", "", *figure_lines(figures.sweep_wide, sweep.path)])
    if figures.labels:
        lines.extend(["## Label distribution per client", "", *figure_lines(figures.labels, sweep.path)])
    cell_lines = cell_figure_lines(sweep, figures)
    if cell_lines:
        lines.extend(["## Figures of each cell", "", *cell_lines, ""])
    if failed:
        lines.extend(["## Failed cells", ""])
        rows = [[f"`{cell.cell_id}`", ", ".join(cell.grids), cell.error or "(no error recorded)"] for cell in failed]
        lines.extend([*markdown_table(["cell", "grid", "error"], rows), ""])
    return "\n".join(lines).rstrip() + "\n"


def write_report(folder: Path, warn: Warn = warn_on_stderr) -> Path:
    """Redraw the figures of the sweep in ``folder`` and write ``folder/report.md``; return its path.

    Parameters
    ----------
    folder : Path
        A folder written by ``fl-poison sweep``.
    warn : Warn
        Receives one line per figure that had to be skipped.

    Raises
    ------
    experiments.sweep_folder.SweepFolderError
        When ``folder`` is not a readable sweep folder.
    """
    sweep = read_sweep_folder(folder)
    figures = draw_sweep(sweep, warn)
    path = sweep.path / REPORT_FILE
    atomic_write_bytes(path, report_text(sweep, figures).encode())
    return path
