"""The weight-inflation acceptance table, from the sweep ``experiments/sweeps/weight-inflation.toml``.

Usage::

    fl-poison sweep experiments/sweeps/weight-inflation.toml --out DIR
    python -m experiments.weight_inflation DIR

For every weighted rule (FedAvg, Multi-Krum, norm clipping, the loss filter), attack (the
inflating client training honestly, or on random labels) and ``client-weighting`` (``capped``,
``reported``), the final accuracy and the mean accuracy of the last five rounds, each as the mean
and the sample standard deviation over the seeds, and the change against the same rule without
an attacker (mean over the same seeds). The criterion of issue 11: with ``capped`` the final
accuracy stays within 2 points of the run without the attack. Writes ``DIR/acceptance.csv`` (one
row per cell group, loadable with pandas) and ``DIR/acceptance.md``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.seed_studies import cell_rows, last_rounds_mean, missing_rounds_error, round_rows
from experiments.statistics import summarize
from fl_poison.core.results import atomic_write_bytes, write_csv

TOLERANCE = 0.02  # "within 2 points of the run without the attack"
COLUMNS = (
    "strategy",
    "attack",
    "client_weighting",
    "seeds",
    "final_accuracy_mean",
    "final_accuracy_std",
    "last5_accuracy_mean",
    "last5_accuracy_std",
    "reference_final_accuracy",
    "final_change",
    "within_2_points",
)


def acceptance_rows(cells: Sequence[dict[str, str]]) -> list[dict[str, object]]:
    """One row per (strategy, attack, weighting) of the inflation grid, against the no-attack reference.

    Parameters
    ----------
    cells : Sequence[dict[str, str]]
        The rows of the sweep's ``sweep.csv`` (only ``ok`` cells are used).
    """
    done = [cell for cell in cells if cell.get("status") == "ok"]
    reference: dict[str, list[float]] = {}
    for cell in done:
        if cell["grid"] == "no-attack":
            reference.setdefault(cell["strategy"], []).append(float(cell["accuracy"]))
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for cell in done:
        if cell["grid"] == "inflation":
            groups.setdefault((cell["strategy"], cell["attack"], cell["client-weighting"]), []).append(cell)
    rows = []
    for (strategy, attack, weighting), members in sorted(groups.items()):
        finals = [float(cell["accuracy"]) for cell in members]
        lasts = [last_rounds_mean(round_rows(cell), "accuracy") for cell in members]
        final, last = summarize(finals), summarize(lasts)
        baseline = statistics.fmean(reference[strategy]) if strategy in reference else math.nan
        change = final.mean - baseline
        rows.append(
            {
                "strategy": strategy,
                "attack": attack,
                "client_weighting": weighting,
                "seeds": len(members),
                "final_accuracy_mean": final.mean,
                "final_accuracy_std": final.std,
                "last5_accuracy_mean": last.mean,
                "last5_accuracy_std": last.std,
                "reference_final_accuracy": baseline,
                "final_change": change,
                "within_2_points": "" if math.isnan(change) else str(abs(change) <= TOLERANCE).lower(),
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, object]]) -> str:
    """The table of :func:`acceptance_rows` in Markdown (mean ± standard deviation over seeds).

    Parameters
    ----------
    rows : Sequence[dict[str, object]]
        The acceptance rows.
    """

    def pm(mean: object, std: object) -> str:
        mean_value, std_value = float(str(mean)), float(str(std))
        return "–" if math.isnan(mean_value) else f"{mean_value:.3f} ± {std_value:.3f}"

    lines = [
        "| strategy | attacker trains on | client-weighting | seeds | final accuracy | last-5 accuracy | no-attack final | change | within 2 points |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        attack = "clean data" if row["attack"] == "none" else str(row["attack"])
        lines.append(
            f"| {row['strategy']} | {attack} | {row['client_weighting']} | {row['seeds']} "
            f"| {pm(row['final_accuracy_mean'], row['final_accuracy_std'])} "
            f"| {pm(row['last5_accuracy_mean'], row['last5_accuracy_std'])} "
            f"| {float(str(row['reference_final_accuracy'])):.3f} | {float(str(row['final_change'])):+.3f} "
            f"| {row['within_2_points'] or '–'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: read ``DIR/sweep.csv``, write ``DIR/acceptance.csv`` and ``DIR/acceptance.md``, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the sweep folder of experiments/sweeps/weight-inflation.toml")
    arguments = parser.parse_args(argv)
    table = arguments.folder / "sweep.csv"
    if not table.is_file():
        print(f"weight_inflation: error: {table} does not exist; run the sweep first", file=sys.stderr)
        return 2
    cells = cell_rows([arguments.folder])
    error = missing_rounds_error("weight_inflation", cells)
    if error:
        print(error, file=sys.stderr)
        return 2
    rows = acceptance_rows(cells)
    write_csv(arguments.folder / "acceptance.csv", rows, COLUMNS)
    text = markdown(rows)
    atomic_write_bytes(arguments.folder / "acceptance.md", text.encode())
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
