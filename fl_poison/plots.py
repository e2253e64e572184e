"""Plots of one run, drawn from its rows (never from log text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(rows: Sequence[Mapping[str, object]], path: Path, title: str) -> None:
    """Test accuracy and test loss of the global model per round, side by side, as a PNG."""
    rounds = [int(row["round"]) for row in rows]
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    accuracy_axis.plot(rounds, [float(row["accuracy"]) for row in rows], marker="o", markersize=3)
    accuracy_axis.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1.02), title="accuracy")
    loss_axis.plot(rounds, [float(row["loss"]) for row in rows], marker="o", markersize=3, color="tab:red")
    loss_axis.set(xlabel="round", ylabel="test loss", title="loss")
    for axis in (accuracy_axis, loss_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)
