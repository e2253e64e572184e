"""Figures of a sweep folder (``fl-poison plot DIR``), written as PNG and PDF into ``DIR/plots/``.

For every grid of the sweep:

* ``malicious_<grid>[_<k>]``: final accuracy (and ASR, when the cells have it) against the
  number of malicious clients, one line per strategy; each other setting the grid varies (attack,
  partitioning, ...) gets its own panel, at most :data:`PANELS_PER_FIGURE` panels a figure, and
  seeds are averaged (bars: the 95 % t interval over the seeds, where a point has two or more).
  A strategy keeps its colour in every panel, named once in a legend under the panels. Drawn
  only when the grid varies ``num-malicious``.
* ``curves_<grid>``: accuracy (and ASR) per round, one line per replicate group of the grid
  (cells that differ only in their seed): the mean over its seeds, with a shaded band from the
  lowest to the highest seed where it has two or more (a single-seed grid: every cell's own line).
  The legend sits under the panels; above :data:`MAX_LEGEND_ENTRIES` lines it is left out and
  the title says so.
* ``groups_<grid>``: each replicate group's mean of final accuracy (and ASR) and of the mean over
  the last ``last_rounds`` rounds, with the 95 % t interval over its seeds as error bars; drawn
  only when some group of the grid has two seeds or more.
* ``heatmap_<grid>``: final accuracy and ASR per strategy × attack, averaged over the grid's other
  settings (the title names them); only for grids that vary both. When no grid does,
  ``heatmap_all_cells`` does the same over every finished cell of the sweep, provided it holds at
  least two strategies and two attacks.

For every finished cell, ``cells/<cell_id>`` (accuracy, attack metrics and loss per round) and,
when its ``clients.csv`` records a clipping bound, ``norms/<cell_id>`` (update norms before and
after clipping per round: median and maximum over benign clients and over attackers).

For every distinct data split among the cells, ``labels/<dataset>_<partitioning>_...``: the
label distribution per client drawn by flwr-datasets' ``plot_label_distributions`` with the
partitioner the cells used. A dataset that cannot be loaded here skips its figure with a warning.

Failed cells and cells with missing files are left out of every figure.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from experiments.statistics import LAST_ROUNDS  # noqa: E402
from experiments.sweep_aggregates import (  # noqa: E402
    ATTACK_SETTING,
    FINAL,
    LAST,
    MALICIOUS_SETTING,
    REPLICATE_SETTINGS,
    STRATEGY_SETTING,
    Heatmap,
    ReplicateGroup,
    RoundTables,
    group_statistics,
    has_clipping_bound,
    has_metric,
    heatmap,
    malicious_curves,
    norm_summary,
    ordered,
    replicate_groups,
    round_band,
)
from experiments.sweep_folder import (  # noqa: E402
    CellRow,
    SweepFolder,
    SweepFolderError,
    describe,
    read_cell_table,
    read_sweep_folder,
    round_tables,
    varying_settings,
)
from fl_poison.apps.algorithms import experiment_config  # noqa: E402
from fl_poison.core.config import CORE_SETTINGS  # noqa: E402
from fl_poison.core.data import DataSpec  # noqa: E402
from fl_poison.core.plots import draw_annotated_heatmap, plot_training_curves, save_figure  # noqa: E402
from fl_poison.core.settings import ConfigError  # noqa: E402

CORE_DEFAULTS = {setting.key: setting.default for setting in CORE_SETTINGS}

PLOTS_FOLDER = "plots"
PLOT_SUBFOLDERS = ("cells", "norms", "labels")
FORMATS = ("png", "pdf")
PANELS_PER_FIGURE = 4
RATE_METRICS = ("accuracy", "asr")
MAX_LEGEND_ENTRIES = 24
LEGEND_FONT_SIZE = 6
LEGEND_CHARACTER_INCHES = 0.052
LEGEND_ROW_INCHES = 0.13
Warn = Callable[[str], None]


def warn_on_stderr(message: str) -> None:
    """Print ``message`` as one ``fl-poison: warning:`` line on stderr."""
    print(f"fl-poison: warning: {message}", file=sys.stderr)


@dataclass
class SweepFigures:
    """What :func:`plot_sweep` drew, for the report.

    Attributes
    ----------
    folder : Path
        The sweep folder.
    by_grid : dict[str, list[Path]]
        PNG files of each grid's figures.
    sweep_wide : list[Path]
        PNG files of figures over the whole sweep (``heatmap_all_cells``).
    labels : list[Path]
        PNG files of the label distributions.
    by_cell : dict[str, list[Path]]
        PNG files of each finished cell's figures.
    files : list[Path]
        Every file written (PNG and PDF).
    """

    folder: Path
    by_grid: dict[str, list[Path]] = field(default_factory=dict)
    sweep_wide: list[Path] = field(default_factory=list)
    labels: list[Path] = field(default_factory=list)
    by_cell: dict[str, list[Path]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add(self, written: Sequence[Path], section: list[Path]) -> None:
        """Record the files of one figure; its PNG goes into ``section``."""
        self.files.extend(written)
        section.extend(path for path in written if path.suffix == ".png")


def slug(text: str) -> str:
    """``text`` reduced to a file-name part (letters, digits, ``-``)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "x"


