"""The report of a sweep folder: ``fl-poison report DIR`` writes ``DIR/report.md``, ``groups.csv`` and ``pairs.csv``.

The report always redraws the figures first (:func:`experiments.sweep_plots.draw_sweep`), so its
tables and its figures come from the same ``sweep.csv``. It holds the base settings; for each
grid its axes, its overrides, a table of its replicate groups (cells that differ only in their
seed: mean ± sample standard deviation [95 % t interval] over the seeds, final value and mean of
the last ``last_rounds`` rounds side by side), the paired differences between groups that differ
in one setting (when groups have two seeds or more), a table with one row per cell (the cell's
axis values, status, final accuracy, the attack and detection metrics the grid's cells have, wall
seconds, and the error of a failed cell) and links to the grid's figures; the sweep-wide
figures; links to each finished cell's figures; and a list of the failed cells. Links are
relative to ``DIR``. Every file is written atomically.

``DIR/groups.csv`` has one row per replicate group, metric and measure (columns
:data:`GROUP_COLUMNS` around the setting columns); ``DIR/pairs.csv`` one row per pair of groups
that differ in exactly one setting, metric and measure (:data:`PAIR_COLUMNS`). Both load with
``pandas.read_csv``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from experiments.statistics import LAST_ROUNDS, format_difference, format_summary
from experiments.sweep_aggregates import (
    FINAL,
    LAST,
    REPLICATE_SETTINGS,
    GroupComparison,
    GroupStatistic,
    ReplicateGroup,
    RoundTables,
    group_comparisons,
    group_statistics,
    has_metric,
    replicate_groups,
)
from experiments.sweep_folder import CellRow, SweepFolder, describe, read_sweep_folder, round_tables
from experiments.sweep_plots import SweepFigures, Warn, check_last_rounds, draw_sweep, warn_on_stderr
from fl_poison.core.results import atomic_write_bytes, write_csv

REPORT_FILE = "report.md"
GROUPS_FILE = "groups.csv"
PAIRS_FILE = "pairs.csv"
SEPARATOR = ";"
# groups.csv: GROUP_LEADING, then a column per setting (seed excluded), then GROUP_COLUMNS
GROUP_LEADING = ("group", "grids")
GROUP_COLUMNS = (
    "metric",
    "measure",
    "last_rounds",
    "n",
    "seeds",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "min",
    "max",
    "confidence",
    "cells",
)
# pairs.csv: PAIR_LEADING, then a column per setting (the shared values; empty for the one that differs), then PAIR_COLUMNS
PAIR_LEADING = ("setting", "first", "second", "first_group", "second_group", "grids")
PAIR_COLUMNS = (
    "metric",
    "measure",
    "last_rounds",
    "pairs",
    "seeds",
    "unpaired_seeds",
    "first_mean",
    "second_mean",
    "difference",
    "std",
    "ci_low",
    "ci_high",
    "confidence",
)
OPTIONAL_METRICS = (
    ("asr", "ASR"),
    ("mta", "MTA"),
    ("max_ata", "max ATA"),
    ("detection_precision", "detection precision"),
    ("detection_recall", "detection recall"),
    ("detection_fpr", "detection FPR"),
    ("rejection_recall", "rejection recall"),
    ("rejection_fpr", "rejection FPR"),
)
# Per-client decision scores: in the cells table and in groups.csv / pairs.csv, not the group tables.
DECISION_PREFIXES = ("detection", "rejection")
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


def report_metrics(cells: Sequence[CellRow]) -> list[tuple[str, str]]:
    """``(metric, title)`` of accuracy and of the attack metrics some finished cell has (the group tables' metrics).

    Detection and rejection scores stay in the cells table and in ``groups.csv`` / ``pairs.csv``.
    """
    return [
        ("accuracy", "accuracy"),
        *(
            (name, title)
            for name, title in OPTIONAL_METRICS
            if not name.startswith(DECISION_PREFIXES) and has_metric(cells, name)
        ),
    ]


def replicated(groups: Sequence[ReplicateGroup]) -> bool:
    """True when some group has two finished seeds or more (so that there are intervals)."""
    return any(len(group.finished_seeds) > 1 for group in groups)


def group_table(
    groups: Sequence[ReplicateGroup], keys: Sequence[str], tables: RoundTables, last_rounds: int = LAST_ROUNDS
) -> list[str]:
    """One row per replicate group: its settings, its seeds, then final and last-rounds statistics side by side.

    Parameters
    ----------
    groups : Sequence[ReplicateGroup]
        The groups of one grid.
    keys : Sequence[str]
        The settings that tell the groups apart (one column each).
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many last rounds a run's second value averages.
    """
    cells = [cell for group in groups for cell in group.cells]
    metrics = report_metrics(cells)
    rows = group_statistics(groups, tables, last_rounds, [name for name, _ in metrics])
    found = {(row.group.number, row.metric, row.measure): row for row in rows}
    columns = [
        (name, measure, f"{title} {'final' if measure == FINAL else f'last {last_rounds}'}")
        for name, title in metrics
        for measure in (FINAL, LAST)
        if any(row.metric == name and row.measure == measure for row in rows)
    ]
    header = [*keys, "seeds", *(title for _, _, title in columns)]
    body = []
    for group in groups:
        seeds = ", ".join(str(seed) for seed in group.finished_seeds) or "none finished"
        row: list[object] = [*(group.values.get(key, "") for key in keys), seeds]
        for name, measure, _ in columns:
            found_row = found.get((group.number, name, measure))
            row.append(format_summary(found_row.summary) if found_row else MISSING)
        body.append(row)
    return markdown_table(header, body)


def pair_table(comparisons: Sequence[GroupComparison], keys: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """One row per pair of groups and metric: the difference ``second − first`` by seed, final and last rounds.

    Rows come by the setting that differs (in ``keys`` order), then by group.

    Parameters
    ----------
    comparisons : Sequence[GroupComparison]
        The comparisons (both measures).
    keys : Sequence[str]
        The settings the grid varies (the pair's other values are named in a column).
    metrics : Sequence[str]
        The metrics shown, in order.
    """
    by_pair: dict[tuple[int, int, str], dict[str, GroupComparison]] = {}
    for comparison in comparisons:
        if comparison.metric in metrics:
            key = (comparison.first.number, comparison.second.number, comparison.metric)
            by_pair.setdefault(key, {})[comparison.measure] = comparison
    last_rounds = next((c.last_rounds for c in comparisons if c.last_rounds is not None), LAST_ROUNDS)
    header = ["setting", "first → second", "with", "metric", "final", f"last {last_rounds}"]
    rows = []
    settings = list(keys)

    def order(key: tuple[int, int, str]) -> tuple[int, int, int, int]:
        setting = next(iter(by_pair[key].values())).setting
        rank = settings.index(setting) if setting in settings else len(settings)
        return (rank, key[0], key[1], list(metrics).index(key[2]))

    ordered_keys = sorted(by_pair, key=order)
    for key in ordered_keys:
        measures = by_pair[key]
        any_comparison = next(iter(measures.values()))
        setting = any_comparison.setting
        others = [name for name in keys if name != setting]
        rows.append(
            [
                setting,
                f"{any_comparison.first.values.get(setting)} → {any_comparison.second.values.get(setting)}",
                describe(any_comparison.first.values, others) or "–",
                any_comparison.metric,
                format_difference(measures[FINAL].paired) if FINAL in measures else MISSING,
                format_difference(measures[LAST].paired) if LAST in measures else MISSING,
            ]
        )
    return markdown_table(header, rows)


def group_section(
    groups: Sequence[ReplicateGroup], keys: Sequence[str], tables: RoundTables, last_rounds: int = LAST_ROUNDS
) -> list[str]:
    """The group statistics of one grid: the groups table and, with seeds to pair, the paired differences.

    Parameters
    ----------
    groups : Sequence[ReplicateGroup]
        The grid's replicate groups.
    keys : Sequence[str]
        The grid's axes other than the seed.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many last rounds a run's second value averages.
    """
    lines = [
        "### Groups over seeds",
        "",
        "Cells that differ only in their seed form a group. Mean ± sample standard deviation "
        "[95 % t interval, n − 1 degrees of freedom] over the group's seeds (one seed: no CI); *final* is "
        f"each run's final value, *last {last_rounds}* the mean of its last {last_rounds} rounds (`--last-rounds`). "
        f"Every metric is in `{GROUPS_FILE}`.",
        "",
        *group_table(groups, keys, tables, last_rounds),
        "",
    ]
    if not replicated(groups):
        lines.extend(
            [
                "One seed per group: no standard deviation, no interval and no paired difference "
                "(`replicates = N` in the sweep file repeats every cell over N seeds).",
                "",
            ]
        )
        return lines
    cells = [cell for group in groups for cell in group.cells]
    metrics = [name for name, _ in report_metrics(cells)]
    comparisons = group_comparisons(groups, tables, last_rounds, metrics)
    if comparisons:
        lines.extend(
            [
                "### Paired differences",
                "",
                "Groups that differ in exactly one setting, compared seed by seed: the mean of "
                "*second − first* over the seeds both have, with its 95 % t interval (seeds only one "
                "group has are left out and named).",
                "",
                *pair_table(comparisons, keys, metrics),
                "",
            ]
        )
    return lines


def grid_section(
    sweep: SweepFolder,
    grid: str,
    figures: SweepFigures,
    tables: RoundTables | None = None,
    last_rounds: int = LAST_ROUNDS,
) -> list[str]:
    """The report section of one grid: axes, overrides, group statistics, results table, figures.

    Parameters
    ----------
    sweep : SweepFolder
        The sweep.
    grid : str
        The grid's name.
    figures : SweepFigures
        The figures drawn for the sweep.
    tables : RoundTables | None
        ``rounds.csv`` rows by cell id (default: read here).
    last_rounds : int
        How many last rounds a run's "last rounds" value averages.
    """
    tables = tables if tables is not None else round_tables(sweep.cells_of(grid))
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
    groups = replicate_groups(cells, sweep.setting_columns, sweep.seed_of)
    keys = [key for key in axes if key not in REPLICATE_SETTINGS]
    lines.extend(group_section(groups, keys, tables, last_rounds))
    lines.extend(["### Cells", "", *grid_table(cells, list(axes), sweep.path), ""])
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


def report_text(
    sweep: SweepFolder, figures: SweepFigures, tables: RoundTables | None = None, last_rounds: int = LAST_ROUNDS
) -> str:
    """The Markdown of the report.

    Parameters
    ----------
    sweep : SweepFolder
        The sweep.
    figures : SweepFigures
        The figures drawn for it (:func:`experiments.sweep_plots.draw_sweep`).
    tables : RoundTables | None
        ``rounds.csv`` rows by cell id (default: read here).
    last_rounds : int
        How many last rounds a run's "last rounds" value averages.
    """
    tables = tables if tables is not None else round_tables(sweep.cells)
    failed = [cell for cell in sweep.cells if not cell.ok]
    counts = f"{len(sweep.cells)} cells, {len(sweep.cells) - len(failed)} finished, {len(failed)} failed"
    lines = [
        f"# Sweep report: {sweep.path.name}",
        "",
        f"{counts} (from `sweep.csv`; figures redrawn by `fl-poison report` into `plots/`, PNG and PDF; "
        f"group statistics also in `{GROUPS_FILE}` and `{PAIRS_FILE}`).",
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
        lines.extend(grid_section(sweep, grid, figures, tables, last_rounds))
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


def setting_keys(sweep: SweepFolder) -> list[str]:
    """The setting columns of the sweep other than the seed (the columns that identify a group)."""
    return [key for key in sweep.setting_columns if key not in REPLICATE_SETTINGS]


def seeds_text(seeds: Sequence[object]) -> str:
    """Seeds joined by ``;`` (one CSV cell)."""
    return SEPARATOR.join(str(seed) for seed in seeds)


def group_rows(statistics: Sequence[GroupStatistic], keys: Sequence[str]) -> list[dict[str, object]]:
    """The rows of ``groups.csv``: one per group, metric and measure.

    Parameters
    ----------
    statistics : Sequence[GroupStatistic]
        What :func:`experiments.sweep_aggregates.group_statistics` returns.
    keys : Sequence[str]
        The setting columns (seed excluded).
    """
    rows = []
    for row in statistics:
        summary = row.summary
        rows.append(
            {
                "group": row.group.number,
                "grids": SEPARATOR.join(row.group.grids),
                **{key: row.group.values.get(key) for key in keys},
                "metric": row.metric,
                "measure": row.measure,
                "last_rounds": row.last_rounds,
                "n": summary.count,
                "seeds": seeds_text(row.seeds),
                "mean": summary.mean,
                "std": summary.std,
                "ci_low": summary.ci_low,
                "ci_high": summary.ci_high,
                "min": summary.minimum,
                "max": summary.maximum,
                "confidence": summary.confidence,
                "cells": SEPARATOR.join(
                    cell.cell_id
                    for seed, cell in zip(row.group.seeds, row.group.cells, strict=True)
                    if seed in row.seeds
                ),
            }
        )
    return rows


def pair_rows(comparisons: Sequence[GroupComparison], keys: Sequence[str]) -> list[dict[str, object]]:
    """The rows of ``pairs.csv``: one per pair of groups, metric and measure.

    Parameters
    ----------
    comparisons : Sequence[GroupComparison]
        What :func:`experiments.sweep_aggregates.group_comparisons` returns.
    keys : Sequence[str]
        The setting columns (seed excluded).
    """
    rows = []
    for comparison in comparisons:
        paired, summary = comparison.paired, comparison.paired.difference
        shared = [grid for grid in comparison.first.grids if grid in comparison.second.grids]
        rows.append(
            {
                "setting": comparison.setting,
                "first": comparison.first.values.get(comparison.setting),
                "second": comparison.second.values.get(comparison.setting),
                "first_group": comparison.first.number,
                "second_group": comparison.second.number,
                "grids": SEPARATOR.join(shared),
                **{key: comparison.first.values.get(key) for key in keys if key != comparison.setting},
                "metric": comparison.metric,
                "measure": comparison.measure,
                "last_rounds": comparison.last_rounds,
                "pairs": paired.pairs,
                "seeds": seeds_text(paired.seeds),
                "unpaired_seeds": seeds_text([*paired.first_only, *paired.second_only]),
                "first_mean": paired.first_mean,
                "second_mean": paired.second_mean,
                "difference": summary.mean,
                "std": summary.std,
                "ci_low": summary.ci_low,
                "ci_high": summary.ci_high,
                "confidence": summary.confidence,
            }
        )
    return rows


def write_group_tables(sweep: SweepFolder, tables: RoundTables, last_rounds: int = LAST_ROUNDS) -> tuple[Path, Path]:
    """Write ``groups.csv`` and ``pairs.csv`` of the whole sweep; return their paths.

    Groups are formed over all the sweep's cells (a cell two grids share is counted once);
    ``grids`` names the grids a group's cells (or both groups of a pair) belong to.

    Parameters
    ----------
    sweep : SweepFolder
        The sweep.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many last rounds a run's ``last_rounds`` value averages.
    """
    keys = setting_keys(sweep)
    groups = replicate_groups(sweep.cells, sweep.setting_columns, sweep.seed_of)
    groups_path, pairs_path = sweep.path / GROUPS_FILE, sweep.path / PAIRS_FILE
    write_csv(
        groups_path,
        group_rows(group_statistics(groups, tables, last_rounds), keys),
        [*GROUP_LEADING, *keys, *GROUP_COLUMNS],
    )
    write_csv(
        pairs_path,
        pair_rows(group_comparisons(groups, tables, last_rounds), keys),
        [*PAIR_LEADING, *keys, *PAIR_COLUMNS],
    )
    return groups_path, pairs_path


def write_report(folder: Path, warn: Warn = warn_on_stderr, last_rounds: int = LAST_ROUNDS) -> Path:
    """Redraw the figures of the sweep in ``folder``, write ``groups.csv``, ``pairs.csv`` and ``report.md``.

    Parameters
    ----------
    folder : Path
        A folder written by ``fl-poison sweep``.
    warn : Warn
        Receives one line per figure that had to be skipped.
    last_rounds : int
        How many last rounds each run's "last rounds" value averages (``--last-rounds``).

    Returns
    -------
    Path
        The report's path.

    Raises
    ------
    experiments.sweep_folder.SweepFolderError
        When ``folder`` is not a readable sweep folder.
    ConfigError
        When ``last_rounds`` is not an integer >= 1.
    """
    check_last_rounds(last_rounds)
    sweep = read_sweep_folder(folder)
    figures = draw_sweep(sweep, warn, last_rounds)
    tables = round_tables(sweep.cells)
    write_group_tables(sweep, tables, last_rounds)
    path = sweep.path / REPORT_FILE
    atomic_write_bytes(path, report_text(sweep, figures, tables, last_rounds).encode())
    return path
