"""The shared figure helpers of fl_poison.core.plots: the annotated heatmap and the figure writer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from fl_poison.core.plots import draw_annotated_heatmap, pyplot, save_figure


def written_texts(axis: object) -> list[tuple[str, str]]:
    """(text, colour) of every value written on ``axis``, row by row."""
    from matplotlib.colors import to_hex

    return [(text.get_text(), to_hex(text.get_color())) for text in axis.texts]  # type: ignore[attr-defined]


def test_heatmap_writes_every_value_and_whitens_dark_squares() -> None:
    figure, axis = pyplot().subplots()
    shown = np.array([[0.5, math.nan], [0.25, 0.0]])
    # Reds on [0, 1], dark above 0.6: 0.95 dark, 0.1 light, NaN light, 0.6 exactly is not above
    colours = np.array([[0.95, 0.1], [math.nan, 0.6]])
    draw_annotated_heatmap(axis, shown, colours, ["a", "b"], ["x", "y"], "Reds", (0.0, 1.0), dark_above=0.6)
    assert written_texts(axis) == [("0.50", "#ffffff"), ("–", "#000000"), ("0.25", "#000000"), ("0.00", "#000000")]
    assert [label.get_text() for label in axis.get_yticklabels()] == ["a", "b"]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["x", "y"]
    image = axis.images[0]
    assert image.get_clim() == (0.0, 1.0)
    assert np.ma.getmaskarray(image.get_array()).tolist() == [[False, False], [True, False]]
    pyplot().close(figure)


def test_heatmap_diverging_map_whitens_both_ends() -> None:
    figure, axis = pyplot().subplots()
    # RdBu on [-0.1, 0.1]: shares 0.95, 0.10, 0.50 and 0.80 against the ends 0.85 / 0.15
    colours = np.array([[0.09, -0.08, 0.0, 0.06]])
    draw_annotated_heatmap(
        axis, colours, colours, ["r"], list("abcd"), "RdBu", (-0.1, 0.1), dark_above=0.85, dark_below=0.15
    )
    assert [colour for _, colour in written_texts(axis)] == ["#ffffff", "#ffffff", "#000000", "#000000"]
    pyplot().close(figure)


def test_save_figure_writes_palette_pngs_and_every_format(tmp_path: Path) -> None:
    figure, axis = pyplot().subplots(figsize=(2, 2))
    axis.plot([0, 1], [0, 1])
    written = save_figure(figure, tmp_path / "sub" / "plot.png", formats=("png", "pdf"))
    assert written == [tmp_path / "sub" / "plot.png", tmp_path / "sub" / "plot.pdf"]
    with Image.open(written[0]) as image:
        assert image.mode == "P"
        assert image.size == (240, 240)  # 2 inches at 120 dots per inch
    assert written[1].read_bytes().startswith(b"%PDF")
    assert sorted(path.name for path in (tmp_path / "sub").iterdir()) == ["plot.pdf", "plot.png"]


def test_palette_png_keeps_the_white_background_exact_and_solid_colours_close(tmp_path: Path) -> None:
    figure, axis = pyplot().subplots(figsize=(4, 3))
    values = np.linspace(-1.0, 1.0, 64).reshape(8, 8)
    axis.imshow(values, cmap="RdBu", vmin=-1.0, vmax=1.0, extent=(0, 8, 0, 8))
    axis.add_patch(Rectangle(xy=(0.1, 0.1), width=0.3, height=0.3, color=(0.2, 0.6, 0.4), transform=figure.transFigure))
    (written,) = save_figure(figure, tmp_path / "map.png")
    with Image.open(written) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # the figure's corner: its white face
    # the centre of the green square (figure fraction 0.25, 0.25 from the bottom left), 480 x 360 pixels
    square = pixels[360 - 90, 120]
    assert np.abs(square - np.array([0.2 * 255, 0.6 * 255, 0.4 * 255])).max() <= 6
