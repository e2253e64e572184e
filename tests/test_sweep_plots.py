"""``fl-poison plot DIR``: the sweep folder reader, the plotted numbers, the files, bad input.

The sweep folder is hand-made (see :mod:`tests.sweep_folder_helpers`), so the values each figure
shows are checked against means worked out by hand; no Flower run is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from experiments.sweep_aggregates import (
    FINAL,
    LAST,
    ReplicateGroup,
    comparable_pairs,
    group_comparisons,
    group_statistics,
    heatmap,
    malicious_curves,
    norm_summary,
    replicate_groups,
    round_band,
)
from experiments.sweep_folder import (
    SweepFolderError,
    read_definition,
    read_sweep_folder,
    round_tables,
)
from experiments.sweep_plots import (
    MAX_LEGEND_ENTRIES,
    SweepFigures,
    add_bottom_legend,
    data_spec_of,
    label_figure_name,
    legend_columns,
    plot_label_distribution,
    plot_label_distributions_of,
    plot_malicious_figures,
    plot_round_overlay,
    plot_sweep,
    tick_label,
)
from fl_poison.cli import main
from fl_poison.core.plots import pyplot
from fl_poison.core.results import write_csv
from tests.sweep_folder_helpers import (
    BASE,
    CLIP_CELL,
    FAILED,
    FAILED_ERROR,
    build_replicated_folder,
    build_sweep_folder,
    clip_clients,
    final_asr,
    main_cell_id,
    replicated_cell_id,
    run_on_sweep_folder,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF"
LABEL_FIGURE = "digits_dirichlet_8clients_alpha0p5_seed42"
T_975_1 = 12.706205  # t quantile 0.975 with 1 degree of freedom (2 seeds)
T_975_2 = 4.302653  # with 2 degrees of freedom (3 seeds)


@pytest.fixture(scope="module")
def plotted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The hand-made sweep folder after ``fl-poison plot``: the folder, the exit code, stdout."""
    return run_on_sweep_folder("plot", tmp_path_factory.mktemp("plot"))


@pytest.fixture
def sweep(tmp_path: Path):
    """The hand-made sweep folder, read (nothing drawn)."""
    return read_sweep_folder(build_sweep_folder(tmp_path))


def assert_png_and_pdf(png: Path) -> None:
    """``png`` and its PDF twin exist and start with their formats' magic bytes."""
    assert png.read_bytes()[:8] == PNG_MAGIC, png
    assert png.with_suffix(".pdf").read_bytes()[:4] == PDF_MAGIC, png.with_suffix(".pdf")


def test_the_reader_types_the_table_and_knows_the_grids(sweep):
    assert list(sweep.definition.grids) == ["main", "clip"]
    assert sweep.definition.axes("clip") == {"num-malicious": [1]}
    assert sweep.definition.overrides("clip") == {"strategy": "norm-clip", "attack": "badnets"}
    assert sweep.setting_columns == ["strategy", "attack", "num-malicious"]
    assert len(sweep.cells_of("main")) == 12 and [cell.cell_id for cell in sweep.cells_of("clip")] == [CLIP_CELL]
    failed = [cell for cell in sweep.cells if not cell.ok]
    assert [cell.cell_id for cell in failed] == [main_cell_id(*FAILED)]
    assert failed[0].error == FAILED_ERROR and math.isnan(failed[0].metric("accuracy"))
    first = sweep.cells[0]
    assert first.values == {"strategy": "fedavg", "attack": "label-flip", "num-malicious": 0}
    assert first.metric("accuracy") == pytest.approx(0.9) and math.isnan(first.metric("detection_precision"))


