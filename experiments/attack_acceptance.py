"""Measures the attack acceptance numbers on digits, each cell a real ``fl-poison run``.

Usage::

    python -m experiments.attack_acceptance [--only GROUP ...] [--out DIR]

Groups (each a handful of runs through the Flower simulation engine):

- ``badnets``: BadNets, 1 malicious of 6, 5 sampled per round, FedAvg, 20 rounds, vs the same
  run without attack (ASR and clean accuracy);
- ``label-flip-random``: 2 of 5 attackers with random labels, IID, vs the clean run;
- ``dba``: distributed backdoor, 3 of 6, all 6 sampled: full-trigger and per-part ASR;
- ``blend``: blend backdoor with 1, 2, 3 of 6 (seed 001's set-up: 5 sampled per round, 5 rounds,
  2 local epochs, target 0, 50 % poisoned);
- ``scaling``: blend + model replacement: malicious update norm vs the median benign norm;
- ``ada``: seed 004's comparison on digits, 20 clients, 10 % malicious: label flipping to every
  other target (LF), the same with train-and-scale (TS), ADA with full knowledge and with FLAME.

Each finished cell keeps its result folder under ``--out``; running again skips cells whose
``summary.json`` exists. Writes ``acceptance.csv`` (one row per cell, data first) and
``acceptance.md`` (the tables) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path

from fl_poison.cli import CommandError, run_experiment
from fl_poison.results import atomic_write_bytes, read_csv, write_csv

DEFAULT_OUT = Path("experiments/results/attacks")
SEED001 = {"num-clients": 6, "clients-per-round": 5, "num-rounds": 5, "local-epochs": 2, "target-class": 0, "poison-rate": 0.5}
SEED004 = {
    "num-clients": 20, "clients-per-round": 10, "num-rounds": 30, "local-epochs": 1, "batch-size": 16,
    "optimizer": "adam", "learning-rate": 0.001, "source-class": 2, "num-malicious": 2, "attack-start-round": 10,
}


def cells() -> list[tuple[str, str, dict[str, object]]]:
    """(group, cell name, settings) for every acceptance cell."""
    listed: list[tuple[str, str, dict[str, object]]] = []
    six = {"num-clients": 6, "clients-per-round": 5, "num-rounds": 20}
    listed.append(("badnets", "clean-6of5", dict(six)))
    listed.append(("badnets", "badnets-1of6", {**six, "attack": "badnets", "num-malicious": 1}))
    listed.append(("label-flip-random", "clean-5", {"num-clients": 5}))
    listed.append(("label-flip-random", "lfr-2of5", {"num-clients": 5, "attack": "label-flip-random", "num-malicious": 2}))
    listed.append(("dba", "dba-3of6", {"num-clients": 6, "clients-per-round": 6, "num-rounds": 20, "attack": "dba", "num-malicious": 3}))
    for attackers in (1, 2, 3):
        listed.append(("blend", f"blend-{attackers}of6", {**SEED001, "attack": "blend", "num-malicious": attackers}))
    listed.append(("scaling", "blend-scaling-1of6", {**SEED001, "attack": "blend", "num-malicious": 1, "update-attack": "scaling"}))
    for target in range(10):
        if target == SEED004["source-class"]:
            continue
        listed.append(("ada", f"lf-to-{target}", {**SEED004, "attack": "label-flip", "target-class": target, "update-attack": "none"}))
        listed.append(("ada", f"ts-to-{target}", {**SEED004, "attack": "label-flip", "target-class": target, "update-attack": "train-and-scale"}))
    listed.append(("ada", "ada-full", {**SEED004, "attack": "ada", "ada-knowledge": "full"}))
    listed.append(("ada", "ada-partial", {**SEED004, "attack": "ada", "ada-knowledge": "partial"}))
    return listed


def column_max(rows: list[dict[str, str]], column: str) -> float:
    """The largest finite value of ``column`` over the rounds (NaN when none)."""
    values = [float(row[column]) for row in rows if row.get(column) not in (None, "")]
    return max(values) if values else math.nan


def cell_row(group: str, name: str, settings: dict[str, object], folder: Path) -> dict[str, object]:
    """One result row: final metrics, round maxima, norms and the attackers' chosen targets."""
    summary = json.loads((folder / "summary.json").read_text())
    rounds = read_csv(folder / "rounds.csv")
    clients = read_csv(folder / "clients.csv")
    attacked = [float(c["norm_before"]) for c in clients if c["attacked"] == "1" and c["norm_before"]]
    benign = [float(c["norm_before"]) for c in clients if c["malicious"] == "0" and c["norm_before"]]
    targets = sorted({int(c["attack_target"]) for c in clients if c["attacked"] == "1" and int(c["attack_target"]) >= 0})
    row: dict[str, object] = {"group": group, "cell": name, **{f"set:{k}": v for k, v in settings.items()}}
    row.update({key: summary.get(key) for key in ("accuracy", "asr", "mta", "ts_ata", "max_ata", "wall_seconds")})
    for column in ("ts_ata", "max_ata", "mta") + tuple(k for k in rounds[0] if k.startswith("asr")):
        if column in rounds[0]:
            row[f"max_{column}"] = column_max(rounds, column)
    for column in (k for k in rounds[-1] if k.startswith("asr_part_")):
        row[column] = float(rounds[-1][column])
    row["median_attacked_norm"] = statistics.median(attacked) if attacked else None
    row["median_benign_norm"] = statistics.median(benign) if benign else None
    row["attack_targets"] = ";".join(map(str, targets))
    row["folder"] = str(folder)
    return row


