"""The numbers each sweep figure shows, computed from the cells alone (pure functions, no drawing).

Only cells whose run finished (``status`` ``ok``) and whose metric is a finite number enter a
mean; failed cells never do. Keeping these apart from the drawing lets tests check the plotted
values against numbers worked out by hand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from experiments.sweep_folder import CellRow, csv_text

MALICIOUS_SETTING = "num-malicious"
STRATEGY_SETTING = "strategy"
ATTACK_SETTING = "attack"
REPLICATE_SETTINGS = ("seed",)


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
    """

    num_malicious: int
    mean: float
    low: float
    high: float
    count: int


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
        without a single point are absent.
    """
    usable = [cell for cell in cells if cell.ok and math.isfinite(cell.metric(metric))]
    curves: dict[tuple[object, ...], dict[object, list[CurvePoint]]] = {}
    for panel, panel_cells in group_cells(usable, panel_keys).items():
        lines: dict[object, list[CurvePoint]] = {}
        for (strategy,), strategy_cells in group_cells(panel_cells, [STRATEGY_SETTING]).items():
            points = []
            for (attackers,), point_cells in group_cells(strategy_cells, [MALICIOUS_SETTING]).items():
                values = [cell.metric(metric) for cell in point_cells]
                points.append(
                    CurvePoint(
                        int(cast("int | str", attackers)),
                        statistics.fmean(values),
                        min(values),
                        max(values),
                        len(values),
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