def round_values(rows: Sequence[dict[str, str]], column: str) -> list[float]:
    """A ``rounds.csv`` column as floats (NaN where empty)."""
    values = []
    for row in rows:
        try:
            values.append(float(row[column]) if row.get(column) not in (None, "") else math.nan)
        except ValueError:
            values.append(math.nan)
    return values


def plot_malicious_figures(
    cells: Sequence[CellRow],
    varying: Sequence[str],
    grid: str,
    out: Path,
    fixed_strategy: str = str(CORE_DEFAULTS[STRATEGY_SETTING]),
) -> list[Path]:
    """Final accuracy and ASR against ``num-malicious``, a line per strategy, a panel per other setting.

    Parameters
    ----------
    cells : Sequence[CellRow]
        The grid's cells.
    varying : Sequence[str]
        The settings the grid's cells vary (``num-malicious`` among them).
    grid : str
        The grid's name (titles and file names).
    out : Path
        The plots folder.
    fixed_strategy : str
        The legend's name for the line of cells that do not list a strategy of their own (the
        sweep's base or grid value, else the default).
    """
    panel_keys = [key for key in varying if key not in (MALICIOUS_SETTING, STRATEGY_SETTING, *REPLICATE_SETTINGS)]
    averaged = [key for key in varying if key in REPLICATE_SETTINGS]
    metrics = [metric for metric in RATE_METRICS if has_metric(cells, metric)]
    curves = {metric: malicious_curves(cells, metric, panel_keys) for metric in metrics}
    panels = list(curves["accuracy"]) if "accuracy" in curves else []
    strategies = list(
        dict.fromkeys(strategy for metric in curves.values() for lines in metric.values() for strategy in lines)
    )
    colours = dict(zip(strategies, line_colours(len(strategies)), strict=True))
    written: list[Path] = []
    chunks = [panels[start : start + PANELS_PER_FIGURE] for start in range(0, len(panels), PANELS_PER_FIGURE)]
    for number, chunk in enumerate(chunks, start=1):
        figure, axes = plt.subplots(
            len(metrics), len(chunk), figsize=(4.2 * len(chunk) + 1, 3.4 * len(metrics)), squeeze=False
        )
        for row, metric in enumerate(metrics):
            for column, panel in enumerate(chunk):
                axis = axes[row][column]
                for strategy, points in curves[metric].get(panel, {}).items():
                    xs = [point.num_malicious for point in points]
                    means = [point.mean for point in points]
                    # the 95 % t interval where a point has two seeds or more; no bar for one seed
                    errors = [
                        [point.mean - point.ci_low if point.count > 1 else 0.0 for point in points],
                        [point.ci_high - point.mean if point.count > 1 else 0.0 for point in points],
                    ]
                    axis.errorbar(
                        xs,
                        means,
                        yerr=errors if averaged else None,
                        marker="o",
                        capsize=3,
                        color=colours[strategy],
                        label=fixed_strategy if strategy is None else str(strategy),
                    )
                axis.set(xlabel="malicious clients", ylabel=f"final {metric}", ylim=(-0.02, 1.02))
                axis.xaxis.set_major_locator(MaxNLocator(integer=True))
                axis.set_title(
                    textwrap.fill(describe(dict(zip(panel_keys, panel, strict=True)), panel_keys), 45), fontsize=9
                )
                axis.grid(alpha=0.3)
                if not axis.has_data():
                    axis.text(
                        0.5,
                        0.5,
                        f"no {metric} in these cells",
                        ha="center",
                        va="center",
                        transform=axis.transAxes,
                        color="gray",
                    )
        title = f"grid {grid}: final {' and '.join(metrics)} vs malicious clients, one line per strategy"
        if averaged:
            title += f"; mean over {', '.join(averaged)} (bars: 95 % t interval over the seeds)"
        if len(chunks) > 1:
            title += f" (part {number} of {len(chunks)})"
        figure.suptitle(textwrap.fill(title, max(50, int(13 * figure.get_figwidth()))), fontsize=10)
        drawn = {
            label: handle
            for axis in figure.axes
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)
        }
        names = [fixed_strategy if strategy is None else str(strategy) for strategy in strategies]
        shown = [name for name in names if name in drawn]
        legend_height = add_bottom_legend(figure, [drawn[strategy] for strategy in shown], shown)
        figure.tight_layout(rect=(0.0, legend_height / figure.get_figheight(), 1.0, 1.0))
        name = f"malicious_{slug(grid)}" + (f"_{number}" if len(chunks) > 1 else "")
        written.extend(save_figure(figure, out / f"{name}.png", FORMATS))
    return written


