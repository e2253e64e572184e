"""Running named experiment cells through ``fl-poison run`` and tabulating their results.

Shared by the acceptance scripts: a cell is ``(group, name, settings)``; each runs once into
``OUT/<name>/`` (skipped when its ``summary.json`` exists, so an interrupted script resumes),
and gives one row of final metrics, maxima over the rounds from ``attack-start-round`` on (seed 004
reports the best round), update norms and detection counts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import cast

from fl_poison.core.results import atomic_write_bytes, read_csv, remove_unfinished_run, write_csv
from fl_poison.core.settings import ConfigError
from fl_poison.launch import CommandError, run_experiment

SUMMARY_KEYS = (
    "accuracy",
    "macro_f1",
    "asr",
    "mta",
    "ts_ata",
    "max_ata",
    "detection_precision",
    "detection_recall",
    "detection_fpr",
    "rejection_precision",
    "rejection_recall",
    "rejection_fpr",
    "wall_seconds",
)


def column_max(rows: list[dict[str, str]], column: str) -> float:
    """The largest finite value of ``column`` over the rounds (NaN when none)."""
    values = [float(row[column]) for row in rows if row.get(column) not in (None, "")]
    return max(values) if values else math.nan


def column_mean(rows: list[dict[str, str]], column: str) -> float:
    """The mean of the finite values of ``column`` in ``rows`` (NaN when none)."""
    values = [float(row[column]) for row in rows if row.get(column) not in (None, "")]
    return sum(values) / len(values) if values else math.nan


def norm_ratios(clients: list[dict[str, str]]) -> list[float]:
    """For every attacked reply, its update norm over the median benign norm of its round."""
    ratios = []
    for server_round in sorted({row["round"] for row in clients}):
        in_round = [row for row in clients if row["round"] == server_round and row["norm_before"]]
        benign = [float(row["norm_before"]) for row in in_round if row["malicious"] == "0"]
        if not benign:
            continue
        median = statistics.median(benign)
        ratios += [float(row["norm_before"]) / median for row in in_round if row["attacked"] == "1"]
    return ratios


def cell_row(group: str, name: str, settings: dict[str, object], folder: Path) -> dict[str, object]:
    """One result row: final metrics, round maxima, norms and the attackers' chosen targets."""
    summary = json.loads((folder / "summary.json").read_text())
    rounds = read_csv(folder / "rounds.csv")
    clients = read_csv(folder / "clients.csv")
    attacked = [float(c["norm_before"]) for c in clients if c["attacked"] == "1" and c["norm_before"]]
    benign = [float(c["norm_before"]) for c in clients if c["malicious"] == "0" and c["norm_before"]]
    targets = sorted(
        {int(c["attack_target"]) for c in clients if c["attacked"] == "1" and int(c["attack_target"]) >= 0}
    )
    row: dict[str, object] = {"group": group, "cell": name, **{f"set:{k}": v for k, v in settings.items()}}
    row.update({key: summary.get(key) for key in SUMMARY_KEYS})
    first_attack_round = int(cast("int | str", settings.get("attack-start-round", 1)))
    attacked_rounds = [r for r in rounds if int(r["round"]) >= first_attack_round]
    for column in ("ts_ata", "max_ata", "mta") + tuple(k for k in rounds[0] if k.startswith("asr")):
        if column in rounds[0]:
            row[f"max_{column}"] = column_max(attacked_rounds, column)
    for column in ("accuracy", "asr"):
        if column in rounds[-1]:
            row[f"mean_last5_{column}"] = column_mean(rounds[-5:], column)
    for column in (k for k in rounds[-1] if k.startswith("asr_part_")):
        row[column] = float(rounds[-1][column])
    row["median_attacked_norm"] = statistics.median(attacked) if attacked else None
    ratios = norm_ratios(clients)
    row["min_attacked_over_round_benign_median"] = min(ratios) if ratios else None
    row["median_attacked_over_round_benign_median"] = statistics.median(ratios) if ratios else None
    row["median_benign_norm"] = statistics.median(benign) if benign else None
    row["attack_targets"] = ";".join(map(str, targets))
    attacked_rows = [c for c in clients if c["attacked"] == "1"]
    ratios = [
        float(c["norm_after"]) / float(c["bound"]) for c in attacked_rows if c.get("bound") and c.get("norm_after")
    ]
    row["max_attacked_norm_after_over_bound"] = max(ratios) if ratios else None
    row["attacked_replies"] = len(attacked_rows)
    row["attacked_rejected"] = sum(1 for c in attacked_rows if c.get("decision") == "rejected")
    row["finite_metrics"] = all(
        isinstance(summary.get(key), (int, float)) and math.isfinite(summary[key]) for key in ("accuracy", "loss")
    )
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
                remove_unfinished_run(
                    folder
                )  # this script owns OUT/<name>: a failed attempt is cleared, a finished one kept
                run_experiment(
                    {**settings, "save-model": False, "output-dir": str(out), "run-name": name}, 1.0, 0.0, False
                )
            except (CommandError, ConfigError) as error:
                print(f"[acceptance] {group}/{name}: FAILED {error}", flush=True)
                continue
        rows.append(cell_row(group, name, settings, folder))
    return rows


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], numeric_text: bool = True) -> str:
    """A Markdown table of ``columns`` (numbers to 3 decimals, blanks for missing values).

    Parameters
    ----------
    rows : Sequence[Mapping[str, object]]
        The table's lines; a missing column is a blank.
    columns : Sequence[str]
        The columns, in order (also the header).
    numeric_text : bool
        Whether text that reads as a decimal number ("0.5") is shown to 3 decimals like a float;
        off for cells already formatted.
    """

    def cell(value: object) -> str:
        if numeric_text and isinstance(value, str) and "." in value:
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


def grouped_report(title: str, rows: list[dict[str, object]], columns: dict[str, list[str]]) -> str:
    """A Markdown report with one table per group, showing ``columns[group]`` (default: cell, accuracy)."""
    by_group: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_group.setdefault(str(row["group"]), []).append(row)
    parts = [f"# {title}", ""]
    for group, group_rows in by_group.items():
        parts += [f"## {group}", "", markdown_table(group_rows, columns.get(group, ["cell", "accuracy"])), ""]
    return "\n".join(parts)


def acceptance_main(
    description: str,
    all_cells: list[tuple[str, str, dict[str, object]]],
    default_out: Path,
    report: Callable[[list[dict[str, object]]], str],
) -> None:
    """Command line of an acceptance script: ``[--only GROUP ...] [--out DIR]``; runs and writes the tables."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", nargs="*", help="groups to run (default: all)")
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default {default_out})")
    arguments = parser.parse_args()
    out = arguments.out.resolve()
    selected = [cell for cell in all_cells if not arguments.only or cell[0] in arguments.only]
    print(write_outputs(run_cells(selected, out), out, arguments.only, report))


def write_outputs(
    rows: list[dict[str, object]], out: Path, only: list[str] | None, report: Callable[[list[dict[str, object]]], str]
) -> str:
    """Write ``acceptance.csv`` (merging rows of groups not rerun) and ``acceptance.md``; return the report."""
    existing = out / "acceptance.csv"
    if existing.is_file() and only:
        kept: list[dict[str, object]] = [dict(row) for row in read_csv(existing) if row["group"] not in only]
        rows = kept + rows
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    write_csv(out / "acceptance.csv", rows, columns)
    text = report(rows)
    atomic_write_bytes(out / "acceptance.md", text.encode())
    return text
