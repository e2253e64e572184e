"""Sweeps: grid expansion, cell identity, resume from a partial sweep.csv, failures, bad input.

A stand-in runner writes the files a real run would (``summary.json`` in ``output-dir/run-name``)
so these tests need no Flower runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.sweep import (
    CELL_LOG,
    SWEEP_TABLE,
    SweepProgress,
    expand_grid,
    expand_sweep,
    load_sweep,
    print_now,
    run_sweep,
)
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.provenance import processor_description, source_fingerprint
from fl_poison.core.results import read_csv
from fl_poison.core.settings import ConfigError
from fl_poison.launch import CommandError

SWEEP = """
[base]
num-rounds = 3
num-clients = 8

[grid]
strategy = ["fedavg", "krum"]
num-malicious = [0, 1, 2]
"""


class FakeRunner:
    """Records the cells it runs; writes a summary whose accuracy encodes the cell; can fail some."""

    def __init__(self, fail_when: dict[str, object] | None = None) -> None:
        self.calls: list[dict[str, object]] = []
        self.fail_when = fail_when or {}

    def __call__(self, settings: dict[str, object], cpus: float, gpus: float, verbose: bool) -> Path:
        self.calls.append(dict(settings))
        if self.fail_when and all(settings.get(k) == v for k, v in self.fail_when.items()):
            raise CommandError("run 7 finished:failed: boom")
        folder = Path(str(settings["output-dir"])) / str(settings["run-name"])
        folder.mkdir(parents=True, exist_ok=True)
        accuracy = 0.5 + 0.1 * int(settings.get("num-malicious", 0)) + (0.01 if settings["strategy"] == "krum" else 0.0)
        (folder / "summary.json").write_text(json.dumps({"accuracy": accuracy, "loss": 1.0, "wall_seconds": 2.0}))
        return folder


def write_sweep(tmp_path: Path, text: str = SWEEP) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_grid_expands_to_the_cartesian_product_in_grid_order(tmp_path):
    base, grids = load_sweep(write_sweep(tmp_path))
    cells = expand_grid(base, grids["grid"])
    assert [(c.values["strategy"], c.values["num-malicious"]) for c in cells] == [
        ("fedavg", 0),
        ("fedavg", 1),
        ("fedavg", 2),
        ("krum", 0),
        ("krum", 1),
        ("krum", 2),
    ]
    assert all(c.settings["num-rounds"] == 3 and c.settings["num-clients"] == 8 for c in cells)


def test_cell_identity_is_the_hash_of_the_resolved_settings(tmp_path):
    base, grids = load_sweep(write_sweep(tmp_path))
    cells = expand_grid(base, grids["grid"])
    expected = experiment_config(
        {"num-rounds": 3, "num-clients": 8, "strategy": "krum", "num-malicious": 1}
    ).fingerprint()
    assert cells[4].cell_id == expected
    assert len({c.cell_id for c in cells}) == 6
    # a value equal to the default resolves to the same cell as leaving it out
    same = expand_grid({"num-rounds": 20}, {"seed": [42]})[0].cell_id
    assert same == expand_grid({}, {"num-rounds": [20]})[0].cell_id


def test_a_sweep_runs_every_cell_and_writes_one_row_each(tmp_path):
    runner = FakeRunner()
    table = run_sweep(write_sweep(tmp_path), tmp_path / "out", runner=runner, progress=lambda line: None)
    rows = read_csv(table.path)
    assert len(runner.calls) == 6 and len(rows) == 6
    assert all(row["status"] == "ok" for row in rows)
    krum_two = next(row for row in rows if row["strategy"] == "krum" and row["num-malicious"] == "2")
    assert float(krum_two["accuracy"]) == pytest.approx(0.71)
    assert all(
        call["run-name"] == call_cell
        for call, call_cell in zip(runner.calls, [r["cell_id"] for r in rows], strict=True)
    )


def test_resume_runs_only_the_missing_and_failed_cells(tmp_path):
    sweep, out = write_sweep(tmp_path), tmp_path / "out"
    failing = FakeRunner(fail_when={"strategy": "krum", "num-malicious": 1})
    run_sweep(sweep, out, runner=failing, progress=lambda line: None)
    rows = {row["cell_id"]: row for row in read_csv(out / SWEEP_TABLE)}
    failed = [row for row in rows.values() if row["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "run 7 finished:failed: boom"
    assert sum(row["status"] == "ok" for row in rows.values()) == 5

    # simulate an interruption that lost one finished cell's row: drop it from sweep.csv
    lost = next(row for row in rows.values() if row["strategy"] == "fedavg" and row["num-malicious"] == "0")
    kept = [row for row in rows.values() if row["cell_id"] != lost["cell_id"]]
    header = list(next(iter(rows.values())).keys())
    lines = [",".join(header)] + [",".join(str(row[k]) for k in header) for row in kept]
    (out / SWEEP_TABLE).write_text("\n".join(lines) + "\n")

    again = FakeRunner()
    run_sweep(sweep, out, runner=again, progress=lambda line: None)
    rerun = sorted((call["strategy"], call["num-malicious"]) for call in again.calls)
    assert rerun == [("fedavg", 0), ("krum", 1)]
    final = read_csv(out / SWEEP_TABLE)
    assert len(final) == 6 and len({row["cell_id"] for row in final}) == 6
    assert all(row["status"] == "ok" for row in final)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[grid]\nstrategyy = ['fedavg']\n", "strategyy: unknown setting in the sweep file;"),
        ("[base]\nnum-rounds = 2\n", "grid: empty;"),
        ("[grid]\nstrategy = 'fedavg'\n", "strategy: grid value 'fedavg' is not a non-empty list;"),
        ("[grid]\nnum-rounds = ['many']\n", "num-rounds: bad value 'many';"),
        ("[grid]\nstrategy = ['fedavgx']\n", "strategy: bad value 'fedavgx';"),
        ("[cells]\nx = 1\n", "sweep file: unknown table [cells];"),
        ("[grid.a]\nseed = [1]\n[grid]\nstrategy = ['krum']\n", "grid: 'strategy' sits beside named grids;"),
        ("[grid.a]\nseed = []\n", "seed: empty list in grid 'a';"),
        ("[grid.a]\nseedx = [1]\n", "seedx: unknown setting in the sweep file;"),
        ("[grid.a]\nnum-rounds = 'x'\n", "num-rounds: bad value 'x';"),
        ("[base]\nnum-rounds = [2]\n[grid]\nseed = [1]\n", "num-rounds: bad value [2];"),
        ("[grid\nseed = [1]\n", "sweep file: cannot read"),
    ],
)
def test_bad_sweep_files_fail_before_any_cell_runs(tmp_path, text, expected):
    runner = FakeRunner()
    with pytest.raises(ConfigError) as caught:
        run_sweep(write_sweep(tmp_path, text), tmp_path / "out", runner=runner, progress=lambda line: None)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert runner.calls == []


def test_a_folder_holding_another_sweep_is_refused(tmp_path):
    out = tmp_path / "out"
    run_sweep(write_sweep(tmp_path), out, runner=FakeRunner(), progress=lambda line: None)
    other = tmp_path / "other.toml"
    other.write_text("[grid]\nseed = [1, 2]\n")
    runner = FakeRunner()
    with pytest.raises(ConfigError) as caught:
        run_sweep(other, out, runner=runner, progress=lambda line: None)
    assert str(caught.value).startswith("--out:") and runner.calls == []


NAMED = """
[base]
num-rounds = 3
num-clients = 8
attack = "badnets"

