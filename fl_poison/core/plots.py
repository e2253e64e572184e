"""Plots of one run, drawn from its rows (never from log text).

Matplotlib is imported when the first figure is drawn (:func:`pyplot`), not with this module: a
ServerApp draws only after its last round, and importing matplotlib costs about a second.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

import numpy as np

from fl_poison.core.results import atomic_write_bytes
from fl_poison.core.round_log import ClientRoundRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
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

    PNGs get an adaptive 256-colour median-cut palette in which the background's white stays
    exact: about a third of the size of the full-colour PNG for the committed result figures (the
    defenses matrix on digits: 269 KB to 87 KB).

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
    written = []
    try:
        for extension in formats:
            target = path.with_suffix(f".{extension}")
            buffer = io.BytesIO()
            figure.savefig(buffer, dpi=120, format=extension)
            payload = buffer.getvalue()
            if extension == "png":
                payload = _palette_png(payload)
            atomic_write_bytes(target, payload)
            written.append(target)
    finally:
        pyplot().close(figure)
    return written


def _palette_png(png: bytes) -> bytes:
    """``png`` with a 256-colour median-cut palette in which the source's pure white stays pure white.

    Parameters
    ----------
    png : bytes
        A full-colour PNG.
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        colours = image.convert("RGB")
    quantized = colours.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    white = np.all(np.asarray(colours) == 255, axis=-1)
    if white.any():
        index = int(np.bincount(np.asarray(quantized)[white]).argmax())
        palette = quantized.getpalette() or []
        palette[3 * index : 3 * index + 3] = [255, 255, 255]
        quantized.putpalette(palette)
    output = io.BytesIO()
    quantized.save(output, format="PNG", optimize=True)
    return output.getvalue()


def draw_annotated_heatmap(
    axis: Axes,
    shown: np.ndarray,
    colours: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    colour_map: str,
    limits: tuple[float, float],
    dark_above: float | None = None,
    dark_below: float | None = None,
    fontsize: int = 8,
) -> None:
    """Colour a table of squares by ``colours`` and write ``shown`` in each ("–" where it is NaN).

    NaN colours are masked (the axis background shows); the text is white where the colour, as a
    share of ``limits``, is above ``dark_above`` or below ``dark_below``, black elsewhere.

    Parameters
    ----------
    axis : Axes
        Where to draw; a colour bar is added beside it.
    shown : np.ndarray
        The values written in the squares (rows × columns).
    colours : np.ndarray
        The values that colour the squares (same shape as ``shown``).
    row_labels : Sequence[str]
        One label per row.
    column_labels : Sequence[str]
        One label per column (rotated).
    colour_map : str
        A matplotlib colour map name.
    limits : tuple[float, float]
        The colour map's low and high ends (values beyond saturate).
    dark_above : float | None
        Share of the colour range above which a square is dark enough for white text.
    dark_below : float | None
        Share of the colour range below which a square is dark enough for white text.
    fontsize : int
        Size of the labels and of the written values.
    """
    low, high = limits
    image = axis.imshow(
        np.ma.masked_invalid(colours), cmap=colour_map, vmin=low, vmax=high, aspect="auto", interpolation="none"
    )
    axis.set_xticks(range(len(column_labels)), list(column_labels), rotation=30, ha="right", fontsize=fontsize)
    axis.set_yticks(range(len(row_labels)), list(row_labels), fontsize=fontsize)
    for (row, column), value in np.ndenumerate(shown):
        colour = colours[row, column]
        share = (colour - low) / (high - low) if math.isfinite(colour) else math.nan
        dark = (dark_above is not None and share > dark_above) or (dark_below is not None and share < dark_below)
        text = "–" if math.isnan(value) else f"{value:.2f}"
        axis.text(column, row, text, ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")
    axis.figure.colorbar(image, ax=axis, fraction=0.025, pad=0.01)


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
