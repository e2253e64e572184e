"""Seed-study comparisons computed from hand-made sweep folders (numbers chosen to check by hand).

Findings are judged by the 95 % t interval over seeds of the difference they are about; the t
quantiles below are literals from a t table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.seed_studies import (
    AGREES,
    DIFFERS,
    INCONCLUSIVE,
    NOT_MEASURED,
    SEED000_ACCURACY,
    combine,
    judge,
    last_rounds_mean,
    main,
    max_from,
    round_rows,
    write_comparison,
)
from experiments.statistics import Summary, summarize
from fl_poison.core.results import read_csv, write_csv
from fl_poison.core.round_log import CLIENT_COLUMNS

SETTING_COLUMNS = [
    "strategy",
    "partitioning",
    "num-malicious",
    "attack",
    "update-attack",
    "ada-knowledge",
    "target-class",
    "clients-per-round",
    "num-clients",
    "poison-rate",
    "attacker-epochs",
    "seed",
]
T_975_2 = 4.302653  # t quantile 0.975 with 2 degrees of freedom: the 95 % interval over 3 seeds


def make_sweep(
    root: Path,
    cells: list[dict[str, object]],
    prefix: str = "cell",
    cell_files: bool = True,
    definition: dict[str, object] | None = None,
) -> Path:
    """A sweep folder: one ok cell per entry, each with its rounds and (with ``cell_files``) clients and a config.json.

    ``definition`` is written as the folder's ``sweep.json`` (the committed results keep it, but
    not the cells' ``config.json`` and ``clients.csv``).
    """
    rows = []
    for index, cell in enumerate(cells):
        folder = root / f"{prefix}{index}"
        folder.mkdir(parents=True)
        if cell_files:
            settings = {"attack-start-round": cell.get("start", 1)}
            (folder / "config.json").write_text(json.dumps({"settings": settings}))
            write_csv(folder / "clients.csv", cell.get("clients", []), CLIENT_COLUMNS)
        rounds = cell["rounds"]
        columns = ["round", *sorted({key for entry in rounds for key in entry if key != "round"})]
        write_csv(folder / "rounds.csv", [{"round": 0, "accuracy": 0.1}, *rounds], columns)
        final = rounds[-1]
        rows.append(
            {
                **cell["values"],
                "cell_id": f"{prefix}{index}",
                "grid": cell.get("grid", "grid"),
                "status": "ok",
                "folder": str(folder),
                "accuracy": final.get("accuracy", ""),
                "asr": final.get("asr", ""),
                "macro_f1": 0.5,
            }
        )
    rows.append({"status": "failed", "folder": str(root / "missing"), "grid": "grid"})
    write_csv(
        root / "sweep.csv",
        rows,
        ["cell_id", "grid", *SETTING_COLUMNS, "status", "accuracy", "asr", "macro_f1", "folder"],
    )
    if definition is not None:
        (root / "sweep.json").write_text(json.dumps(definition))
    return root


def findings_of(text: str) -> list[str]:
    """The finding lines of a comparison.md."""
    return [line for line in text.splitlines() if line.startswith("- ")]


def final_only(accuracy: float) -> list[dict[str, object]]:
    return [{"round": 1, "accuracy": accuracy}]


def test_max_from_and_last_rounds_mean_by_hand(tmp_path):
    rounds = [
        {"round": r, "asr": value} for r, value in zip(range(1, 8), [0.9, 0.1, 0.2, "", 0.4, 0.5, 0.3], strict=True)
    ]
    make_sweep(tmp_path, [{"values": {}, "rounds": rounds}])
    history = round_rows(read_csv(tmp_path / "sweep.csv")[0])
    assert max_from(history, "asr", 2) == pytest.approx(0.5)
    assert max_from(history, "asr", 1) == pytest.approx(0.9)
    # last 5 rounds: 0.2, (blank), 0.4, 0.5, 0.3 -> mean of the four numbers
    assert last_rounds_mean(history, "asr") == pytest.approx((0.2 + 0.4 + 0.5 + 0.3) / 4)


def test_the_verdict_rule_on_constructed_intervals():
    def interval(low: float, high: float) -> Summary:
        return Summary(3, (low + high) / 2, 0.05, low, high, low, high)

    assert judge(interval(0.01, 0.2), 1) == AGREES  # the finding's sign, 0 excluded
    assert judge(interval(0.01, 0.2), -1) == DIFFERS  # the other sign, 0 excluded
    assert judge(interval(-0.2, -0.01), -1) == AGREES
    assert judge(interval(-0.05, 0.2), 1) == INCONCLUSIVE  # contains 0
    assert judge(interval(-0.05, 0.2), -1) == INCONCLUSIVE
    assert judge(summarize([0.5]), 1) == INCONCLUSIVE  # one pair: no interval, however large the difference
    assert judge(summarize([]), 1) == NOT_MEASURED
    # 0.1, 0.2, 0.3: 0.2 ± 4.302653 · 0.1 / √3 = [-0.048, 0.448] contains 0; 0.2, 0.3, 0.4: [0.052, 0.548] does not
    assert judge(summarize([0.1, 0.2, 0.3]), 1) == INCONCLUSIVE
    assert judge(summarize([0.2, 0.3, 0.4]), 1) == AGREES
    assert judge(summarize([-0.2, -0.3, -0.4]), 1) == DIFFERS
    with pytest.raises(ValueError):
        judge(interval(0.01, 0.2), 0)


def test_a_finding_of_several_claims_agrees_only_when_each_does():
    assert combine([AGREES, AGREES]) == AGREES
    assert combine([AGREES, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([AGREES, DIFFERS]) == DIFFERS
    assert combine([INCONCLUSIVE, DIFFERS]) == DIFFERS
    assert combine([AGREES, NOT_MEASURED]) == NOT_MEASURED


SEED000 = {
    ("fedavg", "iid", 0): 0.97,
    ("fedavg", "iid", 1): 0.95,
    ("fedavg", "iid", 2): 0.90,
    ("fedavg", "dirichlet", 0): 0.96,
    ("fedavg", "dirichlet", 1): 0.90,
    ("fedavg", "dirichlet", 2): 0.70,
    ("loss-filter", "dirichlet", 1): 0.93,
    ("loss-filter", "dirichlet", 2): 0.75,
    ("loss-filter", "iid", 1): 0.951,
    ("loss-filter", "iid", 2): 0.89,
}
SEED_SHIFT = {1: 0.0, 2: 0.01, 3: -0.01}  # every cell of a seed moves alike: differences do not scatter
FEDPROX_DIRICHLET_2 = {1: 0.80, 2: 0.65, 3: 0.74}  # against FedAvg 0.70 / 0.71 / 0.69: +0.10, -0.06, +0.05


def seed000_cells(seeds: tuple[int, ...] = (1, 2, 3)) -> list[dict[str, object]]:
    cells = []
    for seed in seeds:
        accuracy = {key: value + SEED_SHIFT[seed] for key, value in SEED000.items()}
        accuracy[("fedprox", "dirichlet", 2)] = FEDPROX_DIRICHLET_2[seed]
        cells += [
            {
                "values": {"strategy": s, "partitioning": p, "num-malicious": n, "seed": seed},
                "rounds": final_only(round(a, 6)),
            }
            for (s, p, n), a in accuracy.items()
        ]
    return cells


def test_seed000_table_and_findings_over_three_seeds(tmp_path):
    make_sweep(tmp_path, seed000_cells())
    text = write_comparison("seed000", tmp_path, tmp_path / "out").read_text()
    table = read_csv(tmp_path / "out" / "comparison.csv")
    assert len(table) == len(SEED000) + 1
    fedavg_dir2 = next(
        r for r in table if (r["strategy"], r["partitioning"], r["attackers"]) == ("fedavg", "dirichlet", "2")
    )
    # 0.70, 0.71, 0.69: mean 0.70, sd 0.01, 0.70 ± 4.302653 · 0.01 / √3
    assert fedavg_dir2["seeds"] == "3"
    assert float(fedavg_dir2["accuracy"]) == pytest.approx(0.70)
    assert float(fedavg_dir2["accuracy_std"]) == pytest.approx(0.01)
    assert float(fedavg_dir2["accuracy_ci_low"]) == pytest.approx(0.70 - T_975_2 * 0.01 / 3**0.5, abs=1e-6)
    assert float(fedavg_dir2["accuracy_ci_high"]) == pytest.approx(0.70 + T_975_2 * 0.01 / 3**0.5, abs=1e-6)
    assert float(fedavg_dir2["seed000_cifar10_accuracy"]) == SEED000_ACCURACY[("fedavg", "dirichlet", 2)] == 0.424
    assert "| fedavg | dirichlet | 2 | 3 | 0.700 ± 0.010 [0.675, 0.725] |" in text
    findings = findings_of(text)
    # drops: IID 0.02 -> 0.07, non-IID 0.06 -> 0.26 in every seed: grows with attackers, non-IID worse
    assert "0.020 → 0.070" in findings[0] and findings[0].endswith("**agrees**")
    assert "(FedAvg drop non-IID 0.260 vs IID 0.070" in findings[1] and findings[1].endswith("**agrees**")
    # FedProx - FedAvg per seed: +0.10, -0.06, +0.05 -> +0.030, sd 0.081854, half width 4.302653 · 0.081854 / √3 = 0.203
    assert "(FedProx 0.730 vs FedAvg 0.700" in findings[2]
    assert "difference +0.030 [-0.173, +0.233] (3 seeds)" in findings[2] and findings[2].endswith("**inconclusive**")
    # loss filter gains on dirichlet +0.03 / +0.05 in every seed: helps, as in the seed document
    assert "0.030 / 0.050" in findings[3] and findings[3].endswith("**agrees**")
    # on iid +0.001 / -0.010 in every seed: the +0.001 is a (tiny) gain, so "does not help" is contradicted
    assert "0.001 / -0.010" in findings[4] and findings[4].endswith("**differs**")


def test_seed000_with_one_seed_is_inconclusive(tmp_path):
    make_sweep(tmp_path, seed000_cells(seeds=(1,)))
    findings = findings_of(write_comparison("seed000", tmp_path, tmp_path).read_text())
    assert "0.020 → 0.070" in findings[0] and "growth of the drop IID +0.050 (1 seed, no CI)" in findings[0]
    assert all(finding.endswith("**inconclusive**") for finding in findings)
    assert "| fedavg | dirichlet | 2 | 1 | 0.700 (1 seed, no CI) |" in (tmp_path / "comparison.md").read_text()


def test_seed001_findings_use_the_last_rounds_over_seeds(tmp_path):
    def cell(grid, attack, n, strategy, asr_values, seed, cpr=5):
        rounds = [{"round": r + 1, "asr": a, "accuracy": 0.9} for r, a in enumerate(asr_values)]
        values = {"attack": attack, "num-malicious": n, "strategy": strategy, "clients-per-round": cpr, "seed": seed}
        return {"grid": grid, "values": values, "rounds": rounds}

    ratio = {1: (0.1, 0.3, 0.7), 2: (0.12, 0.35, 0.6), 3: (0.08, 0.25, 0.8)}
    blend3 = {1: 0.4, 2: 0.9, 3: 0.2}
    clipped = {1: 0.004, 2: 0.003, 3: 0.005}
    cells = []
    for seed in (1, 2, 3):
        one, two, three = ratio[seed]
        # seed 1's blend with 3: the last five of [0.9, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9] = 0.7 (the 0.9, 0.1 come first)
        three_rounds = [0.9, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9] if seed == 1 else [three] * 6
        cells += [
            cell("blend-ratio;fedavg-vs-krum", "blend", 1, "fedavg", [0.0] * 5 + [one] * 5, seed),
            cell("blend-ratio", "blend", 2, "fedavg", [two] * 10, seed),
            cell("blend-ratio", "blend", 3, "fedavg", three_rounds, seed),
            cell("fedavg-vs-krum", "blend", 1, "krum", [0.02] * 6, seed),
            cell("dba-vs-blend", "dba", 3, "fedavg", [1.0] * 6, seed, 6),
            cell("dba-vs-blend", "blend", 3, "fedavg", [blend3[seed]] * 6, seed, 6),
            cell("scaling-vs-clipping", "blend", 1, "fedavg", [1.0] * 6, seed),
            cell("scaling-vs-clipping", "blend", 1, "norm-clip", [clipped[seed]] * 6, seed),
        ]
    make_sweep(tmp_path, cells)
    findings = findings_of(write_comparison("seed001", tmp_path, tmp_path).read_text())
    # 1 → 2: +0.2, +0.23, +0.17 (mean 0.2, sd 0.03); 2 → 3: +0.4, +0.25, +0.55 (mean 0.4, sd 0.15,
    # half width 4.302653 · 0.15 / √3 = 0.373): both intervals above 0
    assert "0.100 / 0.300 / 0.700" in findings[0]
    assert "2 → 3 +0.400 [+0.027, +0.773] (3 seeds)" in findings[0] and findings[0].endswith("**agrees**")
    # FedAvg - Krum +0.08 / +0.10 / +0.06 and Krum - 0.1 = -0.08 in every seed
    assert "ASR FedAvg 0.100, Krum 0.020" in findings[1] and findings[1].endswith("**agrees**")
    # DBA - blend: +0.6, +0.1, +0.8: mean 0.5, sd 0.360555, half width 0.896: contains 0
    assert "(ASR 1.000 vs 0.500" in findings[2] and "+0.500 [-0.396, +1.396] (3 seeds)" in findings[2]
    assert findings[2].endswith("**inconclusive**")
    # clipped ASR 0.004 on average: far below the 0.5 the document's finding needs
    assert "clipped 0.004" in findings[3] and findings[3].endswith("**differs**")
    table = read_csv(tmp_path / "comparison.csv")
    blend_three = next(row for row in table if row["grid"] == "dba-vs-blend" and row["attack"] == "blend")
    assert blend_three["seeds"] == "3" and float(blend_three["asr_last5"]) == pytest.approx(0.5)
    assert float(blend_three["asr_last5_std"]) == pytest.approx(0.13**0.5)


def test_seed004_takes_the_maximum_after_the_attack_starts_and_averages_targets(tmp_path):
    def cell(attack, update, knowledge, n, target, ata_values, mta_values, chosen=()):
        rounds = [
            {"round": r + 1, "ts_ata": a, "mta": m} for r, (a, m) in enumerate(zip(ata_values, mta_values, strict=True))
        ]
        values = {
            "attack": attack,
            "update-attack": update,
            "ada-knowledge": knowledge,
            "num-malicious": n,
            "num-clients": 100,
            "target-class": target,
        }
        clients = [{"round": 3, "partition_id": 7, "malicious": 1, "attacked": 1, "attack_target": c} for c in chosen]
        clients.append({"round": 2, "partition_id": 1, "malicious": 0, "attacked": 0, "attack_target": -1})
        return {"values": values, "rounds": rounds, "start": 3, "clients": clients}

    cells = [
        # the 0.99 in round 1 comes before the attack starts (round 3) and must not count
        cell("label-flip", "none", "full", 1, 1, [0.99, 0.0, 0.1, 0.2], [0.9, 0.95, 0.9, 0.9]),
        cell("label-flip", "none", "full", 1, 5, [0.0, 0.0, 0.4, 0.0], [0.9, 0.9, 0.97, 0.9]),
        cell("label-flip", "train-and-scale", "full", 1, 1, [0.0, 0.0, 0.05, 0.0], [0.9] * 4),
        cell("ada", "auto", "full", 1, 0, ["", "", 0.5, 0.6], [0.9] * 4, chosen=(3,)),
        cell("ada", "auto", "partial", 1, 0, ["", "", 0.7, 0.1], [0.9] * 4, chosen=(8, 1)),
        cell("none", "auto", "full", 0, 0, [""] * 4, [0.9] * 4),
    ]
    # the study spans two folders (as seed004 and seed004-more-targets do)
    make_sweep(tmp_path / "a", [cells[0], *cells[2:]])
    make_sweep(tmp_path / "b", [cells[1]], prefix="other")
    text = write_comparison("seed004", [tmp_path / "a", tmp_path / "b"], tmp_path).read_text()
    assert "ada-full chose target class(es) 3" in text and "ada-partial chose target class(es) 1, 8" in text
    assert "rounds.png" not in text and not (tmp_path / "rounds.png").exists()  # no cell at ε = 0.1
    assert "label-flip at ε = 0.01, ATA per target (1: 0.200, 5: 0.400); best target 5" in text
    table = {(r["method"], r["fraction"]): r for r in read_csv(tmp_path / "comparison.csv")}
    lf = table[("label-flip", "0.01")]
    assert float(lf["ata"]) == pytest.approx((0.2 + 0.4) / 2) and lf["cells"] == "2"
    assert float(lf["mta"]) == pytest.approx((0.95 + 0.97) / 2)
    assert float(lf["paper_mnist_ata"]) == 0.081
    assert float(table[("ada-full", "0.01")]["ata"]) == pytest.approx(0.6)
    assert float(table[("ada-partial", "0.01")]["ata"]) == pytest.approx(0.7)
    assert table[("clean", "0.0")]["seeds"] == "1" and table[("clean", "0.0")]["ata"] == ""  # no ATA without an attack
    assert lf["seeds"] == "1" and lf["ata_std"] == "" and lf["ata_ci_low"] == ""  # one seed (the default 42)
    # ADA-full 0.6 vs LF 0.3 at ε = 0.01, but with one seed there is no interval
    ada_vs_lf = next(line for line in findings_of(text) if line.startswith("- ε = 0.01: ADA-full ATA above LF"))
    assert "difference +0.300 (1 seed, no CI)" in ada_vs_lf and ada_vs_lf.endswith("**inconclusive**")


def test_seed004_over_seeds_from_committed_files_only(tmp_path):
    """Targets averaged seed by seed, then over seeds; attack start from sweep.json (no config.json, no clients.csv)."""

    def cell(attack, update, knowledge, target, seed, ata):
        values = {
            "attack": attack,
            "update-attack": update,
            "ada-knowledge": knowledge,
            "num-malicious": 1,
            "target-class": target,
            "seed": seed,
        }
        # round 1 is before the attack starts (round 2, from sweep.json) and must not count
        return {
            "values": values,
            "rounds": [{"round": 1, "ts_ata": 0.99, "mta": 0.9}, {"round": 2, "ts_ata": ata, "mta": 0.9}],
        }

    cells = [
        cell("label-flip", "none", "full", 1, 1, 0.2),
        cell("label-flip", "none", "full", 5, 1, 0.4),
        cell("label-flip", "none", "full", 1, 2, 0.1),
        cell("label-flip", "none", "full", 5, 2, 0.3),
        cell("ada", "auto", "full", 0, 1, 0.5),
        cell("ada", "auto", "full", 0, 2, 0.6),
    ]
    definition = {"base": {"attack-start-round": 2, "num-clients": 100}, "grids": {"grid": {}}}
    make_sweep(tmp_path, cells, cell_files=False, definition=definition)
    text = write_comparison("seed004", tmp_path, tmp_path).read_text()
    table = {(r["method"], r["fraction"]): r for r in read_csv(tmp_path / "comparison.csv")}
    lf = table[("label-flip", "0.01")]
    # per seed over targets: seed 1 (0.2 + 0.4) / 2 = 0.3, seed 2 (0.1 + 0.3) / 2 = 0.2; over seeds 0.25 ± 0.070711
    assert lf["cells"] == "4" and lf["seeds"] == "2"
    assert float(lf["ata"]) == pytest.approx(0.25) and float(lf["ata_std"]) == pytest.approx(0.1 / 2**0.5)
    # ADA - LF per seed: 0.5 - 0.3, 0.6 - 0.2 -> +0.3, sd 0.141421, half width 12.706205 · 0.1 = 1.271
    ada_vs_lf = next(line for line in findings_of(text) if line.startswith("- ε = 0.01: ADA-full ATA above LF"))
    assert "difference +0.300 [-0.971, +1.571] (2 seeds)" in ada_vs_lf and ada_vs_lf.endswith("**inconclusive**")
    assert "ada-full: the target classes it chose are not recorded here" in text
    assert "label-flip at ε = 0.01, ATA per target (1: 0.150, 5: 0.350); best target 5" in text


def test_seed004_names_adas_targets_from_rounds_csv_when_clients_csv_was_not_kept(tmp_path):
    def ada_cell(seed, targets):
        values = {"attack": "ada", "update-attack": "auto", "ada-knowledge": "full", "num-malicious": 1, "seed": seed}
        rounds = [
            {"round": r + 1, "ts_ata": 0.5, "mta": 0.9, "ts_ata_target": target} for r, target in enumerate(targets)
        ]
        return {"values": values, "rounds": rounds}

    # -1: no target reported yet (before the attack); the set over rounds and seeds is {4, 6}
    cells = [ada_cell(1, [-1, 6, 6]), ada_cell(2, [-1, 4, 6])]
    definition = {"base": {"attack-start-round": 2, "num-clients": 100}, "grids": {"grid": {}}}
    make_sweep(tmp_path, cells, cell_files=False, definition=definition)
    text = write_comparison("seed004", tmp_path, tmp_path).read_text()
    assert "ada-full chose target class(es) 4, 6" in text
    assert "not recorded here" not in text


@pytest.mark.parametrize(
    ("partial_ata", "pair_text", "pair_verdict", "headline"),
    [
        # ADA-partial - TS per seed: 0.3, 0.35, 0.25: mean 0.3, sd 0.05, half width 4.302653 * 0.05 / sqrt(3) = 0.124
        ((0.5, 0.6, 0.55), "+0.300 [+0.176, +0.424] (3 seeds)", "agrees", "agrees"),
        # -0.15, -0.2, -0.2: mean -0.18333, sd 0.028868, half width 0.0717
        ((0.05, 0.05, 0.1), "-0.183 [-0.255, -0.112] (3 seeds)", "differs", "differs"),
    ],
)
def test_seed004_headline_needs_both_ada_variants_above_both_baselines(
    tmp_path, partial_ata, pair_text, pair_verdict, headline
):
    def cell(attack, update, knowledge, seed, ata):
        values = {
            "attack": attack,
            "update-attack": update,
            "ada-knowledge": knowledge,
            "num-malicious": 10,
            "target-class": 1,
            "seed": seed,
        }
        return {"values": values, "rounds": [{"round": 1, "ts_ata": ata, "mta": 0.9}]}

    seeds = (1, 2, 3)
    groups = {
        ("label-flip", "none", "full"): (0.1, 0.2, 0.15),
        ("label-flip", "train-and-scale", "full"): (0.2, 0.25, 0.3),
        ("ada", "auto", "full"): (0.6, 0.7, 0.65),
        ("ada", "auto", "partial"): partial_ata,
    }
    cells = [cell(*group, seed, ata) for group, atas in groups.items() for seed, ata in zip(seeds, atas, strict=True)]
    make_sweep(tmp_path, cells, cell_files=False, definition={"base": {"num-clients": 100}, "grids": {"grid": {}}})
    findings = findings_of(write_comparison("seed004", tmp_path, tmp_path).read_text())
    tenth = [line for line in findings if line.startswith("- ε = 0.1: ")]
    assert len(tenth) == 6  # two ADA variants x two baselines, the headline, then LF vs TS
    # LF - TS per seed: -0.1, -0.05, -0.15: mean -0.1, sd 0.05, half width 4.302653 * 0.05 / sqrt(3) = 0.124
    assert tenth[-1] == (
        "- ε = 0.1: LF ATA above TS ATA, Table I's ordering (0.150 vs 0.250; paper MNIST 0.912 vs 0.678; "
        "difference -0.100 [-0.224, +0.024] (3 seeds)): **inconclusive**"
    )
    tenth = tenth[:-1]
    # ADA-full - LF: 0.5 in every seed (no spread, the interval is the point)
    assert tenth[0].startswith("- ε = 0.1: ADA-full ATA above LF ATA (0.650 vs 0.150") and tenth[0].endswith(
        "**agrees**"
    )
    partial_vs_ts = next(line for line in tenth if "ADA-partial ATA above TS ATA" in line)
    assert pair_text in partial_vs_ts and partial_vs_ts.endswith(f"**{pair_verdict}**")
    assert "the paper's headline" in tenth[-1] and tenth[-1].endswith(f"**{headline}**")
    lower = [line for line in findings if line.startswith("- ε = 0.01: the paper's headline")]
    assert lower and lower[0].endswith("**not measured**")
    # no clean run: nothing to hold the accuracy against
    intact = next(line for line in findings if "leave the main task intact" in line)
    assert intact.endswith("**not measured**") and not any(line.startswith("- Without an attack") for line in findings)
    # Tables I–II laid out as the paper does: ADA-full's ATA over seeds 0.65 ± 0.05, half width
    # 4.302653 · 0.05 / sqrt(3) = 0.124; the cells at ε = 0.01 / 0.05 were not run
    text = (tmp_path / "comparison.md").read_text()
    assert "| ADA-full (Table I) | not run / 0.387 | not run / 0.832 | 0.650 ± 0.050 [0.526, 0.774] / 0.968 |" in text
    assert "| LF (Table I) | not run / 0.990 | not run / 0.990 | 0.900 ± 0.000 [0.900, 0.900] / 0.989 |" in text
    # the per-round figure is drawn for the ε = 0.1 cells
    assert "![rounds](rounds.png)" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "rounds.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("lf_accuracy", "lf_text", "verdict"),
    [
        # LF accuracy − clean + 0.01 per seed: +0.005, −0.005, +0.005: mean 0.001667, sd 0.005774,
        # half width 4.302653 · 0.005774 / sqrt(3) = 0.014343
        (
            (0.945, 0.945, 0.965),
            "lowest 0.952 (label-flip; its accuracy − clean + 0.01: +0.002 [-0.013, +0.016] (3 seeds))",
            INCONCLUSIVE,
        ),
        # −0.04 in every seed: the interval is the point, below 0
        (
            (0.90, 0.91, 0.92),
            "lowest 0.910 (label-flip; its accuracy − clean + 0.01: -0.040 [-0.040, -0.040] (3 seeds))",
            DIFFERS,
        ),
    ],
)
def test_seed004_clean_run_is_the_baseline_of_the_main_task_and_of_the_ata(tmp_path, lf_accuracy, lf_text, verdict):
    """The clean run's row, the accuracy-within-1-point finding paired by seed, and the clean model's own source-class error."""

    def cell(attack, update, malicious, seed, rounds):
        values = {
            "attack": attack,
            "update-attack": update,
            "ada-knowledge": "full",
            "num-malicious": malicious,
            "target-class": 1,
            "seed": seed,
        }
        return {"values": values, "rounds": rounds}

    def clean_rounds(best, source_accuracy):
        # round 1 comes before the attack (round 2): its source-class error (0.5) must not count, its accuracy does
        return [
            {"round": 1, "accuracy": 0.90, "class_2_accuracy": 0.50},
            {"round": 2, "accuracy": best, "class_2_accuracy": source_accuracy},
            {"round": 3, "accuracy": 0.94, "class_2_accuracy": 0.99},
        ]

    def attacked_rounds(best, ata):
        return [
            {"round": 1, "accuracy": 0.5, "ts_ata": "", "mta": 0.95},
            {"round": 2, "accuracy": best, "ts_ata": ata, "mta": 0.96},
        ]

    cells = [
        cell("none", "auto", 0, seed, clean_rounds(best, source))
        for seed, best, source in ((1, 0.95, 0.97), (2, 0.96, 0.96), (3, 0.97, 0.98))
    ]
    cells += [
        cell("label-flip", "none", 10, seed, attacked_rounds(best, 0.02))
        for seed, best in zip((1, 2, 3), lf_accuracy, strict=True)
    ]
    # ADA-full's accuracy − clean + 0.01 is +0.01 in every seed
    cells += [
        cell("ada", "auto", 10, seed, attacked_rounds(best, 0.5)) for seed, best in ((1, 0.96), (2, 0.97), (3, 0.98))
    ]
    definition = {"base": {"attack-start-round": 2, "num-clients": 100}, "grids": {"grid": {}}}
    make_sweep(tmp_path, cells, cell_files=False, definition=definition)
    text = write_comparison("seed004", tmp_path, tmp_path).read_text()
    rows = read_csv(tmp_path / "comparison.csv")
    clean = rows[0]  # the baseline comes first
    assert (clean["method"], clean["fraction"], clean["cells"], clean["seeds"]) == ("clean", "0.0", "3", "3")
    assert float(clean["accuracy"]) == pytest.approx(0.96) and float(clean["accuracy_std"]) == pytest.approx(0.01)
    assert clean["ata"] == clean["mta"] == clean["paper_mnist_ata"] == ""
    lf = next(row for row in rows if row["method"] == "label-flip")
    assert float(lf["accuracy"]) == pytest.approx(sum(lf_accuracy) / 3) and float(lf["mta"]) == pytest.approx(0.96)
    intact = next(line for line in findings_of(text) if "leave the main task intact at ε = 0.1" in line)
    assert "within 1 point of the clean run's (0.960)" in intact and "MTA range 0.960–0.960" in intact
    assert lf_text in intact and intact.endswith(f"**{verdict}**")
    # the clean model's source-class error from round 2 on: max(0.03, 0.01), max(0.04, 0.01), max(0.02, 0.01)
    # -> 0.03 ± 0.01, half width 4.302653 · 0.01 / sqrt(3) = 0.024842; only ADA's ATA (0.5) lies above it
    error = next(line for line in findings_of(text) if line.startswith("- Without an attack"))
    assert "misclassifies 0.030 ± 0.010 [0.005, 0.055] of the source class's test images" in error
    assert error.endswith("Mean ATA above that: ada-full at ε = 0.1 (0.500)")


def test_seed004_sensitivity_by_hand(tmp_path):
    """Max-after-start ATA per (attack, α, attacker epochs) over three seeds; which settings reach the paper."""

    def cell(attack, knowledge, rate, epochs, seed, ata, accuracy):
        values = {
            "attack": attack,
            "update-attack": "none" if attack == "label-flip" else "auto",
            "ada-knowledge": knowledge,
            "num-malicious": 10,
            "target-class": 7,
            "poison-rate": rate,
            "attacker-epochs": epochs,
            "seed": seed,
        }
        rounds = [  # round 1 comes before the attack (round 2) and must not count
            {"round": 1, "ts_ata": 0.99, "mta": 0.9, "accuracy": accuracy},
            {"round": 2, "ts_ata": ata, "mta": 0.9, "accuracy": accuracy},
        ]
        return {"values": values, "rounds": rounds, "start": 2}

    seeds = (1, 2, 3)
    groups = {
        ("label-flip", "full", 0.1, 1): ((0.02, 0.04, 0.03), (0.975,) * 3),
        ("label-flip", "full", 1.0, 1): ((0.30, 0.34, 0.32), (0.975,) * 3),
        ("label-flip", "full", 0.1, 5): ((0.10, 0.20, 0.15), (0.975,) * 3),
        ("label-flip", "full", 1.0, 5): ((0.95, 0.90, 0.925), (0.90, 0.91, 0.92)),
        ("ada", "full", 0.5, "auto"): ((0.6, 0.7, 0.65), (0.975,) * 3),
    }
    cells = [
        cell(*group, seed, ata, accuracy)
        for group, (atas, accuracies) in groups.items()
        for seed, ata, accuracy in zip(seeds, atas, accuracies, strict=True)
    ]
    for seed, accuracy in zip(seeds, (0.98, 0.97, 0.975), strict=True):
        clean = {"attack": "none", "update-attack": "auto", "num-malicious": 0, "seed": seed}
        cells.append({"values": clean, "rounds": [{"round": 1, "accuracy": accuracy}], "start": 2})
    definition = {"base": {"num-clients": 100, "local-epochs": 1}, "grids": {"grid": {}}}
    make_sweep(tmp_path, cells, definition=definition)
    text = write_comparison("seed004-sensitivity", tmp_path, tmp_path).read_text()
    table = {(r["method"], r["poison_rate"], r["attacker_epochs"]): r for r in read_csv(tmp_path / "comparison.csv")}
    best = table[("label-flip", "1.0", "5")]
    assert float(best["ata"]) == pytest.approx(0.925) and best["seeds"] == "3" and float(best["fraction"]) == 0.1
    assert float(best["paper_mnist_ata"]) == 0.912
    assert float(table[("ada-full", "0.5", "1")]["ata"]) == pytest.approx(0.65)  # auto = local-epochs = 1
    findings = findings_of(text)
    assert findings[0].startswith("- ada-full (ε = 0.1): highest ATA 0.650 (α = 0.5, 1 attacker epoch(s))")
    assert findings[0].endswith("is reached by none of these settings")
    lf = [line for line in findings if line.startswith("- label-flip (ε = 0.1, target 7)")]
    assert lf[0].endswith(
        "highest ATA 0.925 (α = 1, 5 attacker epoch(s)); the paper's ATA (0.912) is reached with α = 1 and 5 epoch(s)"
    )
    # α 0.1 -> 1 at 1 epoch: +0.28, +0.30, +0.29: mean 0.29, sd 0.01, half width 4.302653 * 0.01 / sqrt(3) = 0.0248
    rate_1 = next(line for line in lf if "1 attacker epoch(s): ATA rises from α = 0.1 to α = 1" in line)
    assert "+0.290 [+0.265, +0.315] (3 seeds)" in rate_1 and rate_1.endswith("**agrees**")
    # 1 -> 5 epochs at α = 0.1: +0.08, +0.16, +0.12: mean 0.12, sd 0.04, half width 0.0994
    epochs_01 = next(line for line in lf if "α = 0.1: ATA rises from 1 to 5 attacker epochs" in line)
    assert "+0.120 [+0.021, +0.219] (3 seeds)" in epochs_01 and epochs_01.endswith("**agrees**")
    # accuracy - clean + 0.01 for the lowest (LF α 1, 5 epochs): -0.07, -0.05, -0.045: mean -0.055, sd 0.013229
    accuracy = findings[-1]
    assert accuracy.startswith("- Accuracy (maximum over the rounds) stays within 1 point of the clean run's (0.975)")
    assert "-0.055 [-0.088, -0.022] (3 seeds)" in accuracy and accuracy.endswith("**differs**")
    assert "![sensitivity](sensitivity.png)" in text and (tmp_path / "sensitivity.png").stat().st_size > 0


def test_a_folder_without_sweep_csv_is_one_line_exit_2(tmp_path, capsys):
    assert main(["seed000", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("seed_studies: error:") and "\n" not in error


def test_findings_without_their_cells_are_not_measured(tmp_path):
    accuracy = {
        ("fedavg", "iid", 0): 0.97,
        ("fedavg", "iid", 1): 0.965,
        ("fedavg", "iid", 2): 0.962,
        ("fedavg", "dirichlet", 0): 0.96,
        ("fedavg", "dirichlet", 1): 0.90,
        ("fedavg", "dirichlet", 2): 0.70,
    }
    cells = [
        {"values": {"strategy": s, "partitioning": p, "num-malicious": n}, "rounds": final_only(a)}
        for (s, p, n), a in accuracy.items()
    ]
    make_sweep(tmp_path, cells)
    findings = findings_of(write_comparison("seed000", tmp_path, tmp_path).read_text())
    # one seed: the growth of the drop has no interval, however small or large it is
    assert findings[0].endswith("**inconclusive**")
    assert findings[2].endswith("**not measured**") and findings[3].endswith("**not measured**")
    assert "difference – (no shared seed)" in findings[2]


def test_a_moved_sweep_folder_is_read_from_where_it_is_now(tmp_path):
    make_sweep(
        tmp_path / "old",
        [{"values": {"strategy": "fedavg", "partitioning": "iid", "num-malicious": 0}, "rounds": final_only(0.97)}],
    )
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    # the copy differs from the folder sweep.csv still names: the copy is read
    write_csv(tmp_path / "new" / "cell0" / "rounds.csv", [{"round": 1, "accuracy": 0.5}], ["round", "accuracy"])
    write_comparison("seed000", tmp_path / "new", tmp_path)
    assert float(read_csv(tmp_path / "comparison.csv")[0]["accuracy_last5"]) == pytest.approx(0.5)
    shutil.rmtree(tmp_path / "old")
    (tmp_path / "new").rename(tmp_path / "moved")
    write_comparison("seed000", tmp_path / "moved", tmp_path)
    assert float(read_csv(tmp_path / "comparison.csv")[0]["accuracy_last5"]) == pytest.approx(0.5)


def test_titles_name_the_dataset_the_cells_ran_on():
    from experiments.seed_studies import dataset_label

    assert dataset_label([{"dataset": "/work/shared/data/cifar10-jpeg/"}]) == "CIFAR-10 (JPEG copy)"
    assert dataset_label([{"dataset": "mnist"}, {"dataset": "/data/mnist"}]) == "MNIST"
    assert dataset_label([{}]) == "digits"  # a row without the setting ran on the default
    assert dataset_label([{"dataset": "owner/my-set"}, {"dataset": "digits"}]) == "my-set and digits"


def test_cells_without_rounds_csv_are_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    make_sweep(tmp_path, [{"values": {}, "rounds": final_only(0.9)}, {"values": {}, "rounds": final_only(0.8)}])
    (tmp_path / "cell1" / "rounds.csv").unlink()
    assert main(["seed000", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith("seed_studies: error: 1 of 2 finished cells have no rounds.csv")
    assert str(tmp_path / "cell1" / "rounds.csv") in error
    assert not (tmp_path / "comparison.md").exists() and not (tmp_path / "comparison.csv").exists()