[grid.ratio]
strategy = "fedavg"
num-malicious = [0, 1]

[grid.defense]
num-malicious = 1
strategy = ["fedavg", "krum"]
"""


def test_named_grids_share_cells_and_fill_every_setting_column(tmp_path):
    base, grids = load_sweep(write_sweep(tmp_path, NAMED))
    assert list(grids) == ["ratio", "defense"]
    cells = expand_sweep(base, grids)
    # ratio: (fedavg, 0), (fedavg, 1); defense: (fedavg, 1) again and (krum, 1) -> 3 distinct cells
    assert [(c.values["strategy"], c.values["num-malicious"], c.grids) for c in cells] == [
        ("fedavg", 0, ("ratio",)),
        ("fedavg", 1, ("ratio", "defense")),
        ("krum", 1, ("defense",)),
    ]
    runner = FakeRunner()
    table = run_sweep(write_sweep(tmp_path, NAMED), tmp_path / "out", runner=runner, progress=lambda line: None)
    rows = read_csv(table.path)
    assert len(runner.calls) == 3 and len(rows) == 3
    assert list(rows[0])[:4] == ["cell_id", "grid", "strategy", "num-malicious"]
    assert [row["grid"] for row in rows] == ["ratio", "ratio;defense", "defense"]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["grids"]["defense"]["num-malicious"] == 1


def test_any_cell_failure_is_recorded_with_its_whole_error_in_the_cell_log(tmp_path):
    class Exploding(FakeRunner):
        def __call__(self, settings, cpus, gpus, verbose):
            if settings["num-malicious"] == 2:
                raise OSError("disk gone\nsecond line of detail")
            return super().__call__(settings, cpus, gpus, verbose)

    out = tmp_path / "out"
    table = run_sweep(write_sweep(tmp_path), out, runner=Exploding(), progress=lambda line: None)
    failed = [row for row in table.rows.values() if row["status"] == "failed"]
    assert len(failed) == 2 and {row["error"] for row in failed} == {"disk gone"}
    assert all(float(row["wall_seconds"]) >= 0 for row in failed)
    log = (out / str(failed[0]["cell_id"]) / CELL_LOG).read_text()
    assert "status: failed" in log and "second line of detail" in log and "num-malicious = 2" in log
    ok_log = (out / next(r["cell_id"] for r in table.rows.values() if r["status"] == "ok") / CELL_LOG).read_text()
    assert "status: ok" in ok_log and "error:" not in ok_log


def test_progress_bar_counts_cells_and_estimates_the_time_left():
    lines: list[str] = []
    bar = SweepProgress(total=4, done=1, emit=lines.append, width=8)
    assert bar.bar() == "[##......] 1/4"
    cell = expand_grid({}, {"seed": [1]})[0]
    bar.finish(cell, "ok")
    bar.finish(cell, "failed")
    assert bar.bar() == "[######..] 3/4"
    assert "3/4 failed:" in lines[-1] and "failed 1" in lines[-1] and "ETA" in lines[-1]


def test_a_progress_line_goes_out_in_one_write_so_cells_running_at_once_cannot_join_lines(monkeypatch):
    class RecordingStream:
        def __init__(self) -> None:
            self.writes: list[str] = []
            self.flushes = 0

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

        def flush(self) -> None:
            self.flushes += 1

    stream = RecordingStream()
    monkeypatch.setattr("sys.stdout", stream)
    print_now("[sweep] running abc")
    print_now("[sweep] running def")
    assert stream.writes == ["[sweep] running abc\n", "[sweep] running def\n"]
    assert stream.flushes == 2


def test_set_replaces_base_and_fixed_grid_values_and_is_recorded(tmp_path):
    runner = FakeRunner()
    out = tmp_path / "out"
    run_sweep(
        write_sweep(tmp_path, NAMED),
        out,
        runner=runner,
        progress=lambda line: None,
        overrides={"num-rounds": 7, "attack": "blend"},
    )
    assert {call["num-rounds"] for call in runner.calls} == {7}
    assert {call["attack"] for call in runner.calls} == {"blend"}
    definition = json.loads((out / "sweep.json").read_text())
    assert definition["base"]["num-rounds"] == 7
    # resuming the folder without the override is a different sweep
    with pytest.raises(ConfigError) as caught:
        run_sweep(write_sweep(tmp_path, NAMED), out, runner=FakeRunner(), progress=lambda line: None)
    assert str(caught.value).startswith("--out:")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({"strategy": "krum"}, "--set strategy: grid 'defense' varies it;"), ({"roundz": 3}, "roundz: unknown setting")],
)
def test_set_cannot_replace_an_axis_or_name_an_unknown_setting(tmp_path, overrides, expected):
    runner = FakeRunner()
    with pytest.raises(ConfigError) as caught:
        run_sweep(
            write_sweep(tmp_path, NAMED),
            tmp_path / "out",
            runner=runner,
            progress=lambda line: None,
            overrides=overrides,
        )
    assert str(caught.value).startswith(expected) and runner.calls == []


def test_the_sweep_command_reports_a_bad_set_in_one_line(tmp_path, capsys):
    from fl_poison.cli import main

    code = main(["sweep", str(write_sweep(tmp_path)), "--out", str(tmp_path / "out"), "--set", "num-rounds"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("fl-poison: error: num-rounds: not a KEY=VALUE setting") and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_rows_are_written_in_grid_order_whatever_order_cells_finish_in(tmp_path):
    import threading

    release = threading.Event()

    class FirstCellLast(FakeRunner):
        def __call__(self, settings, cpus, gpus, verbose):
            if settings["strategy"] == "fedavg" and settings["num-malicious"] == 0:
                release.wait(timeout=10)
            elif len(self.calls) >= 2:
                release.set()
            return super().__call__(settings, cpus, gpus, verbose)

    runner = FirstCellLast()
    table = run_sweep(write_sweep(tmp_path), tmp_path / "out", jobs=2, runner=runner, progress=lambda line: None)
    rows = read_csv(table.path)
    assert [(row["strategy"], row["num-malicious"]) for row in rows] == [
        ("fedavg", "0"),
        ("fedavg", "1"),
        ("fedavg", "2"),
        ("krum", "0"),
        ("krum", "1"),
        ("krum", "2"),
    ]


REPLICATED = """
[base]
num-rounds = 3
num-clients = 8
replicates = 3