def line_colours(count: int) -> list[tuple[float, float, float, float]]:
    """``count`` line colours, told apart in one figure (tab10; tab20 above 10 lines; beyond 20 they repeat).

    Parameters
    ----------
    count : int
        How many lines the figure draws.
    """
    palette = plt.get_cmap("tab20" if count > 10 else "tab10")
    return [palette(index % palette.N) for index in range(count)]


def tick_label(label: str, width: int = 48) -> str:
    """``label`` wrapped onto lines of at most ``width`` characters, whole: never cut, never split inside a setting name.

    Parameters
    ----------
    label : str
        A group's label (``key=value, key=value``).
    width : int
        The widest line, in characters (a longer single word stays on a line of its own).
    """
    return textwrap.fill(label, width, break_on_hyphens=False)


def group_label(group: ReplicateGroup, varying: Sequence[str]) -> str:
    """What tells ``group`` apart within its grid (its values of ``varying`` other than the seed).

    Parameters
    ----------
    group : ReplicateGroup
        The group.
    varying : Sequence[str]
        The settings the grid varies.
    """
    keys = [key for key in varying if key not in REPLICATE_SETTINGS]
    return describe(group.values, keys) or (group.cells[0].cell_id if len(group.cells) == 1 else "all cells")


def plot_round_overlay(
    cells: Sequence[CellRow],
    varying: Sequence[str],
    grid: str,
    out: Path,
    groups: Sequence[ReplicateGroup] | None = None,
    tables: RoundTables | None = None,
) -> list[Path]:
    """Accuracy (and ASR) per round of a grid: one line per replicate group, the seeds' range as a band.

    A group with one finished run is drawn as that run's line; with several, as the mean over
    its seeds with a shaded band from the lowest to the highest seed in each round.

    Parameters
    ----------
    cells : Sequence[CellRow]
        The grid's cells (failed ones and ones without ``rounds.csv`` are left out).
    varying : Sequence[str]
        The settings the grid varies (legend labels).
    grid : str
        The grid's name.
    out : Path
        The plots folder.
    groups : Sequence[ReplicateGroup] | None
        The grid's replicate groups (default: every cell its own group).
    tables : RoundTables | None
        ``rounds.csv`` rows by cell id (default: read here).
    """
    tables = tables if tables is not None else round_tables(cells)
    if groups is None:
        groups = [
            ReplicateGroup(number, dict(cell.values), (cell,), (None,)) for number, cell in enumerate(cells, start=1)
        ]
    drawn = [group for group in groups if any(cell.ok and tables.get(cell.cell_id) for cell in group.cells)]
    if not drawn:
        return []
    columns = {
        key for group in drawn for cell in group.cells if tables.get(cell.cell_id) for key in tables[cell.cell_id][0]
    }
    metrics = [metric for metric in RATE_METRICS if metric in columns]
    figure, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics) + 0.5, 4.2), squeeze=False)
    colours = line_colours(len(drawn))
    banded = False
    for axis, metric in zip(axes[0], metrics, strict=True):
        for index, group in enumerate(drawn):
            band = round_band(group, metric, tables)
            if not band.rounds or not any(band.count):
                continue
            colour = colours[index]
            runs = max(band.count)
            label = group_label(group, varying) + (f" ({runs} seeds)" if runs > 1 else "")
            axis.plot(band.rounds, band.mean, color=colour, linewidth=1.2, label=label)
            if runs > 1:
                axis.fill_between(band.rounds, band.low, band.high, color=colour, alpha=0.2, linewidth=0)
                banded = True
        axis.set(xlabel="round", ylabel=metric, ylim=(-0.02, 1.02), title=f"{metric} per round")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    title = f"grid {grid}: " + (
        "mean over the seeds of each group, band from the lowest to the highest seed"
        if banded
        else "every finished cell"
    )
    if len(labels) > MAX_LEGEND_ENTRIES:
        title += f" ({len(labels)} lines, too many to name; every cell has its own figure in plots/cells/)"
        handles, labels = [], []
    figure.suptitle(textwrap.fill(title, 100), fontsize=10)
    legend_height = add_bottom_legend(figure, handles, labels)
    figure.tight_layout(rect=(0.0, legend_height / figure.get_figheight(), 1.0, 1.0))
    return save_figure(figure, out / f"curves_{slug(grid)}.png", FORMATS)