def test_sweep_json_must_have_the_base_and_grids_form(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"base": {}, "grid": {"strategy": ["fedavg"]}}))
    with pytest.raises(
        SweepFolderError, match=r"not the keys \['base', 'grids'\]; allowed: a folder written by fl-poison sweep"
    ):
        read_definition(path)
    path.write_text(json.dumps({"base": {}, "grids": {"g": ["fedavg"]}}))
    with pytest.raises(SweepFolderError, match="grid 'g' is not an object"):
        read_definition(path)
    path.write_text(json.dumps({"base": {"seed": 1}, "grids": {"g": {"seed": [1, 2]}}}))
    assert read_definition(path).axes("g") == {"seed": [1, 2]}


def test_accuracy_vs_malicious_points_are_per_strategy_per_attack_without_the_failed_cell(sweep):
    curves = malicious_curves(sweep.cells_of("main"), "accuracy", ["attack"])
    assert list(curves) == [("label-flip",), ("badnets",)]
    fedavg = curves[("label-flip",)]["fedavg"]
    assert [(p.num_malicious, p.count) for p in fedavg] == [(0, 1), (1, 1), (2, 1)]
    assert [p.mean for p in fedavg] == pytest.approx([0.9, 0.8, 0.7])
    krum_badnets = curves[("badnets",)]["krum"]
    assert [p.num_malicious for p in krum_badnets] == [0, 1]  # m = 2 failed
    assert [p.mean for p in krum_badnets] == pytest.approx([0.87, 0.77])
    asr = malicious_curves(sweep.cells_of("main"), "asr", ["attack"])
    assert [p.mean for p in asr[("badnets",)]["fedavg"]] == pytest.approx([0.2, 0.4, 0.6])


def test_accuracy_vs_malicious_averages_the_axes_that_get_no_panel(sweep):
    curves = malicious_curves(sweep.cells_of("main"), "accuracy", [])
    krum = {p.num_malicious: p for p in curves[()]["krum"]}
    assert krum[1].mean == pytest.approx((0.82 + 0.77) / 2) and krum[1].count == 2
    assert krum[2].mean == pytest.approx(0.72) and krum[2].count == 1  # badnets at m = 2 failed
    assert (krum[1].low, krum[1].high) == pytest.approx((0.77, 0.82))


def test_heatmap_means_over_num_malicious_leave_out_the_failed_cell(sweep):
    accuracy = heatmap(sweep.cells_of("main"), "accuracy")
    assert accuracy.row_labels == ["fedavg", "krum"] and accuracy.column_labels == ["label-flip", "badnets"]
    assert accuracy.values == pytest.approx(np.array([[0.8, 0.75], [0.82, 0.82]]))
    assert accuracy.counts.tolist() == [[3, 3], [3, 2]]
    asr = heatmap(sweep.cells_of("main"), "asr")
    expected = (final_asr("krum", "badnets", 0) + final_asr("krum", "badnets", 1)) / 2
    assert asr.values[1, 1] == pytest.approx(expected) == pytest.approx(0.25)


def test_norm_summary_splits_benign_and_malicious_and_skips_failed_replies():
    summary = norm_summary([{key: str(value) for key, value in row.items()} for row in clip_clients()])
    assert summary.rounds == [1, 2, 3]
    assert summary.bound == [2.0, 2.0, 2.0]
    assert summary.curves[("benign", "before", "median")] == [2.0, 2.0, 2.0]
    assert summary.curves[("benign", "before", "max")] == [3.0, 3.0, 3.0]  # the failed reply's 100 is left out
    assert summary.curves[("benign", "after", "max")] == [2.0, 2.0, 2.0]
    assert summary.curves[("malicious", "before", "median")] == [10.0, 10.0, 10.0]
    assert summary.curves[("malicious", "after", "max")] == [2.0, 2.0, 2.0]