[grid.defense]
num-malicious = 1
strategy = ["fedavg", "krum"]

[grid.own-seed]
strategy = "fedavg"
seed = 10
replicates = 2
"""


def test_replicates_repeat_every_cell_over_consecutive_seeds(tmp_path):
    base, grids = load_sweep(write_sweep(tmp_path, REPLICATED))
    assert "replicates" not in base
    # the base's replicates count up from the default seed 42; a grid's own seed and replicates win
    assert grids == {
        "defense": {"num-malicious": 1, "strategy": ["fedavg", "krum"], "seed": [42, 43, 44]},
        "own-seed": {"strategy": "fedavg", "seed": [10, 11]},
    }
    cells = expand_sweep(base, grids)
    assert [(c.values["strategy"], c.values["seed"], c.grids) for c in cells] == [
        ("fedavg", 42, ("defense",)),
        ("fedavg", 43, ("defense",)),
        ("fedavg", 44, ("defense",)),
        ("krum", 42, ("defense",)),
        ("krum", 43, ("defense",)),
        ("krum", 44, ("defense",)),
        ("fedavg", 10, ("own-seed",)),
        ("fedavg", 11, ("own-seed",)),
    ]
    assert len({c.cell_id for c in cells}) == 8


def test_replicates_are_the_same_cells_as_the_listed_seeds(tmp_path):
    listed = "[base]\nnum-rounds = 3\nseed = 7\n[grid]\nstrategy = ['fedavg', 'krum']\nseed = [7, 8]\n"
    replicated = "[base]\nnum-rounds = 3\nseed = 7\n[grid]\nstrategy = ['fedavg', 'krum']\nreplicates = 2\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = load_sweep(write_sweep(tmp_path / "a", listed)), load_sweep(write_sweep(tmp_path / "b", replicated))
    assert one == two
    assert [c.cell_id for c in expand_sweep(*one)] == [c.cell_id for c in expand_sweep(*two)]


def test_one_replicate_changes_nothing(tmp_path):
    with_one = load_sweep(write_sweep(tmp_path, SWEEP.replace("[grid]", "[grid]\nreplicates = 1")))
    (tmp_path / "plain").mkdir()
    assert with_one == load_sweep(write_sweep(tmp_path / "plain", SWEEP))


def test_a_sweep_with_replicates_runs_each_seed_and_records_the_seeds(tmp_path):
    runner = FakeRunner()
    out = tmp_path / "out"
    table = run_sweep(write_sweep(tmp_path, REPLICATED), out, runner=runner, progress=lambda line: None)
    rows = read_csv(table.path)
    assert all(row["status"] == "ok" for row in rows)
    assert [call["seed"] for call in runner.calls] == [42, 43, 44, 42, 43, 44, 10, 11]
    assert [row["seed"] for row in rows] == ["42", "43", "44", "42", "43", "44", "10", "11"]
    assert json.loads((out / "sweep.json").read_text())["grids"]["own-seed"] == {"strategy": "fedavg", "seed": [10, 11]}
    # resuming with the same file skips every cell
    again = FakeRunner()
    run_sweep(write_sweep(tmp_path, REPLICATED), out, runner=again, progress=lambda line: None)
    assert again.calls == []


def test_set_moves_the_first_seed_and_sets_the_replicates(tmp_path):
    base, grids = load_sweep(write_sweep(tmp_path, NAMED), {"seed": 5, "replicates": 2})
    assert base["seed"] == 5
    assert grids["ratio"]["seed"] == [5, 6] and grids["defense"]["seed"] == [5, 6]


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("[base]\nreplicates = 2.5\n[grid]\nstrategy = ['krum']\n", {}, "replicates: bad value 2.5 in [base];"),
        ("[base]\nreplicates = 0\n[grid]\nstrategy = ['krum']\n", {}, "replicates: bad value 0 in [base];"),
        ("[grid]\nstrategy = ['krum']\nreplicates = -1\n", {}, "replicates: bad value -1 in grid 'grid';"),
        ("[grid.a]\nstrategy = 'krum'\nreplicates = '3'\n", {}, "replicates: bad value '3' in grid 'a';"),
        ("[grid.a]\nstrategy = 'krum'\nreplicates = true\n", {}, "replicates: bad value True in grid 'a';"),
        ("[grid.a]\nstrategy = 'krum'\nreplicates = [1, 2]\n", {}, "replicates: bad value [1, 2] in grid 'a';"),
        (
            "[grid.a]\nseed = [1, 2]\nreplicates = 3\n",
            {},
            "replicates: grid 'a' sets it and grid 'a' lists seeds [1, 2];",
        ),
        (
            "[base]\nreplicates = 3\n[grid]\nseed = [1, 2]\n",
            {},
            "replicates: [base] sets it and grid 'grid' lists seeds [1, 2];",
        ),
        ("[grid]\nseed = [1, 2]\n", {"replicates": 2}, "replicates: --set sets it and grid 'grid' lists seeds [1, 2];"),
        ("[grid]\nstrategy = ['krum']\n", {"replicates": 0}, "replicates: bad value 0 in --set;"),
        ("[base]\nseed = 'x'\nreplicates = 2\n[grid]\nstrategy = ['krum']\n", {}, "seed: bad value 'x';"),
    ],
)
def test_bad_replicates_fail_in_one_line_before_any_cell_runs(tmp_path, text, overrides, expected):
    runner = FakeRunner()
    with pytest.raises(ConfigError) as caught:
        run_sweep(
            write_sweep(tmp_path, text),
            tmp_path / "out",
            runner=runner,
            progress=lambda line: None,
            overrides=overrides,
        )
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert runner.calls == [] and not (tmp_path / "out").exists()


def test_the_sweep_command_refuses_bad_replicates_with_exit_2(tmp_path, capsys):
    from fl_poison.cli import main

    sweep = write_sweep(tmp_path, "[base]\nreplicates = 0\n[grid]\nstrategy = ['krum']\n")
    code = main(["sweep", str(sweep), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith(
        "fl-poison: error: replicates: bad value 0 in [base]; allowed: an integer >= 1"
    )
    assert "\n" not in error and not (tmp_path / "out").exists()


def test_cells_keep_no_model_unless_the_sweep_file_asks_for_one(tmp_path):
    runner = FakeRunner()
    run_sweep(write_sweep(tmp_path), tmp_path / "out", runner=runner, progress=lambda line: None)
    assert [call["save-model"] for call in runner.calls] == [False] * 6
    keeping = FakeRunner()
    text = SWEEP.replace("num-clients = 8", "num-clients = 8\nsave-model = true")
    run_sweep(write_sweep(tmp_path, text), tmp_path / "kept", runner=keeping, progress=lambda line: None)
    assert [call["save-model"] for call in keeping.calls] == [True] * 6


def test_resume_from_the_committed_results_skips_cells_that_kept_only_rounds_csv(tmp_path):
    """The committed form of a sweep keeps sweep.csv and each cell's rounds.csv (summary.json is ignored by git)."""
    sweep, out = write_sweep(tmp_path), tmp_path / "out"
    run_sweep(sweep, out, runner=FakeRunner(), progress=lambda line: None)
    rows = read_csv(out / SWEEP_TABLE)
    for row in rows:
        folder = out / row["cell_id"]
        (folder / "summary.json").unlink()
        (folder / "rounds.csv").write_text("round,accuracy\n1,0.5\n")
    emptied = next(row for row in rows if row["strategy"] == "krum" and row["num-malicious"] == "2")
    (out / emptied["cell_id"] / "rounds.csv").unlink()

    again = FakeRunner()
    run_sweep(sweep, out, runner=again, progress=lambda line: None)
    assert [(call["strategy"], call["num-malicious"]) for call in again.calls] == [("krum", 2)]
    final = {(row["strategy"], row["num-malicious"]): row for row in read_csv(out / SWEEP_TABLE)}
    assert len(final) == 6 and all(row["status"] == "ok" for row in final.values())
    assert float(final[("krum", "1")]["accuracy"]) == pytest.approx(0.61)  # a skipped cell keeps its row


