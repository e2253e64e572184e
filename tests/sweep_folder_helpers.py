"""A hand-made sweep folder for the tests of ``fl-poison plot`` and ``fl-poison report``.

Grid ``main``: strategy (fedavg, krum) × attack (label-flip, badnets) × num-malicious (0, 1, 2);
the cell krum / badnets / 2 failed. Grid ``clip``: one norm-clip cell whose ``clients.csv`` records
a clipping bound. The final metrics follow formulas simple enough to average by hand:

* accuracy = 0.9 - 0.1 m - 0.05 [badnets] + 0.02 [krum]
* asr = 0.1 + 0.2 m + 0.1 [badnets] - 0.05 [krum]
* detection_precision = 0.5 and rejection_fpr = 0.25 for krum cells (absent for fedavg)

:func:`build_replicated_folder` writes a second sweep whose grid ``seeds`` repeats FedAvg and
Krum over seeds 1, 2, 3 (Krum's seed 3 failed), with final accuracies :data:`REPLICATED_ACCURACY`
and 6 rounds that climb 0.05 a round to the final value (so the mean of the last 5 rounds is the
final value minus 0.1, of the last 3 minus 0.05).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

from fl_poison.cli import main
from fl_poison.core.results import write_csv
from fl_poison.core.round_log import CLIENT_COLUMNS

BASE = {
    "num-clients": 8,
    "num-rounds": 3,
    "dataset": "digits",
    "partitioning": "dirichlet",
    "dirichlet-alpha": 0.5,
    "seed": 42,
}
GRIDS = {
    "main": {"strategy": ["fedavg", "krum"], "attack": ["label-flip", "badnets"], "num-malicious": [0, 1, 2]},
    "clip": {"strategy": "norm-clip", "attack": "badnets", "num-malicious": [1]},
}
FAILED = ("krum", "badnets", 2)
FAILED_ERROR = "run 7 finished:failed: boom | the pipe is escaped"
CLIP_CELL = "c11b0001"  # cell ids are 8 hex digits, as fl-poison sweep writes them
RESULT_COLUMNS = (
    "accuracy",
    "macro_f1",
    "kappa",
    "roc_auc",
    "loss",
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


def final_accuracy(strategy: str, attack: str, malicious: int) -> float:
    """The hand-made final accuracy of a cell."""
    return round(
        0.9 - 0.1 * malicious - (0.05 if attack == "badnets" else 0.0) + (0.02 if strategy == "krum" else 0.0), 6
    )


def final_asr(strategy: str, attack: str, malicious: int) -> float:
    """The hand-made final ASR of a cell."""
    return round(
        0.1 + 0.2 * malicious + (0.1 if attack == "badnets" else 0.0) - (0.05 if strategy == "krum" else 0.0), 6
    )


def main_cell_id(strategy: str, attack: str, malicious: int) -> str:
    """The id the hand-made sweep gives a cell of grid ``main``: 8 hex digits, like the ids fl-poison sweep writes."""
    return hashlib.sha256(f"{strategy}-{attack}-{malicious}".encode()).hexdigest()[:8]


def clip_clients() -> list[dict[str, object]]:
    """``clients.csv`` rows of the norm-clip cell: partition 0 malicious (norm 10), benign norms 1, 2, 3, bound 2.

    Round 3 adds a failed reply with norm 100 that the norm summary must leave out.
    """
    rows = []
    for round_ in (1, 2, 3):
        for partition, before in ((0, 10.0), (1, 1.0), (2, 2.0), (3, 3.0)):
            rows.append(
                {
                    "round": round_,
                    "partition_id": partition,
                    "malicious": int(partition == 0),
                    "attacked": int(partition == 0),
                    "attack_target": -1,
                    "status": "ok",
                    "reason": "",
                    "num_examples": 100,
                    "loss": 0.5,
                    "norm_before": before,
                    "norm_after": min(before, 2.0),
                    "bound": 2.0,
                    "decision": "clipped" if before > 2.0 else "accepted",
                    "weight": 0.25,
                }
            )
    rows.append(
        {
            "round": 3,
            "partition_id": 4,
            "malicious": 0,
            "attacked": 0,
            "attack_target": -1,
            "status": "failed",
            "reason": "timeout",
            "num_examples": 0,
            "loss": "",
            "norm_before": 100.0,
        }
    )
    return rows


def write_cell(
    folder: Path, settings: dict[str, object], accuracy: float, asr: float, clients: list[dict[str, object]]
) -> None:
    """A finished cell's ``config.json``, ``rounds.csv`` (3 rounds ending at the final values) and ``clients.csv``."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"settings": settings, "versions": {"flwr": "1.41"}}))
    rounds = [
        {"round": r, "accuracy": accuracy - 0.1 * (3 - r), "loss": 1.0 / r, "asr": asr - 0.05 * (3 - r)}
        for r in (1, 2, 3)
    ]
    write_csv(folder / "rounds.csv", rounds, ["round", "accuracy", "loss", "asr"])
    write_csv(folder / "clients.csv", clients, CLIENT_COLUMNS)