def legend_columns(labels: Sequence[str], width: float) -> int:
    """How many columns of ``labels`` fit side by side across ``width`` inches of figure.

    Parameters
    ----------
    labels : Sequence[str]
        The legend's entries.
    width : float
        The figure's width in inches.
    """
    if not labels:
        return 1
    column_width = max(len(label) for label in labels) * LEGEND_CHARACTER_INCHES + 0.6
    return max(1, min(len(labels), int(width // column_width)))


def add_bottom_legend(figure: Figure, handles: Sequence[Artist], labels: Sequence[str]) -> float:
    """Put a legend of ``labels`` under the panels, growing the figure by its height; that height in inches.

    The entries are laid out in as many columns as fit across the figure, so a long legend
    never covers a panel; no entries, no legend and nothing added.

    Parameters
    ----------
    figure : Figure
        The figure (its panels already drawn).
    handles : Sequence[Artist]
        The lines the entries stand for.
    labels : Sequence[str]
        The entries' text.
    """
    if not labels:
        return 0.0
    columns = legend_columns(labels, figure.get_figwidth())
    height = math.ceil(len(labels) / columns) * LEGEND_ROW_INCHES + 0.15
    figure.set_figheight(figure.get_figheight() + height)
    figure.legend(handles, labels, fontsize=LEGEND_FONT_SIZE, loc="lower center", ncols=columns, frameon=False)
    return height


def plot_group_intervals(
    groups: Sequence[ReplicateGroup],
    varying: Sequence[str],
    grid: str,
    out: Path,
    tables: RoundTables,
    last_rounds: int = LAST_ROUNDS,
) -> list[Path]:
    """Each group's mean of final accuracy (and ASR) and of its last rounds, with 95 % t intervals as bars.

    One panel per metric, one row per group; a circle for the final value, a square for the mean
    of the last ``last_rounds`` rounds. A group with one seed gets its point without a bar.

    Parameters
    ----------
    groups : Sequence[ReplicateGroup]
        The grid's replicate groups.
    varying : Sequence[str]
        The settings the grid varies (row labels).
    grid : str
        The grid's name.
    out : Path
        The plots folder.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many last rounds a run's second value averages.
    """
    summaries = group_statistics(groups, tables, last_rounds, RATE_METRICS)
    metrics = [metric for metric in RATE_METRICS if any(row.metric == metric for row in summaries)]
    if not metrics:
        return []
    labels = [group_label(group, varying) for group in groups]
    figure, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(5.0 * len(metrics) + 3.5, max(3.2, 0.45 * len(groups) + 2.2)),
        squeeze=False,
        sharey=True,
    )
    styles = {FINAL: ("o", -0.15, "final"), LAST: ("s", 0.15, f"mean of the last {last_rounds} rounds")}
    for axis, metric in zip(axes[0], metrics, strict=True):
        for measure, (marker, offset, name) in styles.items():
            rows = {row.group.number: row for row in summaries if row.metric == metric and row.measure == measure}
            ys, means, low, high = [], [], [], []
            for position, group in enumerate(groups):
                row = rows.get(group.number)
                if row is None:
                    continue
                summary = row.summary
                ys.append(position + offset)
                means.append(summary.mean)
                low.append(summary.mean - summary.ci_low if summary.has_interval else 0.0)
                high.append(summary.ci_high - summary.mean if summary.has_interval else 0.0)
            if ys:
                axis.errorbar(means, ys, xerr=[low, high], fmt=marker, capsize=3, label=name)
        axis.set(xlabel=metric, xlim=(-0.02, 1.02), title=metric)
        axis.set_yticks(range(len(groups)), [tick_label(label) for label in labels], fontsize=7)
        axis.invert_yaxis()
        axis.grid(alpha=0.3, axis="x")
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, fontsize=7, loc="lower center", ncols=2)
    seeds = sorted({len(group.finished_seeds) for group in groups})
    figure.suptitle(
        textwrap.fill(
            f"grid {grid}: mean over the seeds of each group ({'/'.join(map(str, seeds))} seeds), "
            "bars: 95 % t interval (none for one seed; cut at the axis)",
            100,
        ),
        fontsize=10,
    )
    figure.tight_layout(rect=(0.0, 0.08, 1.0, 1.0))
    return save_figure(figure, out / f"groups_{slug(grid)}.png", FORMATS)


def draw_heatmap(axis: plt.Axes, table: Heatmap, metric: str) -> None:
    """Draw ``table`` on ``axis`` with each value written in its square ("–" where there is none).

    Parameters
    ----------
    axis : plt.Axes
        Where to draw.
    table : Heatmap
        The means (see :func:`experiments.sweep_aggregates.heatmap`).
    metric : str
        The metric's name (colour map and title).
    """
    accuracy = metric == "accuracy"
    draw_annotated_heatmap(
        axis,
        table.values,
        table.values,
        [str(label) for label in table.row_labels],
        [str(label) for label in table.column_labels],
        "viridis" if accuracy else "Reds",
        (0.0, 1.0),
        dark_above=None if accuracy else 0.5,
        dark_below=0.5 if accuracy else None,
    )
    axis.set(xlabel=ATTACK_SETTING, ylabel=STRATEGY_SETTING, title=f"final {metric}")


def plot_heatmaps(cells: Sequence[CellRow], averaged: Sequence[str], scope: str, name: str, out: Path) -> list[Path]:
    """Strategy × attack heatmaps of final accuracy and ASR (when the cells have it).

    Parameters
    ----------
    cells : Sequence[CellRow]
        The cells to average over (finished ones only enter the means).
    averaged : Sequence[str]
        The settings the means run over (named in the title).
    scope : str
        What the cells are (``grid NAME`` or ``all finished cells``), for the title.
    name : str
        File name without suffix.
    out : Path
        The plots folder.
    """
    metrics = [metric for metric in RATE_METRICS if has_metric(cells, metric)]
    if not metrics:
        return []
    tables = {metric: heatmap(cells, metric) for metric in metrics}
    shape = tables[metrics[0]].values.shape
    figure, axes = plt.subplots(
        1, len(metrics), figsize=(1.1 * shape[1] * len(metrics) + 4 * len(metrics), 0.5 * shape[0] + 3), squeeze=False
    )
    for axis, metric in zip(axes[0], metrics, strict=True):
        draw_heatmap(axis, tables[metric], metric)
    over = f"mean over {', '.join(averaged)}" if averaged else "one cell each"
    figure.suptitle(textwrap.fill(f"{scope}: strategy × attack, {over}", 100), fontsize=10)
    figure.tight_layout()
    return save_figure(figure, out / f"{name}.png", FORMATS)


def plot_cell_norms(cell: CellRow, client_rows: Sequence[dict[str, str]], title: str, path: Path) -> list[Path]:
    """Update norms before and after clipping per round: benign (blue) vs malicious (red), and the bound.

    Parameters
    ----------
    cell : CellRow
        The cell (its id goes into the title).
    client_rows : Sequence[dict[str, str]]
        Its ``clients.csv`` rows.
    title : str
        What the cell is within its grid.
    path : Path
        Target file (``.png``; a ``.pdf`` goes next to it).
    """
    summary = norm_summary(client_rows)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    styles = {"median": "-", "max": ":"}
    colours = {"benign": "tab:blue", "malicious": "tab:red"}
    for axis, stage in zip(axes, ("before", "after"), strict=True):
        for (group, curve_stage, statistic), values in summary.curves.items():
            if curve_stage == stage and any(math.isfinite(value) for value in values):
                axis.plot(
                    summary.rounds,
                    values,
                    styles[statistic],
                    color=colours[group],
                    marker="o",
                    markersize=3,
                    label=f"{group} {statistic}",
                )
        axis.plot(summary.rounds, summary.bound, "--", color="black", linewidth=1, label="bound")
        axis.set(xlabel="round", ylabel="update L2 norm", title=f"{stage} clipping")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    positive = [value for values in summary.curves.values() for value in values if math.isfinite(value) and value > 0]
    if positive and max(positive) > 20 * min(positive):
        axes[0].set_yscale("log")  # a scaled attacker would otherwise flatten the honest curves
    figure.suptitle(textwrap.fill(f"cell {cell.cell_id}: update norms per round; {title}", 110), fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, FORMATS)


def data_spec_of(settings: dict[str, object]) -> DataSpec:
    """The data split a cell used, with the settings its partitioning ignores set to their defaults.

    Parameters
    ----------
    settings : dict[str, object]
        The cell's resolved settings (kebab-case keys).

    Raises
    ------
    ConfigError
        When the settings are not valid for this version of fl_poison.
    """
    spec = DataSpec.from_config(experiment_config(settings))
    if spec.partitioning != "dirichlet":
        spec = replace(
            spec,
            dirichlet_alpha=float(CORE_DEFAULTS["dirichlet-alpha"]),
            min_partition_size=int(CORE_DEFAULTS["min-partition-size"]),
        )
    if spec.partitioning != "pathological":
        spec = replace(spec, classes_per_client=int(CORE_DEFAULTS["classes-per-client"]))
    if spec.partitioning != "random-subsets":
        spec = replace(spec, samples_per_client=int(CORE_DEFAULTS["samples-per-client"]))
    return spec


def label_figure_name(spec: DataSpec) -> str:
    """File name (without suffix) of the label-distribution figure of ``spec``."""
    dataset = Path(spec.dataset).name if Path(spec.dataset).is_absolute() else spec.dataset
    parts = [slug(dataset), spec.partitioning, f"{spec.num_partitions}clients"]
    if spec.partitioning == "dirichlet":
        parts.append("alpha" + slug(f"{spec.dirichlet_alpha:g}".replace(".", "p")))
    if spec.partitioning == "pathological":
        parts.append(f"{spec.classes_per_client}classes")
    if spec.partitioning == "random-subsets":
        parts.append(f"{spec.samples_per_client}samples")
    parts.append(f"seed{spec.seed}")
    return "_".join(parts)


def plot_label_distribution(spec: DataSpec, path: Path) -> list[Path]:
    """Label counts per client of the split ``spec`` describes, drawn by flwr-datasets.

    The partitioner is the one the clients read their partitions from (:func:`fl_poison.core.data.partitioner_of`).

    Parameters
    ----------
    spec : DataSpec
        The data split.
    path : Path
        Target file (``.png``; a ``.pdf`` goes next to it).
    """
    import datasets
    from flwr_datasets.visualization import plot_label_distributions

    from fl_poison.core.data import partitioner_of, source_of
    from fl_poison.core.partitioning import assign_training_split

    source = source_of(spec)
    partitioner = partitioner_of(spec)
    assign_training_split(partitioner, source.train, spec.seed)
    named = isinstance(source.train.features[source.label_column], datasets.ClassLabel)
    details = {
        "dirichlet": f", alpha {spec.dirichlet_alpha:g}",
        "pathological": f", {spec.classes_per_client} classes each",
        "random-subsets": f", {spec.samples_per_client} samples each",
    }
    title = f"{spec.dataset}: {spec.partitioning}{details.get(spec.partitioning, '')}, {spec.num_partitions} clients, seed {spec.seed}"
    width = max(7.0, 0.35 * spec.num_partitions + 4)
    figure, _, _ = plot_label_distributions(
        partitioner,
        label_name=source.label_column,
        legend=True,
        verbose_labels=named,
        title=textwrap.fill(title, 80),
        figsize=(width, 4.2),
        legend_kwargs={"loc": "center right", "bbox_to_anchor": (1.0, 0.5), "fontsize": 7},
    )
    figure.tight_layout(rect=(0.0, 0.0, 1.0 - 1.3 / width, 1.0))
    return save_figure(figure, path, FORMATS)


def plot_label_distributions_of(sweep: SweepFolder, out: Path, figures: SweepFigures, warn: Warn) -> None:
    """One label-distribution figure per distinct data split among the sweep's cells.

    Parameters
    ----------
    sweep : SweepFolder
        The sweep.
    out : Path
        The plots folder.
    figures : SweepFigures
        Receives the files.
    warn : Warn
        Receives one line per figure that cannot be drawn.
    """
    specs: list[DataSpec] = []
    for cell in sweep.cells:
        try:
            spec = data_spec_of(sweep.cell_settings(cell))
        except ConfigError as error:
            warn(f"cell {cell.cell_id}: no label distribution ({error})")
            continue
        if spec not in specs:
            specs.append(spec)
    for spec in specs:
        try:
            written = plot_label_distribution(spec, out / "labels" / f"{label_figure_name(spec)}.png")
        except Exception as error:  # noqa: BLE001 - any loading failure (offline hub, bad folder) only skips this figure
            plt.close("all")
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            warn(f"label distribution of {spec.dataset} ({spec.partitioning}) skipped: {first_line}")
            continue
        figures.add(written, figures.labels)


def check_last_rounds(last_rounds: object) -> int:
    """``--last-rounds`` as an int, or a one-line error naming it.

    Parameters
    ----------
    last_rounds : object
        The value given.

    Raises
    ------
    ConfigError
        When it is not an integer >= 1.
    """
    if isinstance(last_rounds, bool) or not isinstance(last_rounds, int) or last_rounds < 1:
        raise ConfigError.bad_value("--last-rounds", last_rounds, "an integer >= 1 (rounds averaged per run)")
    return last_rounds


def plot_sweep(folder: Path, warn: Warn = warn_on_stderr, last_rounds: int = LAST_ROUNDS) -> SweepFigures:
    """Draw every figure of the sweep in ``folder`` into ``folder/plots`` (PNG and PDF).

    Parameters
    ----------
    folder : Path
        A folder written by ``fl-poison sweep``.
    warn : Warn
        Receives one line per figure that had to be skipped.
    last_rounds : int
        How many last rounds each run's "last rounds" value averages (``--last-rounds``).

    Raises
    ------
    experiments.sweep_folder.SweepFolderError
        When ``folder`` is not a readable sweep folder.
    ConfigError
        When ``last_rounds`` is not an integer >= 1.
    """
    check_last_rounds(last_rounds)
    return draw_sweep(read_sweep_folder(folder), warn, last_rounds)


def check_plot_folders(folder: Path, out: Path) -> None:
    """Refuse to draw when ``out`` (``DIR/plots``) or one of its sub-folders is a link or a file.

    Figures are written only inside the sweep folder: a link (made by hand, or by anyone who
    could write the folder) would send them elsewhere.

    Parameters
    ----------
    folder : Path
        The sweep folder.
    out : Path
        Its plots folder.

    Raises
    ------
    SweepFolderError
        Naming the link or file.
    """
    for path in (out, *(out / name for name in PLOT_SUBFOLDERS)):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise SweepFolderError(folder, f"{path} is a link or a file, not a folder of figures")


def draw_sweep(sweep: SweepFolder, warn: Warn = warn_on_stderr, last_rounds: int = LAST_ROUNDS) -> SweepFigures:
    """Draw every figure of ``sweep`` into its ``plots`` folder (see the module docstring).

    Parameters
    ----------
    sweep : SweepFolder
        The sweep, read.
    warn : Warn
        Receives one line per figure that had to be skipped.
    last_rounds : int
        How many last rounds each run's "last rounds" value averages.
    """
    check_last_rounds(last_rounds)
    out = sweep.path / PLOTS_FOLDER
    check_plot_folders(sweep.path, out)
    figures = SweepFigures(folder=sweep.path)
    tables = round_tables(sweep.cells)
    varying_by_grid = {
        grid: varying_settings(sweep.cells_of(grid), sweep.setting_columns) for grid in sweep.definition.grids
    }
    heatmap_drawn = False
    for grid, varying in varying_by_grid.items():
        cells = sweep.cells_of(grid)
        section = figures.by_grid.setdefault(grid, [])
        if MALICIOUS_SETTING in varying:
            fixed = sweep.definition.overrides(grid).get(STRATEGY_SETTING, sweep.definition.base.get(STRATEGY_SETTING))
            figures.add(
                plot_malicious_figures(cells, varying, grid, out, str(fixed or CORE_DEFAULTS[STRATEGY_SETTING])),
                section,
            )
        if STRATEGY_SETTING in varying and ATTACK_SETTING in varying:
            averaged = [key for key in varying if key not in (STRATEGY_SETTING, ATTACK_SETTING)]
            figures.add(plot_heatmaps(cells, averaged, f"grid {grid}", f"heatmap_{slug(grid)}", out), section)
            heatmap_drawn = True
        groups = replicate_groups(cells, sweep.setting_columns, sweep.seed_of)
        if any(len(group.finished_seeds) > 1 for group in groups):
            figures.add(plot_group_intervals(groups, varying, grid, out, tables, last_rounds), section)
        figures.add(plot_round_overlay(cells, varying, grid, out, groups, tables), section)
    finished = [cell for cell in sweep.cells if cell.ok]
    strategies = ordered([cell.values.get(STRATEGY_SETTING) for cell in finished])
    attacks = ordered([cell.values.get(ATTACK_SETTING) for cell in finished])
    if not heatmap_drawn and len(strategies) >= 2 and len(attacks) >= 2:
        averaged = [
            key
            for key in varying_settings(finished, sweep.setting_columns)
            if key not in (STRATEGY_SETTING, ATTACK_SETTING)
        ]
        figures.add(
            plot_heatmaps(finished, averaged, "all finished cells", "heatmap_all_cells", out), figures.sweep_wide
        )
    for cell in finished:
        title = f"grid {', '.join(cell.grids)}: {describe(sweep.cell_settings(cell), sweep.grid_settings(cell))}"
        section = figures.by_cell.setdefault(cell.cell_id, [])
        rounds = tables.get(cell.cell_id, [])
        if rounds:
            figures.add(
                plot_training_curves(
                    rounds, out / "cells" / f"{cell.cell_id}.png", f"cell {cell.cell_id}, {title}", FORMATS
                ),
                section,
            )
        clients = read_cell_table(cell, "clients.csv")
        if has_clipping_bound(clients):
            figures.add(plot_cell_norms(cell, clients, title, out / "norms" / f"{cell.cell_id}.png"), section)
    plot_label_distributions_of(sweep, out, figures, warn)
    return figures