OVERLAPPING = """
[base]
num-rounds = 3
num-clients = 8

[grid.robust]
strategy = ["fedavg", "median"]
num-malicious = [0, 1]
"""


def test_reuse_copies_the_cells_another_sweep_finished_and_runs_only_the_others(tmp_path):
    first = tmp_path / "first"
    run_sweep(write_sweep(tmp_path), first, runner=FakeRunner(), progress=lambda line: None)
    (first / "extra.txt").write_text("a user's note, not a run's file")
    code = source_fingerprint()["sha256"]
    processor = processor_description()["signature"]
    same_code = next(
        row for row in read_csv(first / SWEEP_TABLE) if (row["strategy"], row["num-malicious"]) == ("fedavg", "0")
    )
    (first / same_code["cell_id"] / "config.json").write_text(
        json.dumps({"source": {"sha256": code}, "processor": {"signature": "another kind; AVX2"}})
    )
    lines: list[str] = []
    runner = FakeRunner()
    second = tmp_path / "second"
    overlapping = tmp_path / "overlapping.toml"
    overlapping.write_text(OVERLAPPING)
    run_sweep(overlapping, second, runner=runner, progress=lines.append, reuse=[first])

    assert sorted((call["strategy"], call["num-malicious"]) for call in runner.calls) == [("median", 0), ("median", 1)]
    # one copied cell ran this code on another processor, the other recorded neither
    assert (
        f"[sweep] reused 2 finished cell(s) of {first} (same cell ids: same settings; 1 of them ran other code"
        " than this sweep's and 2 another kind of processor than this machine's, counting those that did not"
        " record it, so a re-run here may give other numbers)"
    ) in lines
    rows = {(row["strategy"], row["num-malicious"]): row for row in read_csv(second / SWEEP_TABLE)}
    assert len(rows) == 4 and all(row["status"] == "ok" and row["grid"] == "robust" for row in rows.values())
    # FakeRunner's accuracy is 0.5 + 0.1 per attacker: the copied rows keep the first sweep's figures
    assert float(rows[("fedavg", "1")]["accuracy"]) == pytest.approx(0.6)
    assert float(rows[("fedavg", "0")]["wall_seconds"]) == pytest.approx(2.0)
    copied = second / rows[("fedavg", "1")]["cell_id"]
    assert copied.is_dir() and rows[("fedavg", "1")]["folder"] == str(copied)
    original = first / rows[("fedavg", "1")]["cell_id"]
    assert (copied / "summary.json").read_text() == (original / "summary.json").read_text()
    assert (
        (copied / CELL_LOG)
        .read_text()
        .endswith(
            f"reused from: {original} (its code: not recorded; this sweep's: {code}; "
            f"its processor: not recorded; this machine's: {processor})\n"
        )
    )
    matching = second / same_code["cell_id"]
    assert (
        (matching / CELL_LOG)
        .read_text()
        .endswith(
            f"reused from: {first / same_code['cell_id']} (its code: {code}; this sweep's: {code}; "
            f"its processor: another kind; AVX2; this machine's: {processor})\n"
        )
    )
    assert not (second / "extra.txt").exists()

    again = FakeRunner()
    run_sweep(overlapping, second, runner=again, progress=lambda line: None, reuse=[first])
    assert again.calls == []  # resumed: every cell, copied or run, is finished