def test_plot_writes_png_and_pdf_for_every_figure(plotted):
    folder, code, stdout = plotted
    plots = folder / "plots"
    assert code == 0
    assert stdout.strip() == f"{len(list(plots.rglob('*.png'))) * 2} files (PNG and PDF) in {plots}"
    for name in (
        "malicious_main",
        "heatmap_main",
        "curves_main",
        "curves_clip",
        f"labels/{LABEL_FIGURE}",
        f"norms/{CLIP_CELL}",
    ):
        assert_png_and_pdf(plots / f"{name}.png")
    ok_cells = [main_cell_id(s, a, m) for s in ("fedavg", "krum") for a in ("label-flip", "badnets") for m in (0, 1, 2)]
    ok_cells.remove(main_cell_id(*FAILED))
    for cell_id in [*ok_cells, CLIP_CELL]:
        assert_png_and_pdf(plots / "cells" / f"{cell_id}.png")
    assert not (plots / "cells" / f"{main_cell_id(*FAILED)}.png").exists()
    assert [path.stem for path in (plots / "norms").glob("*.png")] == [CLIP_CELL]  # only the cell with a bound
    assert not (plots / "malicious_clip.png").exists()  # num-malicious is constant in grid clip
    assert not (plots / "heatmap_all_cells.png").exists()  # grid main varies strategy and attack
    assert not list(plots.glob("groups_*"))  # one seed per group: no intervals to draw


def test_without_a_grid_varying_both_the_heatmap_covers_all_finished_cells(tmp_path, monkeypatch):
    folder = tmp_path / "sweep"
    folder.mkdir()
    grids = {"strategies": {"strategy": ["fedavg", "krum", "median"]}, "attacks": {"attack": ["label-flip", "badnets"]}}
    (folder / "sweep.json").write_text(json.dumps({"base": BASE, "grids": grids}))
    rows = [
        {
            "cell_id": "0000000a",
            "grid": "strategies;attacks",
            "strategy": "fedavg",
            "attack": "label-flip",
            "status": "ok",
            "accuracy": 0.9,
        },
        {
            "cell_id": "0000000b",
            "grid": "strategies",
            "strategy": "krum",
            "attack": "label-flip",
            "status": "ok",
            "accuracy": 0.8,
        },
        {
            "cell_id": "0000000c",
            "grid": "attacks",
            "strategy": "fedavg",
            "attack": "badnets",
            "status": "ok",
            "accuracy": 0.7,
        },
        {
            "cell_id": "0000000d",
            "grid": "strategies",
            "strategy": "median",
            "attack": "label-flip",
            "status": "failed",
            "error": "x",
        },
    ]
    write_csv(
        folder / "sweep.csv",
        rows,
        ["cell_id", "grid", "strategy", "attack", "status", "accuracy", "asr", "folder", "error"],
    )
    monkeypatch.setattr("experiments.sweep_plots.plot_label_distributions_of", lambda *args: None)
    figures = plot_sweep(folder)
    assert figures.sweep_wide == [folder / "plots" / "heatmap_all_cells.png"]
    assert_png_and_pdf(folder / "plots" / "heatmap_all_cells.png")
    assert not list((folder / "plots").glob("heatmap_strategies*"))
    table = heatmap(read_sweep_folder(folder).cells, "accuracy")
    assert table.values[0] == pytest.approx(np.array([0.9, 0.7])) and table.values[1, 0] == pytest.approx(0.8)
    assert table.row_labels == ["fedavg", "krum"] and math.isnan(table.values[1, 1])  # median failed


