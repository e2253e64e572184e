"""The seed studies on digits next to what the seed documents found: ``comparison.md`` / ``.csv``.

``python -m experiments.seed_studies STUDY SWEEP_DIR [SWEEP_DIR ...]`` reads the folder(s) written by
``fl-poison sweep experiments/sweeps/STUDY*.toml`` and writes ``comparison.csv`` (our numbers
beside the document's) and ``comparison.md`` (the table and each finding of the document, checked
against our numbers) into the folder. The documents' numbers are transcribed below:

- seed 000 (course report, CIFAR-10, 5 clients, 50 rounds): final accuracy per strategy,
  partitioning and number of random label flippers, with and without the loss filter.
- seed 001 (course report, blend / DBA backdoors): final ASR and accuracy are read off its
  figures only where the text states them (FedAvg ASR "over 90 %", Krum "near zero", DBA 0.996).
- seed 004 (Sun et al., ADA): Tables I–II, MNIST rows; ATA and MTA are the maximum over the rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean

from experiments.cells import markdown_table
from fl_poison.core.results import atomic_write_bytes, read_csv, write_csv

LAST_ROUNDS = 5
MARGIN = 0.01

# seed 000, CIFAR-10: (strategy, partitioning, attackers) -> final accuracy
SEED000_ACCURACY = {
    ("fedavg", "iid", 0): 0.750,
    ("fedavg", "iid", 1): 0.686,
    ("fedavg", "iid", 2): 0.564,
    ("fedavg", "dirichlet", 0): 0.740,
    ("fedavg", "dirichlet", 1): 0.682,
    ("fedavg", "dirichlet", 2): 0.424,
    ("fedprox", "iid", 0): 0.745,
    ("fedprox", "iid", 1): 0.673,
    ("fedprox", "iid", 2): 0.553,
    ("fedprox", "dirichlet", 0): 0.750,
    ("fedprox", "dirichlet", 1): 0.717,
    ("fedprox", "dirichlet", 2): 0.562,
    ("loss-filter", "iid", 1): 0.685,
    ("loss-filter", "iid", 2): 0.522,
    ("loss-filter", "dirichlet", 1): 0.696,
    ("loss-filter", "dirichlet", 2): 0.499,
}
# seed 004, Table I (LF, TS, ADA-full) and Table II (ADA-partial), MNIST: fraction -> (ATA, MTA)
SEED004_MNIST = {
    "label-flip": {0.01: (0.081, 0.990), 0.05: (0.569, 0.990), 0.1: (0.912, 0.989)},
    "train-and-scale": {0.01: (0.051, 0.990), 0.05: (0.191, 0.990), 0.1: (0.678, 0.990)},
    "ada-full": {0.01: (0.387, 0.990), 0.05: (0.832, 0.989), 0.1: (0.968, 0.989)},
    "ada-partial": {0.01: (0.553, 0.965), 0.05: (0.996, 0.988), 0.1: (0.988, 0.988)},
}


def number(value: str | float | None) -> float:
    """A CSV cell as a float (empty → NaN)."""
    return float(value) if value not in (None, "") else math.nan


def cell_rows(sweep_dirs: Sequence[Path]) -> list[dict[str, str]]:
    """The ``ok`` rows of the folders' ``sweep.csv`` files, each cell once (a study may span folders).

    A row's ``folder`` is where the cell is now: the recorded path, or the cell's folder inside
    its sweep folder when the sweep was moved (e.g. into ``experiments/results``).
    """
    rows: dict[str, dict[str, str]] = {}
    for sweep_dir in sweep_dirs:
        for row in read_csv(Path(sweep_dir) / "sweep.csv"):
            if row["status"] == "ok":
                recorded = Path(row["folder"])
                row["folder"] = str(recorded if recorded.is_dir() else Path(sweep_dir) / recorded.name)
                rows.setdefault(row.get("cell_id") or row["folder"], row)
    return list(rows.values())


def round_rows(row: dict[str, str]) -> list[dict[str, str]]:
    """The ``rounds.csv`` of a cell, without round 0 (the initial model)."""
    return [entry for entry in read_csv(Path(row["folder"]) / "rounds.csv") if int(entry["round"]) > 0]


def last_rounds_mean(history: list[dict[str, str]], column: str, rounds: int = LAST_ROUNDS) -> float:
    """Mean of ``column`` over the last ``rounds`` rounds (a backdoor's ASR swings from round to round)."""
    values = [number(entry.get(column)) for entry in history[-rounds:]]
    values = [value for value in values if not math.isnan(value)]
    return mean(values) if values else math.nan


def max_from(history: list[dict[str, str]], column: str, first_round: int) -> float:
    """Maximum of ``column`` over the rounds from ``first_round`` on (NaN rounds skipped)."""
    values = [number(entry.get(column)) for entry in history if int(entry["round"]) >= first_round]
    values = [value for value in values if not math.isnan(value)]
    return max(values) if values else math.nan


def fmt(value: float) -> str:
    """Three decimals, or a dash for a missing value."""
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def verdict(holds: bool, *values: float) -> str:
    """``agrees`` / ``differs``, or ``not measured`` when a value it rests on is missing."""
    if any(math.isnan(value) for value in values):
        return "**not measured**"
    return "**agrees**" if holds else "**differs**"


def exceeds(larger: float, smaller: float) -> bool:
    """``larger`` is above ``smaller`` by more than :data:`MARGIN` (a smaller gap is no difference)."""
    return larger - smaller > MARGIN


def seed000(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """Accuracy per (strategy, partitioning, attackers) next to seed 000's CIFAR-10 numbers, and its findings."""
    ours = {(r["strategy"], r["partitioning"], int(r["num-malicious"])): r for r in rows}
    table = []
    for key, row in sorted(ours.items()):
        table.append(
            {
                "strategy": key[0],
                "partitioning": key[1],
                "attackers": key[2],
                "accuracy": number(row["accuracy"]),
                "accuracy_last5": last_rounds_mean(round_rows(row), "accuracy"),
                "macro_f1": number(row["macro_f1"]),
                "detection_recall": number(row.get("detection_recall")),
                "seed000_cifar10_accuracy": SEED000_ACCURACY.get(key, math.nan),
            }
        )
    acc = {key: number(row["accuracy"]) for key, row in ours.items()}

    def drop(strategy: str, partitioning: str, attackers: int) -> float:
        return acc.get((strategy, partitioning, 0), math.nan) - acc.get((strategy, partitioning, attackers), math.nan)

    findings = [
        f"Label flipping hurts more with more attackers (FedAvg drop IID 1 → 2 attackers: {fmt(drop('fedavg', 'iid', 1))} → "
        f"{fmt(drop('fedavg', 'iid', 2))}; non-IID {fmt(drop('fedavg', 'dirichlet', 1))} → {fmt(drop('fedavg', 'dirichlet', 2))}): "
        + verdict(
            exceeds(drop("fedavg", "iid", 2), drop("fedavg", "iid", 1))
            and exceeds(drop("fedavg", "dirichlet", 2), drop("fedavg", "dirichlet", 1)),
            drop("fedavg", "iid", 2),
            drop("fedavg", "iid", 1),
            drop("fedavg", "dirichlet", 2),
            drop("fedavg", "dirichlet", 1),
        ),
        f"Non-IID is more vulnerable with 2 attackers (FedAvg drop non-IID {fmt(drop('fedavg', 'dirichlet', 2))} vs IID "
        f"{fmt(drop('fedavg', 'iid', 2))}; seed: 0.316 vs 0.186): "
        + verdict(
            exceeds(drop("fedavg", "dirichlet", 2), drop("fedavg", "iid", 2)),
            drop("fedavg", "dirichlet", 2),
            drop("fedavg", "iid", 2),
        ),
        f"FedProx resists better on non-IID with 2 attackers (FedProx {fmt(acc.get(('fedprox', 'dirichlet', 2), math.nan))} vs FedAvg "
        f"{fmt(acc.get(('fedavg', 'dirichlet', 2), math.nan))}; seed: 0.562 vs 0.424): "
        + verdict(
            exceeds(acc.get(("fedprox", "dirichlet", 2), math.nan), acc.get(("fedavg", "dirichlet", 2), math.nan)),
            acc.get(("fedprox", "dirichlet", 2), math.nan),
            acc.get(("fedavg", "dirichlet", 2), math.nan),
        ),
    ]
    for partitioning, seed_helps in (("dirichlet", True), ("iid", False)):
        gains = [
            acc.get(("loss-filter", partitioning, n), math.nan) - acc.get(("fedavg", partitioning, n), math.nan)
            for n in (1, 2)
        ]
        holds = all(gain > MARGIN for gain in gains) if seed_helps else all(gain <= MARGIN for gain in gains)
        findings.append(
            f"The loss filter {'helps' if seed_helps else 'does not help'} on {partitioning} (gain over FedAvg with 1 / 2 attackers: "
            f"{fmt(gains[0])} / {fmt(gains[1])}): " + verdict(holds, *gains)
        )
    return table, findings


def seed001(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """Final and last-rounds ASR / accuracy per cell of seed 001's grids, and its findings."""
    table: list[dict[str, object]] = []
    scores: list[dict[str, float]] = []  # the numbers of each table row, typed
    for row in rows:
        history = round_rows(row)
        score = {
            "asr": number(row["asr"]),
            "accuracy": number(row["accuracy"]),
            "asr_last5": last_rounds_mean(history, "asr"),
            "accuracy_last5": last_rounds_mean(history, "accuracy"),
        }
        scores.append(score)
        table.append(
            {
                "grid": row["grid"],
                "attack": row["attack"],
                "attackers": int(row["num-malicious"]),
                "strategy": row["strategy"],
                "update_attack": row.get("update-attack", ""),
                "clients_per_round": row.get("clients-per-round", ""),
                **score,
            }
        )

    def pick(grid: str, **match: object) -> dict[str, float]:
        found = [
            score
            for r, score in zip(table, scores, strict=True)
            if grid in str(r["grid"]).split(";") and all(r[k] == v for k, v in match.items())
        ]
        return (
            found[0]
            if found
            else {"asr_last5": math.nan, "accuracy_last5": math.nan, "asr": math.nan, "accuracy": math.nan}
        )

    ratio = [pick("blend-ratio", attackers=n)["asr_last5"] for n in (1, 2, 3)]
    fedavg, krum = pick("fedavg-vs-krum", strategy="fedavg"), pick("fedavg-vs-krum", strategy="krum")
    dba, blend3 = pick("dba-vs-blend", attack="dba"), pick("dba-vs-blend", attack="blend")
    scaled, clipped = pick("scaling-vs-clipping", strategy="fedavg"), pick("scaling-vs-clipping", strategy="norm-clip")
    findings = [
        f"More blend attackers, higher ASR (mean of the last {LAST_ROUNDS} rounds, 1 / 2 / 3 of 6: "
        f"{' / '.join(fmt(v) for v in ratio)}): "
        + verdict(exceeds(ratio[1], ratio[0]) and exceeds(ratio[2], ratio[1]), *ratio),
        f"Krum stops the 1-attacker blend backdoor that FedAvg lets in (ASR FedAvg {fmt(fedavg['asr_last5'])}, Krum "
        f"{fmt(krum['asr_last5'])}; seed: over 0.9 vs near 0) with the same accuracy ({fmt(fedavg['accuracy_last5'])} vs "
        f"{fmt(krum['accuracy_last5'])}): "
        + verdict(
            krum["asr_last5"] < 0.1 and exceeds(fedavg["asr_last5"], krum["asr_last5"]),
            krum["asr_last5"],
            fedavg["asr_last5"],
        ),
        f"DBA with 3 of 6 is more successful than blend with 3 of 6 (ASR {fmt(dba['asr_last5'])} vs {fmt(blend3['asr_last5'])}; "
        f"seed: DBA 0.996): "
        + verdict(exceeds(dba["asr_last5"], blend3["asr_last5"]), dba["asr_last5"], blend3["asr_last5"]),
        f"Clipping to the median norm does not stop model replacement (ASR scaled {fmt(scaled['asr_last5'])}, clipped "
        f"{fmt(clipped['asr_last5'])}; accuracy {fmt(scaled['accuracy_last5'])} vs {fmt(clipped['accuracy_last5'])}; seed: ASR "
        "dropped but stayed high, accuracy stayed low): " + verdict(clipped["asr_last5"] > 0.5, clipped["asr_last5"]),
    ]
    return table, findings


def method_of(row: dict[str, str]) -> str:
    """LF / TS / ADA-full / ADA-partial / clean, from a seed-004 cell's settings."""
    if row["attack"] == "ada":
        return f"ada-{row['ada-knowledge']}"
    if row["attack"] == "label-flip":
        return row["update-attack"]
    return "clean"


def attack_targets(row: dict[str, str]) -> list[int]:
    """The target classes the cell's attackers used (``attack_target`` of attacked clients; ADA chooses its own)."""
    clients = read_csv(Path(row["folder"]) / "clients.csv")
    return sorted(
        {
            int(entry["attack_target"])
            for entry in clients
            if entry.get("attacked") == "1" and int(entry["attack_target"]) >= 0
        }
    )


def seed004(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """Max-over-rounds ATA and MTA per method and attacker fraction next to Tables I–II (MNIST).

    LF and TS are averaged over the target classes the folders hold; the findings also name
    the targets ADA chose and the ATA of LF / TS to each target.
    """
    grouped: dict[tuple[str, float], list[tuple[float, float, str]]] = {}
    per_target: dict[tuple[str, float], dict[int, float]] = {}
    chosen: dict[str, set[int]] = {}
    for row in rows:
        method = "label-flip" if method_of(row) == "none" else method_of(row)
        if method == "clean":
            continue
        fraction = int(row["num-malicious"]) / 100
        start = int(read_start_round(row))
        history = round_rows(row)
        ata = max_from(history, "ts_ata", start)
        mta = max_from(history, "mta", 1)
        grouped.setdefault((method, fraction), []).append((ata, mta, row.get("target-class", "")))
        if method.startswith("ada"):
            chosen.setdefault(method, set()).update(attack_targets(row))
        else:
            per_target.setdefault((method, fraction), {})[int(row["target-class"])] = ata
    table: list[dict[str, object]] = []
    by: dict[tuple[str, float], dict[str, float]] = {}  # (method, fraction) -> its mean ATA and MTA
    for (method, fraction), values in sorted(grouped.items(), key=lambda item: (item[0][1], item[0][0])):
        paper = SEED004_MNIST.get(method, {}).get(fraction, (math.nan, math.nan))
        means = by[(method, fraction)] = {"ata": mean(v[0] for v in values), "mta": mean(v[1] for v in values)}
        table.append(
            {
                "fraction": fraction,
                "method": method,
                "cells": len(values),
                **means,
                "paper_mnist_ata": paper[0],
                "paper_mnist_mta": paper[1],
            }
        )
    findings = []
    for fraction in (0.01, 0.05, 0.1):
        ada = by.get(("ada-full", fraction), {}).get("ata", math.nan)
        lf = by.get(("label-flip", fraction), {}).get("ata", math.nan)
        findings.append(
            f"ε = {fraction}: ADA-full ATA ≥ LF ATA ({fmt(ada)} vs {fmt(lf)}; paper MNIST {SEED004_MNIST['ada-full'][fraction][0]} vs "
            f"{SEED004_MNIST['label-flip'][fraction][0]}): " + verdict(ada >= lf, ada, lf)
        )
    for fraction in (0.01, 0.05, 0.1):
        ts = by.get(("train-and-scale", fraction), {}).get("ata", math.nan)
        for method in ("ada-full", "ada-partial"):
            ada = by.get((method, fraction), {}).get("ata", math.nan)
            findings.append(
                f"ε = {fraction}: {method} ATA ≥ TS ATA, the same scaled update to an average target ({fmt(ada)} vs {fmt(ts)}; "
                f"paper MNIST {SEED004_MNIST[method][fraction][0]} vs {SEED004_MNIST['train-and-scale'][fraction][0]}): "
                + verdict(ada >= ts, ada, ts)
            )
    for method, targets in sorted(chosen.items()):
        findings.append(
            f"{method} chose target class(es) {', '.join(map(str, sorted(targets))) or 'none (never attacked)'}"
        )
    for (method, fraction), atas in sorted(per_target.items(), key=lambda item: (item[0][1], item[0][0])):
        best = max(atas, key=lambda target: atas[target])
        listing = ", ".join(f"{target}: {fmt(value)}" for target, value in sorted(atas.items()))
        findings.append(f"{method} at ε = {fraction}, ATA per target ({listing}); best target {best}")
    lf_series = [by.get(("label-flip", f), {}).get("ata", math.nan) for f in (0.01, 0.05, 0.1)]
    findings.append(
        f"ATA grows with the attacker fraction (LF {' / '.join(fmt(v) for v in lf_series)}): "
        + verdict(lf_series[0] <= lf_series[1] <= lf_series[2] and exceeds(lf_series[2], lf_series[0]), *lf_series)
    )
    mtas = [means["mta"] for means in by.values()]
    findings.append(
        f"MTA barely moves (range {fmt(min(mtas, default=math.nan))}–{fmt(max(mtas, default=math.nan))}; paper 0.965–0.990): "
        + verdict(max(mtas, default=math.nan) - min(mtas, default=math.nan) < 0.05, *(mtas or [math.nan]))
    )
    return table, findings


def read_start_round(row: dict[str, str]) -> int:
    """The cell's ``attack-start-round`` (from its config.json)."""
    settings = json.loads((Path(row["folder"]) / "config.json").read_text())["settings"]
    return int(settings.get("attack-start-round", 1))


STUDIES: dict[str, tuple[str, Callable[[list[dict[str, str]]], tuple[list[dict[str, object]], list[str]]]]] = {
    "seed000": ("Seed 000 on digits: label flipping, FedAvg vs FedProx, loss filtering", seed000),
    "seed001": ("Seed 001 on digits: blend and DBA backdoors, Krum, scaling and clipping", seed001),
    "seed004": ("Seed 004 on digits: ADA vs label flipping and train-and-scale (Tables I–II)", seed004),
}


def write_comparison(study: str, sweep_dirs: Path | Sequence[Path], out: Path) -> Path:
    """Write ``comparison.csv`` and ``comparison.md`` of ``study`` from the sweep folder(s) into ``out``."""
    title, compare = STUDIES[study]
    folders = [Path(sweep_dirs)] if isinstance(sweep_dirs, (str, Path)) else [Path(folder) for folder in sweep_dirs]
    table, findings = compare(cell_rows(folders))
    if not table:
        raise ValueError(f"{', '.join(map(str, folders))}: no finished cells in sweep.csv")
    columns = list(table[0])
    write_csv(out / "comparison.csv", table, columns)
    sources = ", ".join(f"`{folder}`" for folder in folders)
    text = [
        f"# {title}",
        "",
        f"From {sources}.",
        "",
        markdown_table(table, columns),
        "",
        "## The document's findings, checked on digits",
        "",
    ]
    text += [f"- {finding}" for finding in findings]
    atomic_write_bytes(out / "comparison.md", ("\n".join(text) + "\n").encode())
    return out / "comparison.md"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.seed_studies STUDY SWEEP_DIR [SWEEP_DIR ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR", help="sweep folder(s) of the study")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for comparison.md/.csv (default: the first sweep folder)"
    )
    arguments = parser.parse_args(argv)
    for folder in arguments.sweep_dirs:
        if not (folder / "sweep.csv").is_file():
            print(
                f"seed_studies: error: {folder}: no sweep.csv; allowed: a folder written by fl-poison sweep",
                file=sys.stderr,
            )
            return 2
    print(write_comparison(arguments.study, arguments.sweep_dirs, arguments.out or arguments.sweep_dirs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