def test_reused_cells_of_this_code_on_this_kind_of_processor_are_the_same_runs(tmp_path):
    first = tmp_path / "first"
    run_sweep(write_sweep(tmp_path), first, runner=FakeRunner(), progress=lambda line: None)
    here = {
        "source": {"sha256": source_fingerprint()["sha256"]},
        "processor": {"signature": processor_description()["signature"]},
    }
    for row in read_csv(first / SWEEP_TABLE):
        (first / row["cell_id"] / "config.json").write_text(json.dumps(here))
    overlapping = tmp_path / "overlapping.toml"
    overlapping.write_text(OVERLAPPING)
    lines: list[str] = []
    run_sweep(overlapping, tmp_path / "second", runner=FakeRunner(), progress=lines.append, reuse=[first])
    assert (
        f"[sweep] reused 2 finished cell(s) of {first} (same cell ids, code and kind of processor: same runs)" in lines
    )


def test_reuse_from_the_committed_form_takes_the_metrics_from_the_other_sweep_csv(tmp_path):
    """A clone holds sweep.csv and rounds.csv only: the copied row's figures come from the other table."""
    first = tmp_path / "first"
    run_sweep(write_sweep(tmp_path), first, runner=FakeRunner(), progress=lambda line: None)
    for row in read_csv(first / SWEEP_TABLE):
        (first / row["cell_id"] / "summary.json").unlink()
        (first / row["cell_id"] / "rounds.csv").write_text("round,accuracy\n1,0.5\n")
    unfinished = next(
        row for row in read_csv(first / SWEEP_TABLE) if row["strategy"] == "fedavg" and row["num-malicious"] == "0"
    )
    (first / unfinished["cell_id"] / "rounds.csv").unlink()
    overlapping = tmp_path / "overlapping.toml"
    overlapping.write_text(OVERLAPPING)
    runner = FakeRunner()
    run_sweep(overlapping, tmp_path / "second", runner=runner, progress=lambda line: None, reuse=[first])

    ran = sorted((call["strategy"], call["num-malicious"]) for call in runner.calls)
    assert ran == [("fedavg", 0), ("median", 0), ("median", 1)]  # a cell without its results is run again
    rows = {(row["strategy"], row["num-malicious"]): row for row in read_csv(tmp_path / "second" / SWEEP_TABLE)}
    assert float(rows[("fedavg", "1")]["accuracy"]) == pytest.approx(0.6)
    assert (
        tmp_path / "second" / rows[("fedavg", "1")]["cell_id"] / "rounds.csv"
    ).read_text() == "round,accuracy\n1,0.5\n"


