"""Backdoor forensics of the audited model: Neural Cleanse, STRIP, fine-pruning, activation clustering.

Issue 16 asks, for any run (a clean run being the control), whether the final global model
carries a backdoor. The four methods are implemented in their own modules
(:mod:`~fl_poison.audit.neural_cleanse`, :mod:`~fl_poison.audit.strip`,
:mod:`~fl_poison.audit.fine_pruning`, :mod:`~fl_poison.audit.activation_clustering`, each with
its paper); this module decides what each is run on and gathers what they find. Steps:

1. The probed backdoor (:func:`backdoor_probe`). The run's attack, looked up in the attack
   registry, gives its trigger for the run's settings and input shape (``AttackSpec.trigger``:
   BadNets' patch, the blend image, DBA's *global* trigger) and its target class (the
   server-side evaluation the attack registers, :func:`clients.registry.evaluation_for`, as the
   ServerApp measures the ASR). A run whose attack has no trigger (no attack, label flipping, the
   Byzantine and model-poisoning attacks) is probed with the trigger a BadNets attack of the same
   settings would stamp (``trigger-size``, ``trigger-value``, ``trigger-position``) and its
   ``target-class``, so that the clean control is measured exactly as a backdoored run is; the
   output says so (``trigger: none in the run; BadNets' default trigger as the probe``). Neural
   Cleanse needs no trigger; the trigger-dependent results of such a run (STRIP, fine-pruning's
   ASR, activation clustering) measure how the model treats a patch it was never taught.
2. The server's rows. In federated learning the server holds no client data; the audit gives it
   ``server-rows`` of the run's held-out rows as its small clean set and reports accuracy and ASR
   on the others only. The split is one seeded permutation of the held-out rows,
   ``numpy.random.default_rng((seed, 0)).permutation(N)`` (the draw :func:`~fl_poison.audit.strip.strip_audit`
   makes with ``pool_rows = server-rows``): its first ``server-rows`` positions are the server's
   set, the rest the evaluation rows.
3. Neural Cleanse reverse-engineers a trigger per class on the server's set (the defender's
   clean images); each reversed trigger's attack success is measured again on the evaluation
   rows, which the optimisation never saw.
4. STRIP: the server's set is the overlay pool and fits the detection boundary; up to
   ``inputs`` evaluation rows are scored clean and, when their class is not the target, stamped.
5. Fine-pruning ranks the units and fine-tunes on the server's set; clean accuracy and ASR are
   measured on the evaluation rows (clean, and stamped with their true labels). The fine-tuning
   step size is 0.01 here, not the module's 0.05: on digits (100 server rows, 10 epochs, SGD with
   momentum 0.9) 0.05 cost the unpruned clean model 2 to 7 points of accuracy (seed-dependent),
   0.01 none, and 0.01 still took a BadNets FedAvg model's ASR at 90 % pruning from 0.96 to 0.18
   (0.05: to 0.01, at 11 more points of accuracy). Besides the largest fraction, the summary
   gives the paper's operating point: the largest fraction whose clean accuracy after its last
   stage stays within 4 points of the unpruned model's (:data:`ACCURACY_TOLERANCE`).
6. Activation clustering runs on a stand-in poisoned set built from all held-out rows (the
   method reports no accuracy; see its module for why the stand-in and what it means).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TypeVar

import numpy as np
import torch

from clients.backdoors import BackdoorEvaluation
from clients.registry import attack_named, evaluation_for
from clients.targeting import TARGET_CLASS
from clients.triggers import Trigger
from fl_poison.audit.activation_clustering import (
    ActivationClusteringResult,
    ActivationClusteringSettings,
    activation_clustering,
)
from fl_poison.audit.fine_pruning import FinePruningRow, FinePruningSettings, fine_prune, predicted_classes
from fl_poison.audit.neural_cleanse import NeuralCleanseResult, NeuralCleanseSettings, reverse_engineer, stamp
from fl_poison.audit.strip import StripResult, StripSettings, strip_audit
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import LabeledTensors
from fl_poison.core.models import SplitClassifier
from fl_poison.core.settings import ConfigError

PROBE_ATTACK = "badnets"
PROBE_NOTE = "none in the run; BadNets' default trigger as the probe"
DEFAULT_SERVER_ROWS = 100
MIN_EVALUATION_ROWS = 20
FINE_TUNE_LEARNING_RATE = 0.01
ACCURACY_TOLERANCE = 0.04
EVALUATION_BATCH = 512
SPLIT_DRAW = (
    "numpy default_rng((seed, 0)).permutation of the held-out rows: the first server_rows are the server's clean "
    "set (Neural Cleanse's images, STRIP's pool, fine-pruning's ranking and fine-tuning rows), the others the "
    "evaluation rows (every accuracy and ASR); activation clustering's stand-in set uses all held-out rows"
)

Item = TypeVar("Item")
Advance = Callable[[str], None]


@dataclass(frozen=True)
class ForensicsSettings:
    """What the forensics run with (each method's seed is replaced by the audit's seed).

    Attributes
    ----------
    server_rows : int
        Held-out rows given to the server as its clean set (step 2); the others are evaluated on.
    neural_cleanse : NeuralCleanseSettings
        Neural Cleanse's optimisation and outlier test.
    strip : StripSettings
        STRIP's overlays, audited rows and preset false rejection rate (its ``pool_rows`` is
        replaced by ``server_rows``).
    fine_pruning : FinePruningSettings
        Pruned fractions and fine-tuning (step size :data:`FINE_TUNE_LEARNING_RATE`, see step 5).
    activation_clustering : ActivationClusteringSettings
        Reduction, segmentation, thresholds and the stand-in set's stamped share.
    """

    server_rows: int = DEFAULT_SERVER_ROWS
    neural_cleanse: NeuralCleanseSettings = field(default_factory=NeuralCleanseSettings)
    strip: StripSettings = field(default_factory=StripSettings)
    fine_pruning: FinePruningSettings = field(
        default_factory=lambda: FinePruningSettings(learning_rate=FINE_TUNE_LEARNING_RATE)
    )
    activation_clustering: ActivationClusteringSettings = field(default_factory=ActivationClusteringSettings)

    def seeded(self, seed: int) -> ForensicsSettings:
        """These settings with every method's seed set to ``seed`` and STRIP's pool to ``server_rows``.

        Parameters
        ----------
        seed : int
            The audit's seed.
        """
        return replace(
            self,
            neural_cleanse=replace(self.neural_cleanse, seed=seed),
            strip=replace(self.strip, seed=seed, pool_rows=self.server_rows),
            fine_pruning=replace(self.fine_pruning, seed=seed),
            activation_clustering=replace(self.activation_clustering, seed=seed),
        )

    def steps(self, num_classes: int) -> int:
        """Progress steps of :func:`run_forensics`: one per class, STRIP, one per fraction, clustering.

        Parameters
        ----------
        num_classes : int
            Number of classes.
        """
        return num_classes + 1 + len(self.fine_pruning.prune_fractions) + 1


@dataclass(frozen=True)
class BackdoorProbe:
    """The trigger and target the forensics measure (step 1).

    Attributes
    ----------
    trigger : Trigger
        The run's trigger (DBA: the global one), or BadNets' for the run's settings.
    target : int
        The backdoor's target class.
    attack : str
        The run's ``attack``.
    in_run : bool
        Whether the run's attack stamped this trigger.
    note : str
        What the trigger is, for the output.
    """

    trigger: Trigger
    target: int
    attack: str
    in_run: bool
    note: str


def backdoor_probe(
    config: ExperimentConfig, input_shape: tuple[int, int, int], test_set: LabeledTensors, num_classes: int
) -> BackdoorProbe:
    """The run's trigger and target, or BadNets' as the probe (step 1 of the module docstring).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of the inputs.
    test_set : LabeledTensors
        The held-out rows (one row is stamped to read the attack's evaluation target).
    num_classes : int
        Number of classes.
    """
    attack = attack_named(config.attack)
    if attack is not None and attack.trigger is not None:
        evaluation = evaluation_for(config, LabeledTensors(test_set.x[:1], test_set.y[:1]), num_classes)
        target = evaluation.target if isinstance(evaluation, BackdoorEvaluation) else config[TARGET_CLASS]
        return BackdoorProbe(
            attack.trigger(config, input_shape), int(target), config.attack, True, f"the run's {config.attack} trigger"
        )
    probe = attack_named(PROBE_ATTACK)
    if probe is None or probe.trigger is None:
        raise RuntimeError(f"the {PROBE_ATTACK} attack is not registered with a trigger")
    target = int(config[TARGET_CLASS])
    if not 0 <= target < num_classes:
        raise ConfigError.bad_value(TARGET_CLASS.key, target, f"a class of the data, 0 to {num_classes - 1}")
    return BackdoorProbe(probe.trigger(config, input_shape), target, config.attack, False, PROBE_NOTE)


@dataclass(frozen=True)
class ServerSplit:
    """The held-out rows split into the server's clean set and the evaluation rows (step 2).

    Attributes
    ----------
    server_rows : np.ndarray
        Positions in the held-out rows of the server's set, increasing.
    evaluation_rows : np.ndarray
        Positions of the others, increasing.
    """

    server_rows: np.ndarray
    evaluation_rows: np.ndarray


def check_server_rows(rows: int, server_rows: int) -> None:
    """Fail with one line naming ``--server-rows`` unless ``server_rows`` leaves :data:`MIN_EVALUATION_ROWS` of ``rows``.

    Parameters
    ----------
    rows : int
        Held-out rows.
    server_rows : int
        Rows the server gets.
    """
    if not 1 <= server_rows <= rows - MIN_EVALUATION_ROWS:
        raise ConfigError.bad_value(
            "--server-rows",
            server_rows,
            f"an integer from 1 to {rows - MIN_EVALUATION_ROWS} (the run has {rows} held-out rows and at least "
            f"{MIN_EVALUATION_ROWS} are kept for evaluation)",
        )


def server_split(rows: int, server_rows: int, seed: int) -> ServerSplit:
    """Step 2's seeded split of ``rows`` held-out rows.

    Parameters
    ----------
    rows : int
        Held-out rows.
    server_rows : int
        Rows the server gets.
    seed : int
        The audit's seed.

    Raises
    ------
    ConfigError
        One line naming ``--server-rows`` when fewer than :data:`MIN_EVALUATION_ROWS` rows would be left.
    """
    check_server_rows(rows, server_rows)
    order = np.random.default_rng((seed, 0)).permutation(rows)
    return ServerSplit(np.sort(order[:server_rows]), np.sort(order[server_rows:]))


def reversed_trigger_success(
    model: torch.nn.Module, images: torch.Tensor, result: NeuralCleanseResult, target: int
) -> float:
    """Share of ``images`` that class ``target``'s reversed trigger sends to ``target``.

    Parameters
    ----------
    model : torch.nn.Module
        The audited classifier.
    images : torch.Tensor
        ``(N, C, H, W)`` inputs (the evaluation rows).
    result : NeuralCleanseResult
        Neural Cleanse's reversed masks and patterns.
    target : int
        The class.
    """
    mask, pattern = torch.from_numpy(result.masks[target]), torch.from_numpy(result.patterns[target])
    return float(np.mean(predicted_classes(model, stamp(images, mask, pattern), EVALUATION_BATCH) == target))


def _tracked(items: Iterable[Item], advance: Advance, label: Callable[[Item], str]) -> Iterator[Item]:
    for item in items:
        yield item
        advance(label(item))


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class ForensicsResult:
    """What the forensics found (step 3 to 6), ready for the audit's files.

    Attributes
    ----------
    probe : BackdoorProbe
        The probed trigger and target.
    split : ServerSplit
        The server's set and the evaluation rows.
    settings : ForensicsSettings
        The settings run with (seeded).
    clean_accuracy : float
        Accuracy of the audited model on the evaluation rows.
    attack_success_rate : float
        ASR of the probed trigger on the evaluation rows whose class is not the target.
    neural_cleanse : NeuralCleanseResult
        Reversed triggers and the outlier test (optimised on the server's set).
    reversed_success : np.ndarray
        ``(K,)`` share of the evaluation rows each class's reversed trigger sends to that class.
    strip : StripResult
        STRIP's entropies, boundary, AUROC and detection rate.
    fine_pruning : tuple[FinePruningRow, ...]
        One row per fraction and stage.
    activation_clustering : ActivationClusteringResult
        Per-class splits and the target's flag.
    seconds : dict[str, float]
        Wall seconds of each method.
    """

    probe: BackdoorProbe
    split: ServerSplit
    settings: ForensicsSettings
    clean_accuracy: float
    attack_success_rate: float
    neural_cleanse: NeuralCleanseResult
    reversed_success: np.ndarray
    strip: StripResult
    fine_pruning: tuple[FinePruningRow, ...]
    activation_clustering: ActivationClusteringResult
    seconds: dict[str, float]

    def neural_cleanse_rows(self) -> list[dict[str, object]]:
        """Rows of ``neural_cleanse.csv``: one per class."""
        result = self.neural_cleanse
        return [
            {
                "class": k,
                "mask_l1": float(result.mask_l1[k]),
                "anomaly_index": float(result.anomaly_index[k]),
                "flagged": k in result.flagged,
                "attack_success": float(self.reversed_success[k]),
                "attack_success_server_rows": float(result.attack_success[k]),
                "is_target": k == self.probe.target,
                "steps_run": int(result.steps_run[k]),
                "seconds": round(float(result.seconds[k]), 3),
            }
            for k in range(len(result.mask_l1))
        ]

    def fine_pruning_rows(self) -> list[dict[str, object]]:
        """Rows of ``fine_pruning.csv``: one per fraction and stage."""
        return [{**asdict(row), "seconds": round(row.seconds, 3)} for row in self.fine_pruning]

    def strip_rows(self) -> list[dict[str, object]]:
        """Rows of ``strip.csv``: the entropy ``H`` of every scored input (pool, clean, triggered)."""
        result = self.strip
        threshold = result.threshold
        rows: list[dict[str, object]] = []
        for role, positions, entropies in (
            ("pool", result.pool_rows, result.pool_entropies),
            ("clean", result.clean_rows, result.clean_entropies),
            ("triggered", result.triggered_rows, result.triggered_entropies),
        ):
            for index, (position, entropy) in enumerate(zip(positions, entropies, strict=True)):
                row: dict[str, object] = {
                    "input": role,
                    "test_row": int(position),
                    "entropy": float(entropy),
                    "rejected": bool(entropy <= threshold) if role != "pool" else None,
                }
                if role == "triggered":
                    row["sent_to_target"] = bool(result.triggered_success[index])
                rows.append(row)
        return rows

    def activation_clustering_rows(self) -> list[dict[str, object]]:
        """Rows of ``activation_clustering.csv``: one per class."""
        return [
            {**asdict(summary), "class": summary.label, "is_target": summary.label == self.probe.target}
            for summary in self.activation_clustering.classes
        ]

    def largest_fraction(self) -> tuple[FinePruningRow | None, FinePruningRow | None]:
        """The unpruned model's row and the largest fraction's last stage (fine-tuned when run)."""
        rows = self.fine_pruning
        before = next((row for row in rows if row.pruned_units == 0 and row.stage == "pruned"), None)
        largest = max(row.fraction for row in rows)
        last = [row for row in rows if row.fraction == largest]
        return before, (last[-1] if last else None)

    def within_tolerance(self) -> FinePruningRow | None:
        """The largest fraction's last stage whose clean accuracy is within :data:`ACCURACY_TOLERANCE` of the unpruned model's."""
        before, _ = self.largest_fraction()
        if before is None:
            return None
        last_stage = {row.fraction: row for row in self.fine_pruning}
        kept = [row for row in last_stage.values() if row.clean_accuracy >= before.clean_accuracy - ACCURACY_TOLERANCE]
        return max(kept, key=lambda row: row.fraction, default=None)

    def block(self) -> dict[str, object]:
        """The ``forensics`` block of ``audit.json``: what was probed, on which rows, and each method's summary."""
        nc, strip, clustering = self.neural_cleanse, self.strip, self.activation_clustering
        before, after = self.largest_fraction()
        target = self.probe.target
        return {
            "trigger": self.probe.note,
            "trigger_in_run": self.probe.in_run,
            "attack": self.probe.attack,
            "target": target,
            "rows": {
                "held_out": len(self.split.server_rows) + len(self.split.evaluation_rows),
                "server": len(self.split.server_rows),
                "evaluation": len(self.split.evaluation_rows),
                "split": SPLIT_DRAW,
            },
            "evaluation_clean_accuracy": self.clean_accuracy,
            "evaluation_attack_success_rate": self.attack_success_rate,
            "neural_cleanse": {
                "flagged": list(nc.flagged),
                "target_flagged": target in nc.flagged,
                "target_anomaly_index": _finite(float(nc.anomaly_index[target])),
                "target_mask_l1": float(nc.mask_l1[target]),
                "median_l1": nc.median_l1,
                "mad": nc.mad,
                "images": "the server's set (optimisation); attack_success on the evaluation rows",
                "settings": asdict(self.settings.neural_cleanse),
                "seconds": round(self.seconds["neural_cleanse"], 3),
            },
            "strip": {
                "auroc": strip.auroc,
                "auroc_successful": strip.auroc_successful,
                "detection_rate": strip.detection_rate,
                "detection_rate_successful": strip.detection_rate_successful,
                "false_rejection_rate": strip.false_rejection_rate,
                "threshold": strip.threshold,
                "pool_rows": len(strip.pool_rows),
                "clean_inputs": len(strip.clean_rows),
                "triggered_inputs": len(strip.triggered_rows),
                "settings": asdict(self.settings.strip),
                "seconds": round(strip.seconds, 3),
            },
            "fine_pruning": {
                "largest_fraction": after.fraction if after else None,
                "stage": after.stage if after else None,
                "accuracy_before": before.clean_accuracy if before else None,
                "asr_before": before.attack_success_rate if before else None,
                "accuracy_after": after.clean_accuracy if after else None,
                "asr_after": after.attack_success_rate if after else None,
                "within_4_points": None
                if (kept := self.within_tolerance()) is None
                else {
                    "fraction": kept.fraction,
                    "stage": kept.stage,
                    "accuracy": kept.clean_accuracy,
                    "asr": kept.attack_success_rate,
                },
                "settings": asdict(self.settings.fine_pruning),
                "pruned": "units of the penultimate representation, least active on the server's set first",
                "seconds": round(self.seconds["fine_pruning"], 3),
            },
            "activation_clustering": {
                "target_flagged": clustering.target_flagged,
                "flagged_classes": list(clustering.flagged_classes),
                "target_silhouette_anomaly": next(
                    (c.silhouette_anomaly for c in clustering.classes if c.label == target), None
                ),
                "precision": clustering.precision,
                "recall": clustering.recall,
                "stand_in_rows": len(clustering.source_rows),
                "stamped_rows": int(clustering.stamped.sum()),
                "data": "stand-in poisoned set: held-out rows, some stamped and labelled as the target",
                "settings": asdict(self.settings.activation_clustering),
                "seconds": round(clustering.seconds, 3),
            },
        }


def run_forensics(
    model: SplitClassifier,
    test_set: LabeledTensors,
    probe: BackdoorProbe,
    num_classes: int,
    settings: ForensicsSettings,
    seed: int,
    advance: Advance = lambda label: None,
) -> ForensicsResult:
    """Steps 2 to 6 of the module docstring on ``model`` (never modified).

    Parameters
    ----------
    model : SplitClassifier
        The audited model, in evaluation mode.
    test_set : LabeledTensors
        The run's held-out rows.
    probe : BackdoorProbe
        The trigger and target to measure (:func:`backdoor_probe`).
    num_classes : int
        Number of classes.
    settings : ForensicsSettings
        The methods' settings (their seeds are replaced by ``seed``).
    seed : int
        The audit's seed.
    advance : Callable[[str], None]
        Called after each progress step (:meth:`ForensicsSettings.steps` of them) with its label.
    """
    settings = settings.seeded(seed)
    split = server_split(len(test_set), settings.server_rows, seed)
    server, evaluation = test_set.rows(split.server_rows), test_set.rows(split.evaluation_rows)
    triggered = LabeledTensors(probe.trigger.apply(evaluation.x), evaluation.y)
    labels = evaluation.y.numpy()
    attacked = labels != probe.target
    clean_accuracy = float(np.mean(predicted_classes(model, evaluation.x, EVALUATION_BATCH) == labels))
    attack_success_rate = (
        float(
            np.mean(predicted_classes(model, triggered.x[torch.from_numpy(attacked)], EVALUATION_BATCH) == probe.target)
        )
        if attacked.any()
        else math.nan
    )
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    nc = reverse_engineer(
        model,
        server.x,
        num_classes,
        settings.neural_cleanse,
        lambda classes: _tracked(classes, advance, lambda k: f"neural cleanse class {k}"),
    )
    reversed_success = np.array([reversed_trigger_success(model, evaluation.x, nc, k) for k in range(num_classes)])
    seconds["neural_cleanse"] = time.perf_counter() - started

    strip = strip_audit(model, test_set, probe.trigger.apply, probe.target, settings.strip)
    if not np.array_equal(strip.pool_rows, split.server_rows):
        raise RuntimeError("STRIP's pool is not the server's set: strip_audit's draw changed")
    seconds["strip"] = strip.seconds
    advance("strip")

    started = time.perf_counter()
    pruning = fine_prune(
        model,
        server,
        evaluation,
        triggered,
        probe.target,
        settings.fine_pruning,
        lambda fractions: _tracked(fractions, advance, lambda f: f"fine-pruning {f:g}"),
    )
    seconds["fine_pruning"] = time.perf_counter() - started

    clustering = activation_clustering(
        model, test_set, probe.trigger.apply, probe.target, settings.activation_clustering
    )
    seconds["activation_clustering"] = clustering.seconds
    advance("activation clustering")
    return ForensicsResult(
        probe=probe,
        split=split,
        settings=settings,
        clean_accuracy=clean_accuracy,
        attack_success_rate=attack_success_rate,
        neural_cleanse=nc,
        reversed_success=reversed_success,
        strip=strip,
        fine_pruning=tuple(pruning),
        activation_clustering=clustering,
        seconds=seconds,
    )


def summary_lines(result: ForensicsResult) -> list[str]:
    """The forensics part of the printed table: flagged classes, STRIP, fine-pruning, clustering.

    Parameters
    ----------
    result : ForensicsResult
        What the forensics found.
    """
    probe, nc, strip = result.probe, result.neural_cleanse, result.strip
    target = probe.target
    before, after = result.largest_fraction()
    clustering = result.activation_clustering
    lines = [
        f"forensics: trigger: {probe.note}; target class {target}; server rows {len(result.split.server_rows)}, "
        f"evaluation rows {len(result.split.evaluation_rows)} (accuracy {result.clean_accuracy:.3f}, "
        f"ASR {result.attack_success_rate:.3f})",
        f"  Neural Cleanse: flagged classes {list(nc.flagged) or 'none'}; target {target}: anomaly index "
        f"{float(nc.anomaly_index[target]):.2f}, mask L1 {float(nc.mask_l1[target]):.2f} (median {nc.median_l1:.2f})",
        f"  STRIP: AUROC {strip.auroc:.3f}; detection rate {strip.detection_rate:.3f} at a preset FRR of "
        f"{result.settings.strip.false_rejection_rate:g} (measured FRR {strip.false_rejection_rate:.3f})",
    ]
    if before is not None and after is not None:
        kept = result.within_tolerance()
        within = (
            f"; within 4 points of accuracy: at {kept.fraction:g} ASR {kept.attack_success_rate:.3f}, accuracy "
            f"{kept.clean_accuracy:.3f}"
            if kept is not None
            else ""
        )
        lines.append(
            f"  fine-pruning at {after.fraction:g} ({after.stage}): ASR {before.attack_success_rate:.3f} -> "
            f"{after.attack_success_rate:.3f}, accuracy {before.clean_accuracy:.3f} -> {after.clean_accuracy:.3f}"
            + within
        )
    lines.append(
        f"  activation clustering: target {target} flagged: {'yes' if clustering.target_flagged else 'no'}; "
        f"flagged classes {list(clustering.flagged_classes) or 'none'}"
    )
    return lines


def summary_fields(block: Mapping[str, object]) -> dict[str, object]:
    """The ``audit_summary.csv`` columns of a cell, read from its ``audit.json`` ``forensics`` block.

    Parameters
    ----------
    block : Mapping[str, object]
        The ``forensics`` block written by :meth:`ForensicsResult.block`.
    """

    def part(name: str) -> Mapping[str, object]:
        value = block.get(name)
        return value if isinstance(value, Mapping) else {}

    nc, strip, pruning, clustering = (
        part("neural_cleanse"),
        part("strip"),
        part("fine_pruning"),
        part("activation_clustering"),
    )
    flagged = nc.get("flagged")
    return {
        "trigger_in_run": block.get("trigger_in_run"),
        "target": block.get("target"),
        "asr": block.get("evaluation_attack_success_rate"),
        "nc_flagged": " ".join(str(k) for k in flagged) if isinstance(flagged, list) else None,
        "nc_target_flagged": nc.get("target_flagged"),
        "nc_target_anomaly_index": nc.get("target_anomaly_index"),
        "strip_auroc": strip.get("auroc"),
        "strip_detection_rate": strip.get("detection_rate"),
        "fp_fraction": pruning.get("largest_fraction"),
        "fp_stage": pruning.get("stage"),
        "fp_asr_before": pruning.get("asr_before"),
        "fp_asr_after": pruning.get("asr_after"),
        "fp_accuracy_before": pruning.get("accuracy_before"),
        "fp_accuracy_after": pruning.get("accuracy_after"),
        **_within_tolerance_fields(pruning.get("within_4_points")),
        "ac_target_flagged": clustering.get("target_flagged"),
        "ac_flagged": " ".join(str(k) for k in flags)
        if isinstance(flags := clustering.get("flagged_classes"), list)
        else None,
    }


def _within_tolerance_fields(point: object) -> dict[str, object]:
    values = point if isinstance(point, Mapping) else {}
    return {
        "fp_4pt_fraction": values.get("fraction"),
        "fp_4pt_asr": values.get("asr"),
        "fp_4pt_accuracy": values.get("accuracy"),
    }
