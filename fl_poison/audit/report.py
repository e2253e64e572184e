"""The audit's folder ``RUN_DIR/audit``: tables, settings, figures, and the short printed table.

The folder is written whole or not at all: every file goes into a temporary folder beside it,
which is then renamed to ``audit`` (an earlier audit is moved aside first and deleted only once
the new one is in place), so a reader never sees an audit with some files missing or mixed from
two audits.

Files, each written when its part ran: ``audit.json`` (settings, the model's accuracy on the
held-out rows, seconds per part, and the ``forensics`` block), ``evasion.csv``, ``defenses.csv``,
``detector.csv`` (columns in :data:`EVASION_COLUMNS`, :data:`DEFENSE_COLUMNS`,
:data:`DETECTOR_COLUMNS`), ``accuracy_vs_eps.png`` (per attack, accuracy against ε without and
with each defense, 95 % intervals as bands), ``budgets.png`` (mean L2 and L∞ perturbation against
ε per attack) and ``examples.png`` (original, perturbation magnified, adversarial, after the first
defense, with predicted classes); the forensics' ``neural_cleanse.csv``, ``fine_pruning.csv``,
``strip.csv`` (the entropy of every scored input), ``activation_clustering.csv`` (columns in
:data:`NEURAL_CLEANSE_COLUMNS`, :data:`FINE_PRUNING_COLUMNS`, :data:`STRIP_COLUMNS`,
:data:`ACTIVATION_CLUSTERING_COLUMNS`), ``neural_cleanse.png`` (each class's reversed mask and
trigger, the run's trigger beside them when it had one), ``strip.png`` (entropy histograms and
the detection boundary) and ``fine_pruning.png`` (accuracy and ASR against the pruned fraction).
Figures are written as 256-colour PNGs (:func:`fl_poison.core.plots.save_figure`): the accuracy figure's overlapping
interval bands made a 373 KB true-colour file, 79 KB in a palette.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fl_poison.audit.forensics import ForensicsResult, summary_lines
from fl_poison.audit.pipeline import AuditResult
from fl_poison.core.plots import pyplot, save_figure
from fl_poison.core.results import write_csv, write_json

if TYPE_CHECKING:
    from matplotlib.axes import Axes

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
NEURAL_CLEANSE_COLUMNS = (
    "class", "mask_l1", "anomaly_index", "flagged", "attack_success", "attack_success_server_rows", "is_target",
    "steps_run", "seconds",
)  # fmt: skip
FINE_PRUNING_COLUMNS = (
    "fraction", "pruned_units", "units", "stage", "clean_accuracy", "attack_success_rate", "clean_rows",
    "attack_rows", "seconds",
)  # fmt: skip
STRIP_COLUMNS = ("input", "test_row", "entropy", "rejected", "sent_to_target")
ACTIVATION_CLUSTERING_COLUMNS = (
    "class", "is_target", "rows", "stamped_rows", "smaller_cluster_rows", "relative_size", "silhouette",
    "silhouette_anomaly", "flagged",
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
        parts = result.settings.get("parts", [])
        if isinstance(parts, list) and "evasion" in parts:
            write_csv(staging / "evasion.csv", result.evasion, EVASION_COLUMNS)
            plot_accuracy_vs_eps(result.evasion, result.defenses, staging / "accuracy_vs_eps.png")
            plot_budgets(result.evasion, staging / "budgets.png")
            if "defenses" in parts:
                write_csv(staging / "defenses.csv", result.defenses, DEFENSE_COLUMNS)
            if "detector" in parts:
                write_csv(staging / "detector.csv", result.detector, DETECTOR_COLUMNS)
            if result.examples:
                plot_examples(result.examples, staging / "examples.png")
        if result.forensics is not None:
            write_forensics(staging, result.forensics)
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
    figure, axes = plt.subplots(lines, columns, figsize=(3.0 * columns, 2.4 * lines), squeeze=False, sharey=True)
    for axis, attack in zip(axes.flat, attacks, strict=False):
        curves = {"no defense": _curve([r for r in evasion if r["attack"] == attack], "adversarial_accuracy")}
        for name in dict.fromkeys(str(row["defense"]) for row in defenses):
            rows = [r for r in defenses if r["attack"] == attack and r["defense"] == name]
            curves[name] = _curve(rows, "adversarial_accuracy")
        for label, (eps, value, low, high) in curves.items():
            if not eps:
                continue
            (line,) = axis.plot(eps, value, marker="o", markersize=2, linewidth=1, label=label)
            axis.fill_between(eps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        axis.set_title(attack, fontsize=8)
        axis.set_xlabel("ε (L∞, inputs in [0, 1])", fontsize=7)
        axis.tick_params(labelsize=6)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(attacks) :]:
        axis.set_visible(False)
    axes[0][0].set_ylabel("accuracy", fontsize=7)
    axes[0][0].legend(fontsize=5)
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


def write_forensics(folder: Path, forensics: ForensicsResult) -> None:
    """The forensics' tables and figures in ``folder`` (see the module docstring).

    Parameters
    ----------
    folder : Path
        The (staging) audit folder.
    forensics : ForensicsResult
        What the forensics found.
    """
    write_csv(folder / "neural_cleanse.csv", forensics.neural_cleanse_rows(), NEURAL_CLEANSE_COLUMNS)
    write_csv(folder / "fine_pruning.csv", forensics.fine_pruning_rows(), FINE_PRUNING_COLUMNS)
    write_csv(folder / "strip.csv", forensics.strip_rows(), STRIP_COLUMNS)
    write_csv(
        folder / "activation_clustering.csv", forensics.activation_clustering_rows(), ACTIVATION_CLUSTERING_COLUMNS
    )
    plot_neural_cleanse(forensics, folder / "neural_cleanse.png")
    plot_strip(forensics, folder / "strip.png")
    plot_fine_pruning(forensics, folder / "fine_pruning.png")


def _show(axis: Axes, image: np.ndarray, title: str, color: str = "black") -> None:
    picture = np.clip(image, 0.0, 1.0)
    shown = picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0)
    axis.imshow(shown, cmap="gray", vmin=0, vmax=1)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=6, color=color)
    for spine in axis.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(2 if color != "black" else 0.5)


def plot_neural_cleanse(forensics: ForensicsResult, path: Path, per_line: int = 10) -> None:
    """Each class's reversed mask and trigger (mask × pattern), flagged classes in red, the target framed.

    When the run had a trigger, its mask and stamp are drawn in a last column beside the classes.

    Parameters
    ----------
    forensics : ForensicsResult
        What the forensics found.
    path : Path
        The PNG file.
    per_line : int
        Classes per line of panels.
    """
    plt = pyplot()
    result, probe = forensics.neural_cleanse, forensics.probe
    classes = len(result.mask_l1)
    columns = min(classes, per_line) + (1 if probe.in_run else 0)
    blocks = math.ceil(classes / per_line)
    figure, axes = plt.subplots(2 * blocks, columns, figsize=(0.9 * columns, 2.4 * blocks), squeeze=False)
    for axis in axes.flat:
        axis.set_visible(False)
    for k in range(classes):
        line, column = divmod(k, per_line)
        color = "red" if k in result.flagged else ("blue" if k == probe.target else "black")
        mask, pattern = result.masks[k], result.patterns[k]
        index = float(result.anomaly_index[k])
        caption = f"class {k}{' (target)' if k == probe.target else ''}\nL1 {result.mask_l1[k]:.1f}\n" + (
            f"AI {index:.2f}" if math.isfinite(index) else f"AI {index}"
        )
        for row, (image, title) in enumerate(((mask[None], caption), (mask[None] * pattern, ""))):
            axis = axes[2 * line + row][column]
            axis.set_visible(True)
            _show(axis, image, title, color)
    if probe.in_run:
        trigger_mask = probe.trigger.mask.numpy()
        trigger_stamp = (probe.trigger.mask * probe.trigger.pattern).numpy()
        for row, (image, title) in enumerate(
            ((trigger_mask.max(axis=0, keepdims=True), "the run's\ntrigger\n(mask, stamp)"), (trigger_stamp, ""))
        ):
            axis = axes[row][columns - 1]
            axis.set_visible(True)
            _show(axis, image, title, "green")
    figure.suptitle(
        f"Neural Cleanse: reversed masks (top) and triggers, mask × pattern (bottom); AI = anomaly index; "
        f"flagged in red, target {probe.target} in blue unless flagged",
        fontsize=7,
    )
    figure.tight_layout()
    save_figure(figure, path)


def plot_strip(forensics: ForensicsResult, path: Path) -> None:
    """Histograms of STRIP's entropy: the pool, the clean and the triggered inputs, and the boundary.

    Parameters
    ----------
    forensics : ForensicsResult
        What the forensics found.
    path : Path
        The PNG file.
    """
    plt = pyplot()
    result = forensics.strip
    figure, axis = plt.subplots(figsize=(4.2, 2.6))
    values = [result.pool_entropies, result.clean_entropies, result.triggered_entropies]
    top = max((float(np.max(v)) for v in values if len(v)), default=1.0)
    bins = np.linspace(0.0, max(top, 1e-6), 30)
    for entropies, label in zip(values, ("pool (server's set)", "clean", "triggered"), strict=True):
        if len(entropies):
            axis.hist(entropies, bins=bins, alpha=0.5, label=f"{label} ({len(entropies)})", density=True)
    axis.axvline(result.threshold, color="black", linestyle="--", linewidth=1, label="boundary")
    axis.set_xlabel("entropy H (bits, mean over overlays)", fontsize=7)
    axis.set_ylabel("density", fontsize=7)
    axis.tick_params(labelsize=6)
    axis.set_title(
        f"STRIP: AUROC {result.auroc:.3f}, detection {result.detection_rate:.2f} at FRR "
        f"{forensics.settings.strip.false_rejection_rate:g}",
        fontsize=8,
    )
    axis.legend(fontsize=6)
    figure.tight_layout()
    save_figure(figure, path)


def plot_fine_pruning(forensics: ForensicsResult, path: Path) -> None:
    """Clean accuracy and ASR against the pruned fraction, after pruning and after fine-tuning.

    Parameters
    ----------
    forensics : ForensicsResult
        What the forensics found.
    path : Path
        The PNG file.
    """
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(6.0, 2.5), sharey=True)
    for axis, column, title in zip(
        axes, ("clean_accuracy", "attack_success_rate"), ("clean accuracy", "attack success rate"), strict=True
    ):
        for stage in ("pruned", "fine-tuned"):
            rows = sorted((row for row in forensics.fine_pruning if row.stage == stage), key=lambda row: row.fraction)
            if rows:
                axis.plot([row.fraction for row in rows], [getattr(row, column) for row in rows], marker="o",
                          markersize=3, linewidth=1, label=stage)  # fmt: skip
        axis.set_title(title, fontsize=8)
        axis.set_xlabel("share of penultimate units pruned", fontsize=7)
        axis.set_ylim(-0.02, 1.02)
        axis.tick_params(labelsize=6)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    figure.suptitle(f"fine-pruning (evaluation rows; trigger: {forensics.probe.note})", fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def summary_table(result: AuditResult) -> str:
    """The short table printed after an audit: adversarial accuracy per attack and ε, without and with each
    defense, then the forensics' summary.

    Parameters
    ----------
    result : AuditResult
        What the audit found.
    """
    lines = _evasion_table(result) if result.evasion else []
    if result.forensics is not None:
        lines.extend(summary_lines(result.forensics))
    return "\n".join(lines)


def _evasion_table(result: AuditResult) -> list[str]:
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
    return lines