PLANNED = """
[base]
num-rounds = 3
num-clients = 8

[grid.slow]
strategy = ["krum"]
num-malicious = [0, 1, 2]

[grid.fast]
strategy = ["fedavg"]
num-malicious = [0, 1, 2, 3]
"""


class TimedRunner(FakeRunner):
    """A FakeRunner whose runs report ``wall_seconds``: Krum 100 s per attacker + 100, FedAvg 10 s."""

    def __call__(self, settings: dict[str, object], cpus: float, gpus: float, verbose: bool) -> Path:
        folder = super().__call__(settings, cpus, gpus, verbose)
        seconds = 100.0 * (1 + int(str(settings["num-malicious"]))) if settings["strategy"] == "krum" else 10.0
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "wall_seconds": seconds}))
        return folder


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time (what a dry run must leave alone)."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


def test_a_dry_run_lists_the_cells_left_and_estimates_their_time_per_grid_writing_nothing(tmp_path):
    from experiments.sweep import plan_sweep

    sweep, out = write_sweep(tmp_path, PLANNED), tmp_path / "out"
    run_sweep(sweep, out, runner=TimedRunner(fail_when={"num-malicious": 2}), progress=lambda line: None)
    before = folder_state(out)
    lines: list[str] = []
    planned = plan_sweep(sweep, out, progress=lines.append)
    assert folder_state(out) == before
    assert sorted((cell.values["strategy"], cell.values["num-malicious"]) for cell in planned) == [
        ("fedavg", 2),
        ("krum", 2),
    ]
    assert lines[0] == (
        "[sweep] plan: 7 cells in 2 grid(s), 5 already done, 0 to copy from --reuse, 2 to run, 1 at a time (nothing written)"
    )
    assert lines[1:3] == [f"[sweep] would run {cell.cell_id} {cell.values}" for cell in planned]
    # the Krum cell at the median of its grid's finished cells (100 s, 200 s: 150 s), the FedAvg one at 10 s;
    # over all grids the median of 100, 200, 10, 10, 10 is 10 s
    assert lines[3] == (
        "[sweep] about 2m40s for the 2 left, 1 at a time, at the median wall seconds of this folder's finished "
        "cells of the same grid (0m10s over all grids)"
    )
    # what the plan lists is what the sweep then runs
    runner = FakeRunner()
    run_sweep(sweep, out, runner=runner, progress=lambda line: None)
    assert sorted((call["strategy"], call["num-malicious"]) for call in runner.calls) == [("fedavg", 2), ("krum", 2)]