@pytest.mark.parametrize("make", ["missing", "no-table"])
def test_a_folder_that_is_not_a_sweep_is_one_line_and_exit_2(tmp_path, capsys, make):
    folder = tmp_path / "not-a-sweep"
    if make == "no-table":
        folder.mkdir()
    assert main(["plot", str(folder)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"fl-poison: error: {folder}: ")
    assert lines[0].endswith("; allowed: a folder written by fl-poison sweep")


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"partitioning": "pathological", "classes-per-client": 3}, "digits_pathological_4clients_3classes_seed42"),
        (
            {"partitioning": "random-subsets", "samples-per-client": 50},
            "digits_random-subsets_4clients_50samples_seed42",
        ),
    ],
)
def test_label_distribution_of_digits_is_drawn_with_the_cells_partitioner(tmp_path, settings, name):
    spec = data_spec_of({**BASE, "num-clients": 4, "dirichlet-alpha": 0.1, **settings})
    assert spec.dirichlet_alpha == 0.5  # ignored outside dirichlet partitioning, so not part of the split's identity
    assert label_figure_name(spec) == name
    written = plot_label_distribution(spec, tmp_path / "labels.png")
    assert written == [tmp_path / "labels.png", tmp_path / "labels.pdf"]
    assert_png_and_pdf(tmp_path / "labels.png")


def test_a_dataset_that_cannot_be_loaded_skips_its_figure_with_one_warning(tmp_path, monkeypatch, sweep):
    def offline(spec):
        raise ConnectionError("hub unreachable\nsecond line")

    monkeypatch.setattr("fl_poison.core.data.source_of", offline)
    warnings: list[str] = []
    figures = SweepFigures(folder=sweep.path)
    plot_label_distributions_of(sweep, tmp_path / "plots", figures, warnings.append)
    assert figures.labels == [] and figures.files == []
    assert warnings == ["label distribution of digits (dirichlet) skipped: hub unreachable"]


@pytest.fixture
def replicated(tmp_path: Path):
    """The replicated sweep (FedAvg and Krum over seeds 1-3, Krum's seed 3 failed), read, with its round tables."""
    sweep = read_sweep_folder(build_replicated_folder(tmp_path))
    return sweep, round_tables(sweep.cells)


def test_cells_that_differ_only_in_seed_form_one_group(replicated, sweep):
    folder, _ = replicated
    groups = replicate_groups(folder.cells, folder.setting_columns, folder.seed_of)
    assert [group.values for group in groups] == [
        {"num-malicious": 1, "strategy": "fedavg"},
        {"num-malicious": 1, "strategy": "krum"},
    ]
    assert groups[0].seeds == (1, 2, 3) and groups[1].seeds == (1, 2, 3)
    assert groups[1].finished_seeds == (1, 2)
    assert [cell.cell_id for cell in groups[0].cells] == [replicated_cell_id("fedavg", seed) for seed in (1, 2, 3)]
    # without a seed column every cell has the base seed (42): one group per cell
    single = replicate_groups(sweep.cells, sweep.setting_columns, sweep.seed_of)
    assert len(single) == len(sweep.cells) and {group.seeds for group in single} == {(42,)}


def test_group_statistics_final_and_last_rounds_by_hand(replicated):
    folder, tables = replicated
    groups = replicate_groups(folder.cells, folder.setting_columns, folder.seed_of)
    rows = {(row.group.values["strategy"], row.metric, row.measure): row for row in group_statistics(groups, tables)}
    fedavg = rows[("fedavg", "accuracy", FINAL)]
    # 0.7, 0.8, 0.9: mean 0.8, sd 0.1, 95 % interval 0.8 +- 4.302653 * 0.1 / sqrt(3)
    assert fedavg.seeds == (1, 2, 3) and fedavg.last_rounds is None
    assert (fedavg.summary.mean, fedavg.summary.std) == pytest.approx((0.8, 0.1))
    assert fedavg.summary.ci_low == pytest.approx(0.8 - T_975_2 * 0.1 / math.sqrt(3), abs=1e-6)
    assert fedavg.summary.ci_high == pytest.approx(0.8 + T_975_2 * 0.1 / math.sqrt(3), abs=1e-6)
    # the last 5 of 6 rounds climbing 0.05 a round to the final value: final - 0.1
    last = rows[("fedavg", "accuracy", LAST)]
    assert last.last_rounds == 5 and last.summary.mean == pytest.approx(0.7) and last.summary.std == pytest.approx(0.1)
    krum = rows[("krum", "accuracy", FINAL)]  # seed 3 failed: two seeds, one degree of freedom
    assert krum.seeds == (1, 2) and krum.summary.mean == pytest.approx(0.875)
    assert krum.summary.half_width == pytest.approx(T_975_1 * (0.15 / math.sqrt(2)) / math.sqrt(2), abs=1e-6)
    assert rows[("krum", "asr", FINAL)].summary.mean == pytest.approx(0.125)
    last_three = [r for r in group_statistics(groups, tables, 3) if r.measure == LAST and r.metric == "accuracy"]
    assert [r.summary.mean for r in last_three] == pytest.approx([0.75, 0.825])


