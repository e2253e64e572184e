"""Measures the defense acceptance numbers on digits, each cell a real ``fl-poison run``.

Usage::

    python -m experiments.defense_acceptance [--only GROUP ...] [--out DIR]

Groups:

- ``krum``: BadNets, 1 of 6, 5 sampled per round, 20 rounds: Krum vs FedAvg (seed 001 Fig. 2);
- ``clipping``: blend + scaling (γ = 6), 1 of 6, 10 rounds: norm clipping (median bound) vs FedAvg;
- ``loss-filter``: random label flipping, 2 of 10, Dirichlet(0.5) and IID: loss filter vs FedAvg;
- ``nan``: a NaN-sending client, 1 of 6 (8 clients for Bulyan), under every strategy;
- ``table``: every defense × (no attack, BadNets 2/12, DBA 2/12, blend + scaling 1/12, random
  label flipping 2/12), 12 clients all sampled, f = 2, 10 rounds (45 runs, about 30 minutes on
  2 cores).

Writes ``acceptance.csv`` and ``acceptance.md`` into ``--out`` (resumable like the attack script).
"""

from __future__ import annotations

from pathlib import Path
from typing import SupportsFloat

from experiments.cells import acceptance_main, grouped_report
from fl_poison.apps.algorithms import catalogue

DEFAULT_OUT = Path("experiments/results/defenses")
SCENARIOS = {
    "none": {},
    "badnets-2of12": {"attack": "badnets", "num-malicious": 2},
    "dba-2of12": {"attack": "dba", "num-malicious": 2},
    "blend-scaling-1of12": {"attack": "blend", "num-malicious": 1, "update-attack": "scaling"},
    "lfr-2of12": {"attack": "label-flip-random", "num-malicious": 2},
}


def cells() -> list[tuple[str, str, dict[str, object]]]:
    """(group, cell name, settings) for every defense acceptance cell."""
    listed: list[tuple[str, str, dict[str, object]]] = []
    badnets = {"attack": "badnets", "num-malicious": 1, "num-clients": 6, "clients-per-round": 5, "num-rounds": 20}
    for strategy in ("fedavg", "krum"):
        listed.append(("krum", f"badnets-{strategy}", {**badnets, "strategy": strategy}))
    scaling = {
        "attack": "blend",
        "update-attack": "scaling",
        "scale-factor": 6,
        "num-malicious": 1,
        "num-clients": 6,
        "num-rounds": 10,
    }
    for strategy in ("fedavg", "norm-clip"):
        listed.append(("clipping", f"blend-scaling-{strategy}", {**scaling, "strategy": strategy}))
    flipping = {"attack": "label-flip-random", "num-malicious": 2, "num-clients": 10}
    for partitioning in ("dirichlet", "iid"):
        for strategy in ("fedavg", "loss-filter"):
            listed.append(
                (
                    "loss-filter",
                    f"lfr-{partitioning}-{strategy}",
                    {**flipping, "partitioning": partitioning, "strategy": strategy},
                )
            )
    for strategy in catalogue().defense_names():
        clients = 8 if strategy == "bulyan" else 6  # Bulyan with f = 1 needs 7 valid replies
        listed.append(
            (
                "nan",
                f"nan-{strategy}",
                {
                    "attack": "nan-weights",
                    "num-malicious": 1,
                    "num-clients": clients,
                    "num-rounds": 5,
                    "strategy": strategy,
                },
            )
        )
    for scenario, settings in SCENARIOS.items():
        for strategy in catalogue().defense_names():
            base = {"num-clients": 12, "num-rounds": 10, "krum-f": 2, "strategy": strategy}
            listed.append(("table", f"{scenario}-{strategy}", {**base, **settings}))
    return listed


REPORT_COLUMNS = {
    "krum": ["cell", "accuracy", "asr", "detection_recall", "detection_fpr"],
    "clipping": [
        "cell",
        "accuracy",
        "asr",
        "max_attacked_norm_after_over_bound",
        "median_attacked_norm",
        "median_benign_norm",
    ],
    "loss-filter": ["cell", "accuracy", "detection_precision", "detection_recall", "detection_fpr"],
    "nan": ["cell", "accuracy", "finite_metrics", "attacked_replies", "attacked_rejected"],
    "table": ["cell", "accuracy", "asr", "detection_recall", "detection_fpr"],
}


def report(rows: list[dict[str, object]]) -> str:
    """The Markdown report: one table per group, then the defense × scenario table pivoted."""
    return grouped_report("Defense acceptance on digits", rows, REPORT_COLUMNS) + "\n" + pivot(rows)


def _short(value: object) -> str:
    if not isinstance(value, (str, SupportsFloat)):
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if number != number else f"{number:.2f}"


def pivot(rows: list[dict[str, object]]) -> str:
    """Defense × scenario: accuracy / ASR / detection recall / detection FPR in each cell."""
    by_cell = {str(row["cell"]): row for row in rows if row["group"] == "table"}
    if not by_cell:
        return ""
    lines = [
        "## defense × scenario (accuracy / ASR / detection recall / detection FPR)",
        "",
        "| strategy | " + " | ".join(SCENARIOS) + " |",
        "|---|" + "---|" * len(SCENARIOS),
    ]
    for strategy in catalogue().defense_names():
        cells_text = []
        for scenario in SCENARIOS:
            row = by_cell.get(f"{scenario}-{strategy}")
            if row is None:
                cells_text.append("")
                continue
            values = (row.get("accuracy"), row.get("asr"), row.get("detection_recall"), row.get("detection_fpr"))
            cells_text.append(" / ".join(_short(value) for value in values))
        lines.append(f"| {strategy} | " + " | ".join(cells_text) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the selected groups and write ``acceptance.csv`` and ``acceptance.md``."""
    acceptance_main(__doc__.splitlines()[0], cells(), DEFAULT_OUT, report)


if __name__ == "__main__":
    main()