def run_cells(selected: Iterable[tuple[str, str, dict[str, object]]], out: Path) -> list[dict[str, object]]:
    """Run every cell not finished yet; return a row per finished cell."""
    rows = []
    for group, name, settings in selected:
        folder = out / name
        if not (folder / "summary.json").is_file():
            print(f"[acceptance] {group}/{name}: running", flush=True)
            try:
                run_experiment({**settings, "save-model": False, "output-dir": str(out), "run-name": name}, 1.0, 0.0, False)
            except CommandError as error:
                print(f"[acceptance] {group}/{name}: FAILED {error}", flush=True)
                continue
        rows.append(cell_row(group, name, settings, folder))
    return rows


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table of ``columns`` (numbers to 3 decimals, blanks for missing values)."""
    def cell(value: object) -> str:
        if isinstance(value, str) and "." in value:
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.3f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def report(rows: list[dict[str, object]]) -> str:
    """The Markdown report: one table per group."""
    by_group: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_group.setdefault(str(row["group"]), []).append(row)
    columns = {
        "badnets": ["cell", "accuracy", "asr", "mta"],
        "label-flip-random": ["cell", "accuracy", "macro_f1"],
        "dba": ["cell", "accuracy", "asr", "asr_part_0", "asr_part_1", "asr_part_2"],
        "blend": ["cell", "accuracy", "asr", "max_asr"],
        "scaling": ["cell", "accuracy", "asr", "median_attacked_norm", "median_benign_norm"],
        "ada": ["cell", "attack_targets", "ts_ata", "max_ts_ata", "max_ata", "max_max_ata", "mta", "max_mta"],
    }
    parts = ["# Attack acceptance on digits", ""]
    for group, group_rows in by_group.items():
        parts += [f"## {group}", "", markdown_table(group_rows, columns.get(group, ["cell", "accuracy"])), ""]
    return "\n".join(parts)


def main() -> None:
    """Run the selected groups and write ``acceptance.csv`` and ``acceptance.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="groups to run (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    arguments = parser.parse_args()
    out = arguments.out.resolve()
    selected = [cell for cell in cells() if not arguments.only or cell[0] in arguments.only]
    rows = run_cells(selected, out)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    existing = out / "acceptance.csv"
    if existing.is_file() and arguments.only:
        kept = [row for row in read_csv(existing) if row["group"] not in arguments.only]
        rows = kept + rows
        for row in kept:
            columns += [key for key in row if key not in columns]
    write_csv(out / "acceptance.csv", rows, columns)
    atomic_write_bytes(out / "acceptance.md", report(rows).encode())
    print(report(rows))


if __name__ == "__main__":
    main()