def test_groups_that_differ_in_one_setting_are_paired_by_seed(replicated, sweep):
    folder, tables = replicated
    groups = replicate_groups(folder.cells, folder.setting_columns, folder.seed_of)
    assert [(key, a.values["strategy"], b.values["strategy"]) for key, a, b in comparable_pairs(groups)] == [
        ("strategy", "fedavg", "krum")
    ]
    comparisons = {(c.metric, c.measure): c for c in group_comparisons(groups, tables)}
    accuracy = comparisons[("accuracy", FINAL)].paired
    # krum - fedavg: seed 1: 0.8 - 0.7, seed 2: 0.95 - 0.8 -> mean 0.125, sd 0.05 / sqrt(2); seed 3 only in fedavg
    assert accuracy.pairs == 2 and accuracy.seeds == (1, 2) and accuracy.first_only == (3,)
    assert accuracy.difference.mean == pytest.approx(0.125)
    assert accuracy.difference.half_width == pytest.approx(T_975_1 * 0.025, abs=1e-6)
    assert comparisons[("asr", LAST)].paired.difference.mean == pytest.approx(-0.125)
    # the hand-made single-seed sweep: fedavg/label-flip/0 is paired with krum/label-flip/0 (strategy),
    # fedavg/badnets/0 (attack) and fedavg/label-flip/1 and /2 (num-malicious), never across two settings
    single = replicate_groups(sweep.cells_of("main"), sweep.setting_columns, sweep.seed_of)
    metrics = {row.metric for row in group_statistics(single, round_tables(sweep.cells))}
    assert {"accuracy", "asr", "loss", "detection_precision"} <= metrics and "wall_seconds" not in metrics
    first = single[0]
    partners = [(key, b.values) for key, a, b in comparable_pairs(single) if a is first]
    assert partners == [
        ("num-malicious", {"strategy": "fedavg", "attack": "label-flip", "num-malicious": 1}),
        ("num-malicious", {"strategy": "fedavg", "attack": "label-flip", "num-malicious": 2}),
        ("attack", {"strategy": "fedavg", "attack": "badnets", "num-malicious": 0}),
        ("strategy", {"strategy": "krum", "attack": "label-flip", "num-malicious": 0}),
    ]
    # the first of a pair is the value that comes first: 0 attackers before 2, fedavg before krum
    reverse = [(key, a.values, b.values) for key, a, b in comparable_pairs(list(reversed(single)))]
    assert all(a[key] != b[key] for key, a, b in reverse)
    assert next(a for key, a, b in reverse if key == "num-malicious")["num-malicious"] < 2


def test_round_band_is_the_mean_and_range_over_seeds(replicated):
    folder, tables = replicated
    fedavg = replicate_groups(folder.cells, folder.setting_columns, folder.seed_of)[0]
    band = round_band(fedavg, "accuracy", tables)
    assert band.rounds == [0, 1, 2, 3, 4, 5, 6]
    assert band.mean[0] == pytest.approx(0.1) and band.count[0] == 3
    assert (band.mean[-1], band.low[-1], band.high[-1]) == pytest.approx((0.8, 0.7, 0.9))
    assert band.mean[1] == pytest.approx(0.55)  # each seed's final value - 0.25


