"""The audit's folder ``RUN_DIR/audit``: tables, settings, figures, and the short printed table.

The folder is written whole or not at all: every file goes into a temporary folder beside it,
which is then renamed to ``audit`` (an earlier audit is moved aside first and deleted only once
the new one is in place), so a reader never sees an audit with some files missing or mixed from
two audits.

Files: ``audit.json`` (settings, wall time), ``evasion.csv``, ``defenses.csv``, ``detector.csv``
(columns in :data:`EVASION_COLUMNS`, :data:`DEFENSE_COLUMNS`, :data:`DETECTOR_COLUMNS`),
``accuracy_vs_eps.png`` (per attack, accuracy against ε without and with each defense, 95 %
intervals as bands), ``budgets.png`` (mean L2 and L∞ perturbation against ε per attack) and
``examples.png`` (original, perturbation magnified, adversarial, after the first defense, with
predicted classes).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fl_poison.audit.pipeline import AuditResult
from fl_poison.core.plots import pyplot, save_figure
from fl_poison.core.results import write_csv, write_json

AUDIT_FOLDER = "audit"


def _with_interval(*names: str) -> list[str]:
    return [column for name in names for column in (name, f"{name}_low", f"{name}_high")]


EVASION_COLUMNS = (
    "attack", "eps", "norm", "budget", "samples",
    *_with_interval("clean_accuracy", "adversarial_accuracy", "accuracy_drop", "targeted_success_rate"),
    "mean_l2", "max_l2", "mean_linf", "max_linf", "seconds",
)  # fmt: skip
DEFENSE_COLUMNS = (
    "defense", "attack", "eps", "samples",
    *_with_interval(
        "clean_accuracy", "adversarial_accuracy", "clean_difference", "adversarial_difference", "targeted_success_rate"
    ),
)  # fmt: skip
DETECTOR_COLUMNS = (
    "attack", "eps", "samples", "trained_on",
    *_with_interval("benign_flag_rate", "adversarial_flag_rate", "flag_rate_difference"),
)  # fmt: skip


def write_audit(run_folder: Path, result: AuditResult) -> Path:
    """Write ``RUN_DIR/audit`` whole (see the module docstring) and return it.

    Parameters
    ----------
    run_folder : Path
        The audited run's folder.
    result : AuditResult
        What the audit found.
    """
    target = Path(run_folder) / AUDIT_FOLDER
    staging = Path(tempfile.mkdtemp(prefix=f".{AUDIT_FOLDER}-", suffix=".tmp", dir=run_folder))
    try:
        write_json(staging / "audit.json", result.settings)
        write_csv(staging / "evasion.csv", result.evasion, EVASION_COLUMNS)
        write_csv(staging / "defenses.csv", result.defenses, DEFENSE_COLUMNS)
        write_csv(staging / "detector.csv", result.detector, DETECTOR_COLUMNS)
        plot_accuracy_vs_eps(result.evasion, result.defenses, staging / "accuracy_vs_eps.png")
        plot_budgets(result.evasion, staging / "budgets.png")
        if result.examples:
            plot_examples(result.examples, staging / "examples.png")
        staging.chmod(0o755)
        previous = None
        if target.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{AUDIT_FOLDER}-old-", suffix=".tmp", dir=run_folder))
            target.replace(previous / AUDIT_FOLDER)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return target


def _curve(
    rows: Sequence[Mapping[str, object]], column: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    points = sorted((float(str(row["eps"])), row) for row in rows if row.get("eps") is not None)
    return (
        [eps for eps, _ in points],
        [float(str(row[column])) for _, row in points],
        [float(str(row[f"{column}_low"])) for _, row in points],
        [float(str(row[f"{column}_high"])) for _, row in points],
    )


def plot_accuracy_vs_eps(
    evasion: Sequence[Mapping[str, object]], defenses: Sequence[Mapping[str, object]], path: Path
) -> None:
    """Per attack, accuracy against ε without a defense and with each (95 % intervals as bands).

    Parameters
    ----------
    evasion : Sequence[Mapping[str, object]]
        Rows of ``evasion.csv``.
    defenses : Sequence[Mapping[str, object]]
        Rows of ``defenses.csv``.
    path : Path
        The PNG file.
    """
    plt = pyplot()
    attacks = list(dict.fromkeys(str(row["attack"]) for row in evasion))
    columns = min(3, max(1, len(attacks)))
    lines = max(1, math.ceil(len(attacks) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False, sharey=True)
    for axis, attack in zip(axes.flat, attacks, strict=False):
        curves = {"no defense": _curve([r for r in evasion if r["attack"] == attack], "adversarial_accuracy")}
        for name in dict.fromkeys(str(row["defense"]) for row in defenses):
            rows = [r for r in defenses if r["attack"] == attack and r["defense"] == name]
            curves[name] = _curve(rows, "adversarial_accuracy")
        for label, (eps, value, low, high) in curves.items():
            if not eps:
                continue
            (line,) = axis.plot(eps, value, marker="o", markersize=3, label=label)
            axis.fill_between(eps, low, high, color=line.get_color(), alpha=0.15)
        axis.set_title(attack)
        axis.set_xlabel("ε (L∞, inputs in [0, 1])")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(attacks) :]:
        axis.set_visible(False)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def plot_budgets(evasion: Sequence[Mapping[str, object]], path: Path) -> None:
    """Mean L2 and mean L∞ perturbation against ε, one line per attack.

    Parameters
    ----------
    evasion : Sequence[Mapping[str, object]]
        Rows of ``evasion.csv``.
    path : Path
        The PNG file.
    """
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for attack in dict.fromkeys(str(row["attack"]) for row in evasion):
        points = sorted(
            (float(str(row["eps"])), row) for row in evasion if row["attack"] == attack and row.get("eps") is not None
        )
        for axis, column in zip(axes, ("mean_l2", "mean_linf"), strict=True):
            axis.plot([eps for eps, _ in points], [float(str(row[column])) for _, row in points], marker="o",
                      markersize=3, label=attack)  # fmt: skip
    for axis, title in zip(axes, ("mean L2 perturbation", "mean L∞ perturbation"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("ε (L∞ budget)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def plot_examples(examples: Mapping[str, object], path: Path) -> None:
    """A grid of examples: original, perturbation (magnified), adversarial, after the defense; classes in titles.

    Parameters
    ----------
    examples : Mapping[str, object]
        From :func:`fl_poison.audit.pipeline.example_images`.
    path : Path
        The PNG file.
    """
    plt = pyplot()
    original = np.asarray(examples["original"])
    adversarial = np.asarray(examples["adversarial"])
    labels = np.asarray(examples["labels"])
    panels = [("original", original, examples["original_predictions"])]
    perturbation = adversarial - original
    scale = float(np.abs(perturbation).max()) or 1.0
    panels.append((f"perturbation ×{1 / scale:.1f}", 0.5 + perturbation / (2 * scale), None))
    panels.append((f"{examples['attack']} ε={float(str(examples['eps'])):.3f}", adversarial,
                   examples["adversarial_predictions"]))  # fmt: skip
    if "defended" in examples:
        panels.append(
            (f"after {examples['defense']}", np.asarray(examples["defended"]), examples["defended_predictions"])
        )
    targets = examples.get("targets")
    count = len(original)
    figure, axes = plt.subplots(count, len(panels), figsize=(1.9 * len(panels), 1.9 * count), squeeze=False)
    for row in range(count):
        for column, (title, images, predictions) in enumerate(panels):
            axis = axes[row][column]
            image = np.clip(images[row], 0.0, 1.0)
            axis.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            caption = [title] if row == 0 else []
            if column == 0:
                caption.append(f"class {int(labels[row])}, pred {int(np.asarray(predictions)[row])}")
            elif predictions is not None:
                target = f" (target {int(np.asarray(targets)[row])})" if targets is not None and column == 2 else ""
                caption.append(f"pred {int(np.asarray(predictions)[row])}{target}")
            axis.set_title("\n".join(caption), fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def summary_table(result: AuditResult) -> str:
    """The short table printed after an audit: adversarial accuracy per attack and ε, without and with each defense.

    Parameters
    ----------
    result : AuditResult
        What the audit found.
    """
    eps_values = sorted({float(str(row["eps"])) for row in result.evasion if row.get("eps") is not None})
    defenses = list(dict.fromkeys(str(row["defense"]) for row in result.defenses))
    header = f"{'attack':<14}{'defense':<19}" + "".join(f"{f'ε={eps:.3g}':>9}" for eps in eps_values)
    lines = [header, "-" * len(header)]
    for attack in dict.fromkeys(str(row["attack"]) for row in result.evasion):
        for defense in ["none", *defenses]:
            rows = (
                [r for r in result.evasion if r["attack"] == attack]
                if defense == "none"
                else [r for r in result.defenses if r["attack"] == attack and r["defense"] == defense]
            )
            by_eps = {
                float(str(r["eps"])): float(str(r["adversarial_accuracy"])) for r in rows if r.get("eps") is not None
            }
            cells = "".join(f"{by_eps[eps]:>9.3f}" if eps in by_eps else f"{'':>9}" for eps in eps_values)
            lines.append(f"{attack if defense == 'none' else '':<14}{defense:<19}{cells}")
    targeted = [r for r in result.evasion if r["attack"] == "bim-targeted" and r.get("eps") is not None]
    if targeted:
        last = max(targeted, key=lambda r: float(str(r["eps"])))
        lines.append(
            f"targeted BIM success at ε={float(str(last['eps'])):.3g}: {float(str(last['targeted_success_rate'])):.3f} "
            f"[{float(str(last['targeted_success_rate_low'])):.3f}, {float(str(last['targeted_success_rate_high'])):.3f}]"
        )
    return "\n".join(lines)