def test_a_dry_run_creates_no_folder_counts_reused_cells_and_refuses_what_the_sweep_refuses(tmp_path, capsys):
    from fl_poison.cli import main

    first = tmp_path / "first"
    run_sweep(write_sweep(tmp_path), first, runner=FakeRunner(), progress=lambda line: None)
    overlapping, fresh = tmp_path / "overlapping.toml", tmp_path / "fresh"
    overlapping.write_text(OVERLAPPING)
    code = main(["sweep", str(overlapping), "--out", str(fresh), "--reuse", str(first), "--dry-run"])
    printed = capsys.readouterr().out.splitlines()
    # fedavg with 0 and 1 attackers are cells of the first sweep; median is new; no finished cell: no estimate
    assert code == 0 and not fresh.exists()
    assert printed[0].startswith("[sweep] plan: 4 cells in 1 grid(s), 0 already done, 2 to copy from --reuse, 2 to run")
    assert len(printed) == 3 and all("'median'" in line for line in printed[1:])
    # a folder holding another sweep, and a bad --jobs: one line, exit 2, nothing written
    before = folder_state(first)
    assert main(["sweep", str(overlapping), "--out", str(first), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("fl-poison: error: --out:") and folder_state(first) == before
    assert main(["sweep", str(overlapping), "--out", str(fresh), "--jobs", "0", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "fl-poison: error: --jobs: bad value 0; allowed: an integer >= 1"
    assert main(["sweep", str(overlapping), "--out", str(fresh), "--gpus-per-client", "2", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("fl-poison: error: --gpus-per-client: bad value 2.0;")
    assert not fresh.exists()


def test_output_cut_short_by_its_reader_ends_the_command_quietly(tmp_path):
    """``fl-poison sweep --dry-run | head -1``: the reader leaves, the command exits 141 (SIGPIPE) without a traceback."""
    import signal
    import subprocess
    import sys

    sweep = write_sweep(
        tmp_path, f"[grid]\nseed = {list(range(1, 2001))}\n"
    )  # ~130 kB of lines: more than a pipe holds
    command = [sys.executable, "-m", "fl_poison.cli", "sweep", str(sweep), "--out", str(tmp_path / "out"), "--dry-run"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    error = process.stderr.read()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    assert first.startswith(b"[sweep] plan: 2000 cells") and error == b""