def test_points_against_attackers_carry_the_t_interval_over_seeds(replicated):
    folder, _ = replicated
    curves = malicious_curves(folder.cells, "accuracy", [])
    (fedavg,) = curves[()]["fedavg"]
    assert fedavg.count == 3 and (fedavg.low, fedavg.high) == pytest.approx((0.7, 0.9))
    assert (fedavg.ci_low, fedavg.ci_high) == pytest.approx(
        (0.8 - T_975_2 * 0.1 / math.sqrt(3), 0.8 + T_975_2 * 0.1 / math.sqrt(3)), abs=1e-6
    )
    (krum,) = curves[()]["krum"]
    assert krum.count == 2
    one = malicious_curves(folder.cells[:1], "accuracy", [])[()]["fedavg"][0]
    assert one.count == 1 and math.isnan(one.ci_low)


def test_plot_of_a_replicated_sweep_draws_intervals_and_bands(tmp_path, monkeypatch):
    monkeypatch.setattr("experiments.sweep_plots.plot_label_distributions_of", lambda *args: None)
    folder = build_replicated_folder(tmp_path)
    figures = plot_sweep(folder, last_rounds=3)
    assert figures.by_grid["seeds"] == [folder / "plots" / "groups_seeds.png", folder / "plots" / "curves_seeds.png"]
    for path in figures.by_grid["seeds"]:
        assert_png_and_pdf(path)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_bad_last_rounds_is_one_line_and_exit_2(tmp_path, capsys, value):
    folder = build_replicated_folder(tmp_path)
    assert main(["plot", str(folder), "--last-rounds", value]) == 2
    error = capsys.readouterr().err
    assert (
        error
        == f"fl-poison: error: --last-rounds: bad value {value}; allowed: an integer >= 1 (rounds averaged per run)\n"
    )
    assert not (folder / "plots").exists()


def test_a_long_group_label_is_wrapped_whole_and_never_split_inside_a_setting_name():
    label = "strategy=loss-filter, partitioning=dirichlet, num-malicious=2"
    wrapped = tick_label(label)
    assert wrapped == "strategy=loss-filter, partitioning=dirichlet,\nnum-malicious=2"
    assert wrapped.replace("\n", " ") == label
    assert tick_label("strategy=fedavg, num-malicious=1") == "strategy=fedavg, num-malicious=1"


def test_legend_columns_are_as_many_as_the_longest_entry_fits_across_the_figure():
    # an entry of 10 characters takes 10 x 0.052 + 0.6 = 1.12 in: 6 fit across 7 in, 1 across 1.5 in
    assert legend_columns(["x" * 10] * 9, 7.0) == 6
    assert legend_columns(["x" * 10] * 3, 7.0) == 3
    assert legend_columns(["x" * 10, "y"], 1.5) == 1
    assert legend_columns(["x" * 200], 7.0) == 1
    assert legend_columns([], 7.0) == 1


def test_a_long_legend_sits_under_the_panels_and_covers_none():
    figure, axes = pyplot().subplots(1, 1, figsize=(7.0, 4.2))
    labels = [f"strategy=multikrum, attack=label-flip-random, client-weighting=reported ({n})" for n in range(16)]
    for number, label in enumerate(labels):
        axes.plot([0, 1], [number, number], label=label)
    axes.set(xlabel="round")
    height = add_bottom_legend(figure, *axes.get_legend_handles_labels())
    # one column of 16 rows: 16 x 0.13 + 0.15 in, and the figure grew by as much
    assert height == pytest.approx(16 * 0.13 + 0.15)
    assert figure.get_figheight() == pytest.approx(4.2 + height)
    figure.tight_layout(rect=(0.0, height / figure.get_figheight(), 1.0, 1.0))
    renderer = figure.canvas.get_renderer()
    legend_box = figure.legends[0].get_window_extent(renderer)
    axes_box = axes.get_tightbbox(renderer)
    assert legend_box.y1 <= axes_box.y0
    assert legend_box.x0 >= 0 and legend_box.x1 <= figure.bbox.x1
    pyplot().close(figure)


