"""Measures the defense acceptance numbers on digits, each cell a real ``fl-poison run``.

Usage::

    python -m experiments.defense_acceptance [--only GROUP ...] [--out DIR]

Groups:

- ``krum``: BadNets, 1 of 6, 5 sampled per round, 20 rounds: Krum vs FedAvg (seed 001 Fig. 2);
- ``clipping``: blend + scaling (γ = 6), 1 of 6, 10 rounds: norm clipping (median bound) vs FedAvg;
- ``loss-filter``: random label flipping, 2 of 10, Dirichlet(0.5) and IID: loss filter vs FedAvg;
- ``nan``: a NaN-sending client, 1 of 6 (8 clients for Bulyan), under every strategy;
- ``table``: every defense × (no attack, BadNets 2/12, DBA 2/12, blend + scaling 1/12, random
  label flipping 2/12), 12 clients all sampled, f = 2.

Writes ``acceptance.csv`` and ``acceptance.md`` into ``--out`` (resumable like the attack script).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.cells import markdown_table, run_cells, write_outputs
from fl_poison.config import STRATEGIES

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
    scaling = {"attack": "blend", "update-attack": "scaling", "scale-factor": 6, "num-malicious": 1, "num-clients": 6, "num-rounds": 10}
    for strategy in ("fedavg", "norm-clip"):
        listed.append(("clipping", f"blend-scaling-{strategy}", {**scaling, "strategy": strategy}))
    flipping = {"attack": "label-flip-random", "num-malicious": 2, "num-clients": 10}
    for partitioning in ("dirichlet", "iid"):
        for strategy in ("fedavg", "loss-filter"):
            listed.append(("loss-filter", f"lfr-{partitioning}-{strategy}", {**flipping, "partitioning": partitioning, "strategy": strategy}))
    for strategy in STRATEGIES:
        clients = 8 if strategy == "bulyan" else 6  # Bulyan with f = 1 needs 7 valid replies
        listed.append(("nan", f"nan-{strategy}", {"attack": "nan-weights", "num-malicious": 1, "num-clients": clients, "num-rounds": 5, "strategy": strategy}))
    for scenario, settings in SCENARIOS.items():
        for strategy in STRATEGIES:
            base = {"num-clients": 12, "krum-f": 2, "strategy": strategy}
            listed.append(("table", f"{scenario}-{strategy}", {**base, **settings}))
    return listed


def report(rows: list[dict[str, object]]) -> str:
    """The Markdown report: one table per group."""
    columns = {
        "krum": ["cell", "accuracy", "asr", "detection_recall", "detection_fpr"],
        "clipping": ["cell", "accuracy", "asr", "max_attacked_norm_after_over_bound", "median_attacked_norm", "median_benign_norm"],
        "loss-filter": ["cell", "accuracy", "detection_precision", "detection_recall", "detection_fpr"],
        "nan": ["cell", "accuracy", "finite_metrics", "attacked_replies", "attacked_rejected"],
        "table": ["cell", "accuracy", "asr", "detection_recall", "detection_fpr"],
    }
    by_group: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_group.setdefault(str(row["group"]), []).append(row)
    parts = ["# Defense acceptance on digits", ""]
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
    print(write_outputs(run_cells(selected, out), out, arguments.only, report))


if __name__ == "__main__":
    main()
