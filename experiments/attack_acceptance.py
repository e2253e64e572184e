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

import math
import statistics
from pathlib import Path
from typing import SupportsFloat

from experiments.cells import acceptance_main, grouped_report

DEFAULT_OUT = Path("experiments/results/attacks")
# seed 001's set-up scaled to digits: 20 rounds instead of 5 (after 5 rounds the digits model has
# barely left chance level, so a backdoor's ASR says nothing yet)
SEED001 = {
    "num-clients": 6,
    "clients-per-round": 5,
    "num-rounds": 20,
    "local-epochs": 2,
    "target-class": 0,
    "poison-rate": 0.5,
}
SEED004 = {
    "num-clients": 20,
    "clients-per-round": 10,
    "num-rounds": 30,
    "local-epochs": 1,
    "batch-size": 16,
    "optimizer": "adam",
    "learning-rate": 0.001,
    "source-class": 2,
    "num-malicious": 2,
    "attack-start-round": 10,
}


def cells() -> list[tuple[str, str, dict[str, object]]]:
    """(group, cell name, settings) for every acceptance cell."""
    listed: list[tuple[str, str, dict[str, object]]] = []
    six = {"num-clients": 6, "clients-per-round": 5, "num-rounds": 20}
    listed.append(("badnets", "clean-6of5", dict(six)))
    listed.append(("badnets", "badnets-1of6", {**six, "attack": "badnets", "num-malicious": 1}))
    listed.append(("label-flip-random", "clean-5", {"num-clients": 5}))
    listed.append(
        ("label-flip-random", "lfr-2of5", {"num-clients": 5, "attack": "label-flip-random", "num-malicious": 2})
    )
    listed.append(
        (
            "dba",
            "dba-3of6",
            {"num-clients": 6, "clients-per-round": 6, "num-rounds": 20, "attack": "dba", "num-malicious": 3},
        )
    )
    for attackers in (1, 2, 3):
        listed.append(("blend", f"blend-{attackers}of6", {**SEED001, "attack": "blend", "num-malicious": attackers}))
    listed.append(
        (
            "scaling",
            "blend-scaling-1of6",
            {**SEED001, "attack": "blend", "num-malicious": 1, "update-attack": "scaling", "attack-start-round": 10},
        )
    )
    for target in range(10):
        if target == SEED004["source-class"]:
            continue
        listed.append(
            (
                "ada",
                f"lf-to-{target}",
                {**SEED004, "attack": "label-flip", "target-class": target, "update-attack": "none"},
            )
        )
        listed.append(
            (
                "ada",
                f"ts-to-{target}",
                {**SEED004, "attack": "label-flip", "target-class": target, "update-attack": "train-and-scale"},
            )
        )
    listed.append(("ada", "ada-full", {**SEED004, "attack": "ada", "ada-knowledge": "full"}))
    listed.append(("ada", "ada-partial", {**SEED004, "attack": "ada", "ada-knowledge": "partial"}))
    return listed


REPORT_COLUMNS = {
    "badnets": ["cell", "accuracy", "asr", "mta"],
    "label-flip-random": ["cell", "accuracy", "macro_f1"],
    "dba": ["cell", "accuracy", "asr", "asr_part_0", "asr_part_1", "asr_part_2"],
    "blend": ["cell", "accuracy", "asr", "mean_last5_accuracy", "mean_last5_asr", "max_asr"],
    "scaling": [
        "cell",
        "accuracy",
        "asr",
        "median_attacked_norm",
        "median_benign_norm",
        "min_attacked_over_round_benign_median",
        "median_attacked_over_round_benign_median",
    ],
    "ada": [
        "cell",
        "attack_targets",
        "ts_ata",
        "max_ts_ata",
        "max_ata",
        "max_max_ata",
        "mta",
        "max_mta",
        "min_attacked_over_round_benign_median",
    ],
}


def report(rows: list[dict[str, object]]) -> str:
    """The Markdown report: one table per group, then seed 004's comparison (Tables I–II style)."""
    return grouped_report("Attack acceptance on digits", rows, REPORT_COLUMNS) + "\n" + ada_summary(rows)


def _number(value: object) -> float:
    if not isinstance(value, (str, SupportsFloat)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def ada_summary(rows: list[dict[str, object]]) -> str:
    """LF and TS averaged over every target vs ADA full and partial: best-round ATA and MTA after the attack starts."""
    ada_rows = {str(row["cell"]): row for row in rows if row["group"] == "ada"}
    if not ada_rows:
        return ""
    lines = [
        "## seed 004 comparison (maximum over the rounds after the attack starts; LF/TS averaged over the 9 targets)",
        "",
        "| method | ts_ata | max_ata | mta | targets |",
        "|---|---|---|---|---|",
    ]
    for label, prefix in (("LF", "lf-to-"), ("TS", "ts-to-")):
        group = [row for name, row in ada_rows.items() if name.startswith(prefix)]
        if group:
            means = [
                statistics.mean(_number(row.get(key)) for row in group)
                for key in ("max_ts_ata", "max_max_ata", "max_mta")
            ]
            lines.append(f"| {label} (mean of {len(group)}) | " + " | ".join(f"{m:.3f}" for m in means) + " | all |")
    for label, name in (("ADA full", "ada-full"), ("ADA partial (FLAME)", "ada-partial")):
        row = ada_rows.get(name)
        if row is not None:
            values = [_number(row.get(key)) for key in ("max_ts_ata", "max_max_ata", "max_mta")]
            lines.append(
                f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {row.get('attack_targets', '')} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the selected groups and write ``acceptance.csv`` and ``acceptance.md``."""
    acceptance_main(__doc__.splitlines()[0], cells(), DEFAULT_OUT, report)


if __name__ == "__main__":
    main()