def test_no_entries_no_legend_and_the_figure_keeps_its_height():
    figure = pyplot().figure(figsize=(7.0, 4.2))
    assert add_bottom_legend(figure, [], []) == 0.0
    assert figure.get_figheight() == pytest.approx(4.2) and not figure.legends
    pyplot().close(figure)


def test_more_lines_than_a_legend_can_name_leave_the_legend_out_and_say_so(tmp_path, monkeypatch):
    captured = {}

    def keep(figure, path, formats):
        captured["figure"] = figure
        pyplot().close(figure)
        return [path]

    monkeypatch.setattr("experiments.sweep_plots.save_figure", keep)
    folder = read_sweep_folder(build_replicated_folder(tmp_path))
    tables = round_tables(folder.cells)
    cell = next(cell for cell in folder.cells if cell.ok and tables.get(cell.cell_id))
    many = [ReplicateGroup(number, {"strategy": f"rule{number}"}, (cell,), (1,)) for number in range(30)]
    assert len(many) > MAX_LEGEND_ENTRIES
    plot_round_overlay(folder.cells, ["strategy"], "many", tmp_path, many, tables)
    figure = captured["figure"]
    assert not figure.legends
    assert "30 lines, too many to name" in figure.get_suptitle().replace("\n", " ")
    few = many[:3]
    plot_round_overlay(folder.cells, ["strategy"], "few", tmp_path, few, tables)
    texts = [text.get_text() for text in captured["figure"].legends[0].get_texts()]
    assert texts == ["strategy=rule0", "strategy=rule1", "strategy=rule2"]


def test_accuracy_vs_attackers_gives_a_strategy_one_colour_and_one_legend_under_the_panels(
    tmp_path, monkeypatch, sweep
):
    captured = []

    def keep(figure, path, formats):
        captured.append(figure)
        return [path]

    monkeypatch.setattr("experiments.sweep_plots.save_figure", keep)
    # FedAvg left out of the label-flip panel: Krum is that panel's first line and the badnets panel's second
    cells = [
        cell
        for cell in sweep.cells_of("main")
        if not (cell.values["strategy"] == "fedavg" and cell.values["attack"] == "label-flip")
    ]
    plot_malicious_figures(cells, ["strategy", "attack", "num-malicious"], "main", tmp_path)
    (figure,) = captured
    colours = {}
    for axis in figure.axes:
        assert axis.get_legend() is None  # no legend inside a panel
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            colours.setdefault(label, set()).add(handle.lines[0].get_color())
    assert sorted(colours) == ["fedavg", "krum"]
    assert all(len(shades) == 1 for shades in colours.values())  # the same colour in every panel
    assert colours["fedavg"] != colours["krum"]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["fedavg", "krum"]
    renderer = figure.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 <= min(axis.get_window_extent(renderer).y0 for axis in figure.axes)
    pyplot().close(figure)


def test_cells_without_a_strategy_column_are_named_by_the_sweeps_fixed_strategy(tmp_path, monkeypatch, sweep):
    from dataclasses import replace

    captured = []
    monkeypatch.setattr(
        "experiments.sweep_plots.save_figure", lambda figure, path, formats: captured.append(figure) or [path]
    )
    # a grid that does not vary the strategy: its cells carry none (the base sets it, here "median")
    cells = [
        replace(cell, values={key: value for key, value in cell.values.items() if key != "strategy"})
        for cell in sweep.cells_of("main")
        if cell.values["strategy"] == "fedavg"
    ]
    plot_malicious_figures(cells, ["attack", "num-malicious"], "main", tmp_path, "median")
    (legend,) = captured[0].legends
    assert [text.get_text() for text in legend.get_texts()] == ["median"]
    pyplot().close(captured[0])
