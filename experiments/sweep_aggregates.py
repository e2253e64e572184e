"""The numbers each sweep figure and table shows, computed from the cells alone (pure functions, no drawing).

Only cells whose run finished (``status`` ``ok``) and whose metric is a finite number enter a
mean; failed cells never do. Keeping these apart from the drawing lets tests check the plotted
values against numbers worked out by hand.

**Replicate groups.** Cells whose settings differ only in ``seed`` are the replicates of one
:class:`ReplicateGroup`. Each metric of a group is summarised over its seeds
(:func:`group_statistics`: mean, sample standard deviation, 95 % t interval) twice: for the
``final`` value (the run's summary) and for the mean of the ``last_rounds`` last rounds of each
run (``rounds.csv`` without round 0). Two groups that differ in exactly one setting are compared
seed by seed (:func:`group_comparisons`: ``second − first``, first being the value that comes
first in :func:`ordered` order, e.g. 0 attackers, or the strategy the grid lists first).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from experiments.statistics import (
    CONFIDENCE,
    LAST_ROUNDS,
    PairedDifference,
    Summary,
    last_rounds_mean,
    paired_difference,
    summarize,
)
from experiments.sweep import RESULT_COLUMNS
from experiments.sweep_folder import SEED_SETTING, CellRow, csv_text

MALICIOUS_SETTING = "num-malicious"
STRATEGY_SETTING = "strategy"
ATTACK_SETTING = "attack"
REPLICATE_SETTINGS = (SEED_SETTING,)
FINAL = "final"
LAST = "last_rounds"
MEASURES = (FINAL, LAST)
# every final metric of a run that a group statistic is worth having for (not the wall time)
STATISTIC_METRICS = tuple(name for name in RESULT_COLUMNS if name != "wall_seconds")
RoundTables = Mapping[str, Sequence[Mapping[str, str]]]
SeedOf = Callable[[CellRow], object]


@dataclass(frozen=True)
class CurvePoint:
    """One point of a metric-vs-attackers line.

    Attributes
    ----------
    num_malicious : int
        The x value.
    mean, low, high : float
        Mean, minimum and maximum of the metric over the cells at this point.
    count : int
        How many cells the mean is over.
    ci_low, ci_high : float
        The 95 % t interval of the mean over those cells (NaN for one cell).
    """

    num_malicious: int
    mean: float
    low: float
    high: float
    count: int
    ci_low: float = math.nan
    ci_high: float = math.nan


@dataclass(frozen=True)
class Heatmap:
    """A table of mean final metric values.

    Attributes
    ----------
    row_labels, column_labels : list[object]
        The values of the row setting (e.g. strategies) and of the column setting (e.g. attacks).
    values : np.ndarray
        Mean metric per (row, column); NaN where no finished cell has the metric.
    counts : np.ndarray
        Number of cells behind each mean.
    """

    row_labels: list[object]
    column_labels: list[object]
    values: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class NormSummary:
    """Update norms per round, summarised for benign clients and attackers.

    Attributes
    ----------
    rounds : list[int]
        The rounds, ascending.
    bound : list[float]
        Median clipping bound of each round (NaN when none).
    curves : dict[tuple[str, str, str], list[float]]
        ``(group, stage, statistic)`` -> one value per round, with group ``benign`` or
        ``malicious``, stage ``before`` or ``after`` (the defense) and statistic ``median`` or
        ``max``; NaN in rounds where the group has no finite norm.
    """

    rounds: list[int]
    bound: list[float]
    curves: dict[tuple[str, str, str], list[float]]


def ordered(values: Sequence[object]) -> list[object]:
    """Distinct ``values``: numbers ascending, then the rest in order of first appearance."""
    distinct: list[object] = []
    for value in values:
        if all(csv_text(value) != csv_text(seen) for seen in distinct):
            distinct.append(value)
    numbers = sorted((v for v in distinct if isinstance(v, (int, float)) and not isinstance(v, bool)), key=float)
    return [*numbers, *(v for v in distinct if v not in numbers)]


def finite_values(cells: Sequence[CellRow], metric: str) -> list[float]:
    """``metric`` of the finished cells that have it as a finite number."""
    return [cell.metric(metric) for cell in cells if cell.ok and math.isfinite(cell.metric(metric))]


def has_metric(cells: Sequence[CellRow], metric: str) -> bool:
    """True when some finished cell has a finite ``metric``."""
    return bool(finite_values(cells, metric))


def group_cells(cells: Sequence[CellRow], keys: Sequence[str]) -> dict[tuple[object, ...], list[CellRow]]:
    """``cells`` grouped by their values of ``keys``, groups in the order of :func:`ordered` per key."""
    groups: dict[tuple[object, ...], list[CellRow]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell.values.get(key) for key in keys), []).append(cell)
    orders = [ordered([cell.values.get(key) for cell in cells]) for key in keys]
    return dict(
        sorted(
            groups.items(), key=lambda item: [order.index(value) for order, value in zip(orders, item[0], strict=True)]
        )
    )


def malicious_curves(
    cells: Sequence[CellRow], metric: str, panel_keys: Sequence[str]
) -> dict[tuple[object, ...], dict[object, list[CurvePoint]]]:
    """Final ``metric`` against the number of malicious clients, one line per strategy, per panel.

    Parameters
    ----------
    cells : Sequence[CellRow]
        The cells of one grid (failed cells and cells without the metric are left out).
    metric : str
        A result column, e.g. ``accuracy`` or ``asr``.
    panel_keys : Sequence[str]
        Settings that get one panel per combination of values (e.g. ``attack``); every other
        setting that differs between cells at the same point is averaged over.

    Returns
    -------
    dict
        panel values -> strategy -> points ordered by ``num-malicious``; strategies and panels
        without a single point are absent. Each point holds the mean, the range and the 95 % t
        interval over its cells (the seeds, when ``panel_keys`` are all the other varying settings).
    """
    usable = [cell for cell in cells if cell.ok and math.isfinite(cell.metric(metric))]
    curves: dict[tuple[object, ...], dict[object, list[CurvePoint]]] = {}
    for panel, panel_cells in group_cells(usable, panel_keys).items():
        lines: dict[object, list[CurvePoint]] = {}
        for (strategy,), strategy_cells in group_cells(panel_cells, [STRATEGY_SETTING]).items():
            points = []
            for (attackers,), point_cells in group_cells(strategy_cells, [MALICIOUS_SETTING]).items():
                values = [cell.metric(metric) for cell in point_cells]
                summary = summarize(values)
                points.append(
                    CurvePoint(
                        int(cast("int | str", attackers)),
                        statistics.fmean(values),
                        min(values),
                        max(values),
                        len(values),
                        summary.ci_low,
                        summary.ci_high,
                    )
                )
            lines[strategy] = points
        curves[panel] = lines
    return curves


def heatmap(
    cells: Sequence[CellRow], metric: str, row_key: str = STRATEGY_SETTING, column_key: str = ATTACK_SETTING
) -> Heatmap:
    """Mean final ``metric`` for every (``row_key``, ``column_key``) pair, over the finished cells.

    Parameters
    ----------
    cells : Sequence[CellRow]
        The cells to average (failed cells are left out; cells without the metric too).
    metric : str
        A result column.
    row_key, column_key : str
        The settings on the two axes (strategy × attack by default).
    """
    finished = [cell for cell in cells if cell.ok]
    rows = ordered([cell.values.get(row_key) for cell in finished])
    columns = ordered([cell.values.get(column_key) for cell in finished])
    values = np.full((len(rows), len(columns)), math.nan)
    counts = np.zeros((len(rows), len(columns)), dtype=int)
    for (row, column), group in group_cells(finished, [row_key, column_key]).items():
        finite = finite_values(group, metric)
        if finite:
            values[rows.index(row), columns.index(column)] = statistics.fmean(finite)
            counts[rows.index(row), columns.index(column)] = len(finite)
    return Heatmap(rows, columns, values, counts)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _statistic(values: Sequence[float], name: str) -> float:
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return math.nan
    return statistics.median(finite) if name == "median" else max(finite)


def has_clipping_bound(client_rows: Sequence[Mapping[str, str]]) -> bool:
    """True when ``clients.csv`` rows record a clipping bound (a norm-clipping strategy ran)."""
    return any(math.isfinite(_number(row.get("bound"))) for row in client_rows)


def norm_summary(client_rows: Sequence[Mapping[str, str]]) -> NormSummary:
    """Median and maximum update norm before and after the defense, per round, benign vs malicious.

    Parameters
    ----------
    client_rows : Sequence[Mapping[str, str]]
        Rows of a cell's ``clients.csv``; rows with status ``failed`` are left out, and a client
        is malicious when its ``malicious`` column is ``1``.
    """
    rows = [row for row in client_rows if row.get("status") != "failed" and row.get("round") not in (None, "")]
    rounds = sorted({int(row["round"]) for row in rows})
    curves: dict[tuple[str, str, str], list[float]] = {}
    for group, flag in (("benign", False), ("malicious", True)):
        members = [row for row in rows if (_number(row.get("malicious")) == 1) == flag]
        for stage in ("before", "after"):
            for name in ("median", "max"):
                curves[(group, stage, name)] = [
                    _statistic([_number(row.get(f"norm_{stage}")) for row in members if int(row["round"]) == r], name)
                    for r in rounds
                ]
    bound = [
        _statistic([_number(row.get("bound")) for row in rows if int(row["round"]) == r], "median") for r in rounds
    ]
    return NormSummary(rounds, bound, curves)


@dataclass(frozen=True)
class ReplicateGroup:
    """Cells whose settings differ only in their seed.

    Attributes
    ----------
    number : int
        The group's position among the groups it was built with (1, 2, ...).
    values : dict[str, object]
        The group's value of every setting column except ``seed``.
    cells : tuple[CellRow, ...]
        Its cells in table order, failed ones included.
    seeds : tuple[object, ...]
        The seed of each cell, in the same order.
    """

    number: int
    values: dict[str, object]
    cells: tuple[CellRow, ...]
    seeds: tuple[object, ...]

    @property
    def grids(self) -> tuple[str, ...]:
        """The grids any of its cells belongs to, first appearance first."""
        return tuple(dict.fromkeys(grid for cell in self.cells for grid in cell.grids))

    @property
    def finished_seeds(self) -> tuple[object, ...]:
        """The seeds of its finished cells."""
        return tuple(seed for seed, cell in zip(self.seeds, self.cells, strict=True) if cell.ok)


def replicate_groups(cells: Sequence[CellRow], columns: Sequence[str], seed_of: SeedOf) -> list[ReplicateGroup]:
    """``cells`` grouped by their values of ``columns`` other than ``seed``, in order of first appearance.

    Parameters
    ----------
    cells : Sequence[CellRow]
        The cells (in table order).
    columns : Sequence[str]
        The sweep's setting columns.
    seed_of : SeedOf
        The seed of a cell (:meth:`experiments.sweep_folder.SweepFolder.seed_of`).
    """
    keys = [key for key in columns if key not in REPLICATE_SETTINGS]
    members: dict[tuple[str, ...], list[CellRow]] = {}
    for cell in cells:
        members.setdefault(tuple(csv_text(cell.values.get(key)) for key in keys), []).append(cell)
    return [
        ReplicateGroup(
            number=number,
            values={key: group[0].values.get(key) for key in keys},
            cells=tuple(group),
            seeds=tuple(seed_of(cell) for cell in group),
        )
        for number, group in enumerate(members.values(), start=1)
    ]


def per_round(rows: Sequence[Mapping[str, str]], metric: str, first_round: int = 1) -> list[tuple[int, float]]:
    """``(round, value)`` of ``metric`` for the rounds from ``first_round`` on (NaN where empty or absent).

    Parameters
    ----------
    rows : Sequence[Mapping[str, str]]
        A cell's ``rounds.csv`` rows.
    metric : str
        The column.
    first_round : int
        The first round kept (1 leaves out round 0, the initial model).
    """
    series = [(int(row["round"]), _number(row.get(metric))) for row in rows if row.get("round") not in (None, "")]
    return sorted((number, value) for number, value in series if number >= first_round)


def cell_value(cell: CellRow, metric: str, measure: str, tables: RoundTables, last_rounds: int = LAST_ROUNDS) -> float:
    """One run's value of ``metric``: its final value, or the mean of its last ``last_rounds`` rounds.

    Parameters
    ----------
    cell : CellRow
        A cell (a failed one gives NaN).
    metric : str
        A result column (and ``rounds.csv`` column, for ``last_rounds``).
    measure : str
        ``final`` or ``last_rounds``.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many of the last rounds to average.
    """
    if not cell.ok:
        return math.nan
    if measure == FINAL:
        return cell.metric(metric)
    return last_rounds_mean([value for _, value in per_round(tables.get(cell.cell_id, []), metric)], last_rounds)


def seed_values(
    group: ReplicateGroup, metric: str, measure: str, tables: RoundTables, last_rounds: int = LAST_ROUNDS
) -> dict[object, float]:
    """Seed -> value of ``metric`` for the group's finished cells that have it as a finite number.

    Parameters
    ----------
    group : ReplicateGroup
        The group.
    metric, measure, tables, last_rounds
        As for :func:`cell_value`.
    """
    values = {
        seed: cell_value(cell, metric, measure, tables, last_rounds)
        for seed, cell in zip(group.seeds, group.cells, strict=True)
    }
    return {seed: value for seed, value in values.items() if math.isfinite(value)}


@dataclass(frozen=True)
class GroupStatistic:
    """One metric of one group, summarised over its seeds (a row of ``groups.csv``).

    Attributes
    ----------
    group : ReplicateGroup
        The group.
    metric : str
        The metric.
    measure : str
        ``final`` or ``last_rounds``.
    last_rounds : int | None
        How many last rounds each run's value averages (None for ``final``).
    seeds : tuple[object, ...]
        The seeds whose runs have the metric.
    summary : Summary
        Mean, standard deviation and t interval over those seeds.
    """

    group: ReplicateGroup
    metric: str
    measure: str
    last_rounds: int | None
    seeds: tuple[object, ...]
    summary: Summary


def group_statistics(
    groups: Sequence[ReplicateGroup],
    tables: RoundTables,
    last_rounds: int = LAST_ROUNDS,
    metrics: Sequence[str] = STATISTIC_METRICS,
    confidence: float = CONFIDENCE,
) -> list[GroupStatistic]:
    """Every metric of every group over its seeds, final and over the last rounds; absent metrics left out.

    Parameters
    ----------
    groups : Sequence[ReplicateGroup]
        The groups.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many last rounds a run's ``last_rounds`` value averages.
    metrics : Sequence[str]
        The metrics (default: every result column but the wall time).
    confidence : float
        Coverage of the intervals.
    """
    rows = []
    for group in groups:
        for metric in metrics:
            for measure in MEASURES:
                values = seed_values(group, metric, measure, tables, last_rounds)
                if values:
                    rows.append(
                        GroupStatistic(
                            group,
                            metric,
                            measure,
                            last_rounds if measure == LAST else None,
                            tuple(values),
                            summarize(values.values(), confidence),
                        )
                    )
    return rows


@dataclass(frozen=True)
class GroupComparison:
    """Two groups that differ in exactly one setting, compared seed by seed on one metric.

    Attributes
    ----------
    setting : str
        The setting they differ in.
    first, second : ReplicateGroup
        The groups; the difference is ``second − first``.
    metric : str
        The metric.
    measure : str
        ``final`` or ``last_rounds``.
    last_rounds : int | None
        How many last rounds each run's value averages (None for ``final``).
    paired : PairedDifference
        The per-seed differences and their interval.
    """

    setting: str
    first: ReplicateGroup
    second: ReplicateGroup
    metric: str
    measure: str
    last_rounds: int | None
    paired: PairedDifference


def comparable_pairs(groups: Sequence[ReplicateGroup]) -> list[tuple[str, ReplicateGroup, ReplicateGroup]]:
    """Every pair of groups whose settings differ in exactly one setting: ``(setting, first, second)``.

    ``first`` is the group whose value of that setting comes first in :func:`ordered` order
    (numbers ascending, other values in order of first appearance); pairs come in group order.

    Parameters
    ----------
    groups : Sequence[ReplicateGroup]
        The groups (each with the same setting keys).
    """
    keys = list(dict.fromkeys(key for group in groups for key in group.values))
    positions = {
        key: {csv_text(value): rank for rank, value in enumerate(ordered([group.values.get(key) for group in groups]))}
        for key in keys
    }
    pairs = []
    for index, one in enumerate(groups):
        for other in groups[index + 1 :]:
            differing = [key for key in keys if csv_text(one.values.get(key)) != csv_text(other.values.get(key))]
            if len(differing) != 1:
                continue
            key = differing[0]
            position = positions[key]
            if position[csv_text(other.values.get(key))] < position[csv_text(one.values.get(key))]:
                pairs.append((key, other, one))
            else:
                pairs.append((key, one, other))
    return pairs


def group_comparisons(
    groups: Sequence[ReplicateGroup],
    tables: RoundTables,
    last_rounds: int = LAST_ROUNDS,
    metrics: Sequence[str] = STATISTIC_METRICS,
    confidence: float = CONFIDENCE,
) -> list[GroupComparison]:
    """The paired difference of every metric for every pair of :func:`comparable_pairs`, final and last rounds.

    A metric neither group has is left out; a pair without a shared seed is kept (0 pairs).

    Parameters
    ----------
    groups : Sequence[ReplicateGroup]
        The groups.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    last_rounds : int
        How many last rounds a run's value averages.
    metrics : Sequence[str]
        The metrics.
    confidence : float
        Coverage of the intervals.
    """
    comparisons = []
    for setting, first, second in comparable_pairs(groups):
        for metric in metrics:
            for measure in MEASURES:
                one = seed_values(first, metric, measure, tables, last_rounds)
                other = seed_values(second, metric, measure, tables, last_rounds)
                if one or other:
                    comparisons.append(
                        GroupComparison(
                            setting,
                            first,
                            second,
                            metric,
                            measure,
                            last_rounds if measure == LAST else None,
                            paired_difference(one, other, confidence),
                        )
                    )
    return comparisons


@dataclass(frozen=True)
class RoundBand:
    """A metric per round over the seeds of one group: the mean line and its min–max band.

    Attributes
    ----------
    rounds : list[int]
        Every round any of the group's runs has, ascending.
    mean, low, high : list[float]
        Mean, minimum and maximum over the runs that have a finite value in that round (NaN where none).
    count : list[int]
        How many runs each round's numbers are over.
    """

    rounds: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    count: list[int]


def round_band(group: ReplicateGroup, metric: str, tables: RoundTables) -> RoundBand:
    """``metric`` per round (round 0 included) over the group's finished runs.

    Parameters
    ----------
    group : ReplicateGroup
        The group.
    metric : str
        A ``rounds.csv`` column.
    tables : RoundTables
        ``rounds.csv`` rows by cell id.
    """
    by_round: dict[int, list[float]] = {}
    for cell in group.cells:
        if cell.ok:
            for number, value in per_round(tables.get(cell.cell_id, []), metric, first_round=0):
                by_round.setdefault(number, [])
                if math.isfinite(value):
                    by_round[number].append(value)
    rounds = sorted(by_round)
    band = RoundBand(rounds, [], [], [], [])
    for number in rounds:
        values = by_round[number]
        band.mean.append(statistics.fmean(values) if values else math.nan)
        band.low.append(min(values) if values else math.nan)
        band.high.append(max(values) if values else math.nan)
        band.count.append(len(values))
    return band
