"""Plots of one run, drawn from its rows (never from log text).

Matplotlib is imported when the first figure is drawn (:func:`pyplot`), not with this module: a
ServerApp draws only after its last round, and importing matplotlib costs about a second.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

from fl_poison.core.round_log import ClientRoundRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ATTACK_CURVES = ("asr", "ts_ata", "max_ata")


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def save_figure(figure: Figure, path: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``figure`` atomically (temporary file + rename) in every format, close it, return the files.

    Parameters
    ----------
    figure : Figure
        The figure to write.
    path : Path
        Target file; each format replaces its suffix (``plots/a.png`` gives ``plots/a.png`` and
        ``plots/a.pdf`` for ``("png", "pdf")``).
    formats : Sequence[str]
        Matplotlib output formats (file suffixes without the dot).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for extension in formats:
            target = path.with_suffix(f".{extension}")
            temporary = path.with_name(f".{path.stem}.tmp.{extension}")
            figure.savefig(temporary, dpi=120, format=extension)
            temporary.replace(target)
            written.append(target)
    finally:
        pyplot().close(figure)
    return written


def _number(value: object) -> float:
    # a number, or its text in rows read back from a CSV file
    return float(cast("str | float", value))


def _values(rows: Sequence[Mapping[str, object]], column: str) -> list[float]:
    return [_number(row[column]) if row.get(column) not in (None, "") else math.nan for row in rows]


def plot_training_curves(
    rows: Sequence[Mapping[str, object]], path: Path, title: str, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Test accuracy (and the attack metrics the run has) and test loss of the global model per round.

    Parameters
    ----------
    rows : Sequence[Mapping[str, object]]
        The rows of ``rounds.csv`` (``round``, ``accuracy``, ``loss`` and any of :data:`ATTACK_CURVES`).
    path : Path
        Target file (see :func:`save_figure`).
    title : str
        Figure title (wrapped).
    formats : Sequence[str]
        Output formats (see :func:`save_figure`); returns the files written.
    """
    rounds = [int(cast("str | int", row["round"])) for row in rows]
    figure, (rate_axis, loss_axis) = pyplot().subplots(1, 2, figsize=(10, 3.8))
    rate_axis.plot(rounds, _values(rows, "accuracy"), marker="o", markersize=3, label="accuracy")
    for column in ATTACK_CURVES:
        if rows and column in rows[0]:
            rate_axis.plot(rounds, _values(rows, column), marker="s", markersize=3, label=column)
    rate_axis.set(xlabel="round", ylabel="share of test samples", ylim=(0, 1.02), title="accuracy and attack success")
    rate_axis.legend(fontsize=8)
    loss_axis.plot(rounds, _values(rows, "loss"), marker="o", markersize=3, color="tab:red")
    loss_axis.set(xlabel="round", ylabel="test loss", title="loss")
    for axis in (rate_axis, loss_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(textwrap.fill(title, 110), fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, formats)


def plot_update_norms(records: Sequence[ClientRoundRecord], path: Path, title: str) -> None:
    """Update norm of each client before and after the defense in one round (seed 001 Figs. 6–7).

    Malicious clients' bars are red; the clipping bound, when there is one, is a dashed line.
    """
    records = [record for record in records if record.status != "failed"]
    figure, axis = pyplot().subplots(figsize=(max(5, 0.6 * len(records) + 2), 3.8))
    positions = range(len(records))
    colours = ["tab:red" if record.malicious else "tab:blue" for record in records]
    axis.bar(
        [p - 0.2 for p in positions],
        [record.norm_before for record in records],
        width=0.4,
        color=colours,
        alpha=0.45,
        label="before",
    )
    axis.bar(
        [p + 0.2 for p in positions], [record.norm_after for record in records], width=0.4, color=colours, label="after"
    )
    bounds = [record.bound for record in records if not math.isnan(record.bound)]
    if bounds:
        axis.axhline(bounds[0], linestyle="--", color="black", linewidth=1, label=f"bound {bounds[0]:.3g}")
    axis.set_xticks(list(positions), [f"{record.partition_id}\n{record.decision}" for record in records], fontsize=7)
    axis.set(xlabel="partition id / decision (red = malicious)", ylabel="update L2 norm")
    axis.set_title(textwrap.fill(title, 70), fontsize=9)
    positive = [value for record in records for value in (record.norm_before, record.norm_after) if value > 0]
    if positive and max(positive) > 20 * min(positive):
        axis.set_yscale("log")  # a scaled attacker would otherwise flatten every honest bar
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    save_figure(figure, path)