def build_sweep_folder(root: Path) -> Path:
    """Write the hand-made sweep into ``root/sweep`` and return that folder."""
    folder = root / "sweep"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"base": BASE, "grids": GRIDS}))
    benign_clients = [
        {"round": 1, "partition_id": 0, "malicious": 0, "status": "ok", "norm_before": 1.0, "norm_after": 1.0}
    ]
    rows = []
    for strategy in ("fedavg", "krum"):
        for attack in ("label-flip", "badnets"):
            for malicious in (0, 1, 2):
                cell_id = main_cell_id(strategy, attack, malicious)
                values = {"strategy": strategy, "attack": attack, "num-malicious": malicious}
                row = {"cell_id": cell_id, "grid": "main", **values, "folder": str(folder / cell_id)}
                if (strategy, attack, malicious) == FAILED:
                    (folder / cell_id).mkdir()
                    (folder / cell_id / "flower.log").write_text("boom\n")
                    rows.append({**row, "status": "failed", "error": FAILED_ERROR})
                    continue
                accuracy, asr = final_accuracy(strategy, attack, malicious), final_asr(strategy, attack, malicious)
                write_cell(folder / cell_id, {**BASE, **values}, accuracy, asr, benign_clients)
                metrics = {"accuracy": accuracy, "asr": asr, "loss": 0.3, "wall_seconds": 12.5}
                if strategy == "krum":
                    metrics["detection_precision"] = 0.5
                    metrics["rejection_fpr"] = 0.25
                rows.append({**row, "status": "ok", **metrics})
    clip_values = {"strategy": "norm-clip", "attack": "badnets", "num-malicious": 1}
    write_cell(folder / CLIP_CELL, {**BASE, **clip_values}, 0.8, 0.2, clip_clients())
    rows.append(
        {
            "cell_id": CLIP_CELL,
            "grid": "clip",
            **clip_values,
            "status": "ok",
            "accuracy": 0.8,
            "asr": 0.2,
            "wall_seconds": 9.0,
            "folder": str(folder / CLIP_CELL),
        }
    )
    columns = ["cell_id", "grid", "strategy", "attack", "num-malicious", "status", *RESULT_COLUMNS, "folder", "error"]
    write_csv(folder / "sweep.csv", rows, columns)
    return folder


def run_on_sweep_folder(command: str, root: Path) -> tuple[Path, int, str]:
    """Build the hand-made sweep under ``root`` and run ``fl-poison COMMAND`` on it: the folder, the exit code, stdout."""
    folder = build_sweep_folder(root)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([command, str(folder)])
    return folder, code, stdout.getvalue()


REPLICATED_GRIDS = {"seeds": {"num-malicious": 1, "strategy": ["fedavg", "krum"], "seed": [1, 2, 3]}}
# strategy -> seed -> final accuracy (krum's seed 3 failed); ASR = 1 - accuracy
REPLICATED_ACCURACY = {"fedavg": {1: 0.7, 2: 0.8, 3: 0.9}, "krum": {1: 0.8, 2: 0.95}}
REPLICATED_ROUNDS = 6


def replicated_cell_id(strategy: str, seed: int) -> str:
    """The id of a cell of the replicated sweep (8 hex digits)."""
    return hashlib.sha256(f"{strategy}-seed-{seed}".encode()).hexdigest()[:8]


def build_replicated_folder(root: Path) -> Path:
    """Write the replicated sweep (FedAvg and Krum, 1 attacker, over seeds 1–3) into ``root/replicated``; return the folder."""
    folder = root / "replicated"
    folder.mkdir(parents=True)
    base = {key: value for key, value in BASE.items() if key != "seed"}
    (folder / "sweep.json").write_text(json.dumps({"base": base, "grids": REPLICATED_GRIDS}))
    rows = []
    for strategy in ("fedavg", "krum"):
        for seed in (1, 2, 3):
            cell_id = replicated_cell_id(strategy, seed)
            values = {"num-malicious": 1, "strategy": strategy, "seed": seed}
            row = {"cell_id": cell_id, "grid": "seeds", **values, "folder": str(folder / cell_id)}
            accuracy = REPLICATED_ACCURACY[strategy].get(seed)
            if accuracy is None:
                (folder / cell_id).mkdir()
                rows.append({**row, "status": "failed", "error": "boom"})
                continue
            cell = folder / cell_id
            cell.mkdir()
            (cell / "config.json").write_text(json.dumps({"settings": {**base, **values}}))
            history = [{"round": 0, "accuracy": 0.1, "asr": 0.0}]
            history += [
                {"round": r, "accuracy": round(accuracy - 0.05 * (REPLICATED_ROUNDS - r), 6)}
                for r in range(1, REPLICATED_ROUNDS + 1)
            ]
            for entry in history[1:]:
                entry["asr"] = round(1.0 - float(entry["accuracy"]), 6)
            write_csv(cell / "rounds.csv", history, ["round", "accuracy", "asr"])
            write_csv(cell / "clients.csv", [], CLIENT_COLUMNS)
            rows.append({**row, "status": "ok", "accuracy": accuracy, "asr": round(1.0 - accuracy, 6)})
    columns = ["cell_id", "grid", "num-malicious", "strategy", "seed", "status", *RESULT_COLUMNS, "folder", "error"]
    write_csv(folder / "sweep.csv", rows, columns)
    return folder
