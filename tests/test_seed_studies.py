"""Seed-study comparisons computed from hand-made sweep folders (numbers chosen to check by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.seed_studies import SEED000_ACCURACY, last_rounds_mean, main, max_from, round_rows, write_comparison
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
]


def make_sweep(root: Path, cells: list[dict[str, object]], prefix: str = "cell") -> Path:
    """A sweep folder: one ok cell per entry, each with its rounds, clients and a config.json."""
    rows = []
    for index, cell in enumerate(cells):
        folder = root / f"{prefix}{index}"
        folder.mkdir(parents=True)
        settings = {"attack-start-round": cell.get("start", 1)}
        (folder / "config.json").write_text(json.dumps({"settings": settings}))
        rounds = cell["rounds"]
        columns = ["round", *sorted({key for entry in rounds for key in entry if key != "round"})]
        write_csv(folder / "rounds.csv", [{"round": 0, "accuracy": 0.1}, *rounds], columns)
        write_csv(folder / "clients.csv", cell.get("clients", []), CLIENT_COLUMNS)
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
    return root


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


def test_seed000_table_and_findings(tmp_path):
    accuracy = {
        ("fedavg", "iid", 0): 0.97,
        ("fedavg", "iid", 1): 0.95,
        ("fedavg", "iid", 2): 0.90,
        ("fedavg", "dirichlet", 0): 0.96,
        ("fedavg", "dirichlet", 1): 0.90,
        ("fedavg", "dirichlet", 2): 0.70,
        ("fedprox", "dirichlet", 2): 0.80,
        ("loss-filter", "dirichlet", 1): 0.93,
        ("loss-filter", "dirichlet", 2): 0.75,
        ("loss-filter", "iid", 1): 0.951,
        ("loss-filter", "iid", 2): 0.89,
    }
    cells = [
        {"values": {"strategy": s, "partitioning": p, "num-malicious": n}, "rounds": final_only(a)}
        for (s, p, n), a in accuracy.items()
    ]
    make_sweep(tmp_path, cells)
    text = write_comparison("seed000", tmp_path, tmp_path / "out").read_text()
    table = read_csv(tmp_path / "out" / "comparison.csv")
    assert len(table) == len(accuracy)
    fedavg_dir2 = next(
        r for r in table if (r["strategy"], r["partitioning"], r["attackers"]) == ("fedavg", "dirichlet", "2")
    )
    assert float(fedavg_dir2["accuracy"]) == pytest.approx(0.70)
    assert float(fedavg_dir2["seed000_cifar10_accuracy"]) == SEED000_ACCURACY[("fedavg", "dirichlet", 2)] == 0.424
    findings = [line for line in text.splitlines() if line.startswith("- ")]
    # drops: IID 0.02 -> 0.07, non-IID 0.06 -> 0.26: grows with attackers, non-IID worse
    assert "0.020 → 0.070" in findings[0] and findings[0].endswith("**agrees**")
    assert "(FedAvg drop non-IID 0.260 vs IID 0.070" in findings[1] and findings[1].endswith("**agrees**")
    assert "(FedProx 0.800 vs FedAvg 0.700" in findings[2] and findings[2].endswith("**agrees**")
    # loss filter gains: dirichlet +0.03 / +0.05 (helps, as in the seed); iid +0.001 / -0.01 (does not help, as in the seed)
    assert "0.030 / 0.050" in findings[3] and findings[3].endswith("**agrees**")
    assert "0.001 / -0.010" in findings[4] and findings[4].endswith("**agrees**")


def test_seed001_findings_use_the_last_rounds(tmp_path):
    def cell(grid, attack, n, strategy, asr_values, cpr=5):
        rounds = [{"round": r + 1, "asr": a, "accuracy": 0.9} for r, a in enumerate(asr_values)]
        return {
            "grid": grid,
            "values": {"attack": attack, "num-malicious": n, "strategy": strategy, "clients-per-round": cpr},
            "rounds": rounds,
        }

    cells = [
        cell("blend-ratio", "blend", 1, "fedavg", [0.0] * 5 + [0.1] * 5),
        cell("blend-ratio;fedavg-vs-krum", "blend", 1, "fedavg", [0.0] * 5 + [0.1] * 5),
        cell("blend-ratio", "blend", 2, "fedavg", [0.3] * 10),
        cell("blend-ratio", "blend", 3, "fedavg", [0.9, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9]),
        cell("fedavg-vs-krum", "blend", 1, "krum", [0.02] * 6),
        cell("dba-vs-blend", "dba", 3, "fedavg", [1.0] * 6, 6),
        cell("dba-vs-blend", "blend", 3, "fedavg", [0.4] * 6, 6),
        cell("scaling-vs-clipping", "blend", 1, "fedavg", [1.0] * 6),
        cell("scaling-vs-clipping", "blend", 1, "norm-clip", [0.6, 0.9, 0.9, 0.9, 0.9, 0.9]),
    ]
    make_sweep(tmp_path, cells[1:])
    findings = [
        line
        for line in write_comparison("seed001", tmp_path, tmp_path).read_text().splitlines()
        if line.startswith("- ")
    ]
    # blend 3: last five of [0.9, 0.1, 0.5, 0.6, 0.7, 0.8, 0.9] = 0.7
    assert "0.100 / 0.300 / 0.700" in findings[0] and findings[0].endswith("**agrees**")
    assert "ASR FedAvg 0.100, Krum 0.020" in findings[1] and findings[1].endswith("**agrees**")
    assert "(ASR 1.000 vs 0.400" in findings[2] and findings[2].endswith("**agrees**")
    assert "clipped 0.900" in findings[3] and findings[3].endswith("**agrees**")


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
    assert "label-flip at ε = 0.01, ATA per target (1: 0.200, 5: 0.400); best target 5" in text
    table = {(r["method"], r["fraction"]): r for r in read_csv(tmp_path / "comparison.csv")}
    lf = table[("label-flip", "0.01")]
    assert float(lf["ata"]) == pytest.approx((0.2 + 0.4) / 2) and lf["cells"] == "2"
    assert float(lf["mta"]) == pytest.approx((0.95 + 0.97) / 2)
    assert float(lf["paper_mnist_ata"]) == 0.081
    assert float(table[("ada-full", "0.01")]["ata"]) == pytest.approx(0.6)
    assert float(table[("ada-partial", "0.01")]["ata"]) == pytest.approx(0.7)
    assert ("clean", "0.0") not in table


def test_a_folder_without_sweep_csv_is_one_line_exit_2(tmp_path, capsys):
    assert main(["seed000", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("seed_studies: error:") and "\n" not in error


def test_findings_without_their_cells_are_not_measured_and_small_gaps_are_no_difference(tmp_path):
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
    findings = [
        line
        for line in write_comparison("seed000", tmp_path, tmp_path).read_text().splitlines()
        if line.startswith("- ")
    ]
    # IID drops 0.005 -> 0.008 differ by less than a point: no growth
    assert findings[0].endswith("**differs**")
    assert findings[2].endswith("**not measured**") and findings[3].endswith("**not measured**")


def test_a_moved_sweep_folder_is_read_from_where_it_is_now(tmp_path):
    make_sweep(
        tmp_path / "old",
        [{"values": {"strategy": "fedavg", "partitioning": "iid", "num-malicious": 0}, "rounds": final_only(0.97)}],
    )
    (tmp_path / "old").rename(tmp_path / "new")
    write_comparison("seed000", tmp_path / "new", tmp_path)
    assert float(read_csv(tmp_path / "comparison.csv")[0]["accuracy_last5"]) == pytest.approx(0.97)
