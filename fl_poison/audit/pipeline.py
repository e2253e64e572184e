"""The audit's settings and its steps: attacks, input defenses, the detector and backdoor forensics on one run's model.

The audit has four parts (``--parts``): ``evasion`` (steps 2, 3), ``defenses`` (step 4),
``detector`` (step 5) and ``forensics`` (step 7); the defenses and the detector act on the
evasion part's adversarial inputs, so they need it.

1. Load the run's final model and evaluation rows (:func:`fl_poison.audit.loading.load_subject`);
   the model's accuracy on all of them is recorded (it should be the run's final accuracy).
2. Draw ``samples`` test images uniformly without replacement (numpy ``default_rng([seed, 1])``).
3. Craft adversarial inputs: each budgeted attack at each ε, each minimal attack once
   (HopSkipJump on the first ``hsj-samples`` images), scored at each ε within the L∞ budget.
4. Classify clean and adversarial inputs without a defense and after each input defense.
5. Train the binary input detector (cross-fitted) and record its flag rates.
6. Rows for ``evasion.csv``, ``defenses.csv``, ``detector.csv`` with 95 % intervals
   (:mod:`fl_poison.audit.statistics`).
7. Backdoor forensics of the model (:mod:`fl_poison.audit.forensics`): Neural Cleanse, STRIP,
   fine-pruning and activation clustering, with the run's trigger or BadNets' as the probe.

Progress: :func:`run_audit` calls ``advance(label)`` after each of :func:`planned_steps` steps
(one per attack job, one per input defense, one for the detector, and the forensics' steps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fl_poison.audit.detector import cross_fitted_flags, detector_settings
from fl_poison.audit.evasion import (
    ATTACK_NAMES,
    BUDGETED_ATTACKS,
    MINIMAL_ATTACKS,
    AdversarialSet,
    art_classifier,
    attack_settings,
    craft,
    perturbation_norms,
    predict,
)
from fl_poison.audit.fine_pruning import predicted_classes
from fl_poison.audit.forensics import (
    EVALUATION_BATCH,
    ForensicsResult,
    ForensicsSettings,
    backdoor_probe,
    check_server_rows,
    run_forensics,
)
from fl_poison.audit.input_defenses import DEFENSE_NAMES, InputDefense, build_defense
from fl_poison.audit.loading import AuditSubject
from fl_poison.audit.statistics import Interval, difference_interval, proportion_interval
from fl_poison.core.models import build_model
from fl_poison.core.settings import ConfigError

DEFAULT_EPS = (0.0, 8.0 / 255.0, 0.1, 0.2, 0.3)
DEFAULT_SAMPLES = 200
DEFAULT_HSJ_SAMPLES = 20
LEVEL = 0.95
PARTS = ("evasion", "defenses", "detector", "forensics")
NEEDS_EVASION = ("defenses", "detector")

Advance = Callable[[str], None]


@dataclass(frozen=True)
class AuditSettings:
    """What an audit does.

    Attributes
    ----------
    eps : tuple[float, ...]
        L∞ budgets in [0, 1], increasing (inputs are scaled to [0, 1]).
    samples : int
        Test images attacked (all of them when the test set is smaller).
    attacks : tuple[str, ...]
        Names from :data:`fl_poison.audit.evasion.ATTACK_NAMES`.
    defenses : tuple[str, ...]
        Names from :data:`fl_poison.audit.input_defenses.DEFENSE_NAMES`.
    seed : int | None
        Seed of the sample draw, the attacks' randomness and the detector; None for the run's seed.
    hsj_samples : int
        Images HopSkipJump attacks (the first of the drawn ones).
    parts : tuple[str, ...]
        The parts run, from :data:`PARTS` (``defenses`` and ``detector`` need ``evasion``).
    forensics : ForensicsSettings
        The backdoor forensics' settings.
    threads : int
        Torch's CPU threads during the audit (restored after). One by default: on the shared
        2-core machine a gradient of 120 digits took 0.30 s with two threads against 0.017 s with
        one (the other thread waits on a busy core at every operation of a tiny model).
    """

    eps: tuple[float, ...] = DEFAULT_EPS
    samples: int = DEFAULT_SAMPLES
    attacks: tuple[str, ...] = ATTACK_NAMES
    defenses: tuple[str, ...] = DEFENSE_NAMES
    seed: int | None = None
    hsj_samples: int = DEFAULT_HSJ_SAMPLES
    parts: tuple[str, ...] = PARTS
    forensics: ForensicsSettings = field(default_factory=ForensicsSettings)
    threads: int = 1

    def __post_init__(self) -> None:
        for part in self.parts:
            if part not in PARTS:
                raise ConfigError.bad_value("--parts", part, ", ".join(PARTS))
            if part in NEEDS_EVASION and "evasion" not in self.parts:
                raise ConfigError.bad_value(
                    "--parts", ",".join(self.parts), f"{part} only with evasion (it acts on the adversarial inputs)"
                )


def parse_parts(text: str) -> tuple[str, ...]:
    """``--parts``: comma-separated parts of :data:`PARTS`, at least one, kept in the order of :data:`PARTS`.

    Parameters
    ----------
    text : str
        The option's value.

    Raises
    ------
    ConfigError
        One line naming ``--parts``.
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError.bad_value("--parts", text, ", ".join(PARTS) + " (comma-separated, at least one)")
    for name in names:
        if name not in PARTS:
            raise ConfigError.bad_value("--parts", name, ", ".join(PARTS) + " (comma-separated)")
    return tuple(part for part in PARTS if part in names)


def parse_fractions(option: str, text: str) -> tuple[float, ...]:
    """``--fp-fractions``: comma-separated shares in [0, 1), at least one, in the order given, without repeats.

    Parameters
    ----------
    option : str
        The option, for the message.
    text : str
        Its value.

    Raises
    ------
    ConfigError
        One line naming ``option``.
    """
    values: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not 0.0 <= value < 1.0:
            raise ConfigError.bad_value(option, item, "comma-separated numbers in [0, 1)")
        values.append(value)
    return tuple(dict.fromkeys(values))


def planned_steps(settings: AuditSettings, num_classes: int) -> int:
    """How many times :func:`run_audit` calls ``advance`` with ``settings`` on a model of ``num_classes``.

    Parameters
    ----------
    settings : AuditSettings
        The audit's settings.
    num_classes : int
        Number of classes.
    """
    steps = 0
    if "evasion" in settings.parts:
        steps += sum(len(settings.eps) if name in BUDGETED_ATTACKS else 1 for name in settings.attacks)
    if "defenses" in settings.parts:
        steps += len(settings.defenses)
    if "detector" in settings.parts:
        steps += 1
    if "forensics" in settings.parts:
        steps += settings.forensics.steps(num_classes)
    return steps


def parse_eps(text: str) -> tuple[float, ...]:
    """``--eps``: comma-separated budgets, each a number or a fraction ``a/b`` (``8/255``), sorted.

    Parameters
    ----------
    text : str
        The option's value.

    Raises
    ------
    ConfigError
        One line naming ``--eps``.
    """
    values = []
    for item in (part.strip() for part in text.split(",")):
        try:
            numerator, _, denominator = item.partition("/")
            value = float(numerator) / float(denominator) if denominator else float(numerator)
        except (ValueError, ZeroDivisionError):
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise ConfigError.bad_value("--eps", item, "comma-separated numbers in [0, 1] (or fractions like 8/255)")
        values.append(value)
    return tuple(sorted(set(values)))


def parse_names(option: str, text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """``--attacks`` / ``--defenses``: comma-separated names, each allowed, in the order given (``none``: no name).

    Parameters
    ----------
    option : str
        The option, for the message.
    text : str
        Its value.
    allowed : Sequence[str]
        The allowed names.

    Raises
    ------
    ConfigError
        One line naming the option.
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in allowed:
            raise ConfigError.bad_value(option, name, ", ".join(allowed) + " (comma-separated), or none")
    return tuple(dict.fromkeys(names))


@dataclass
class AuditResult:
    """What an audit found, ready for :mod:`fl_poison.audit.report`.

    Attributes
    ----------
    settings : dict[str, object]
        Everything the audit ran with (``audit.json``).
    evasion : list[dict[str, object]]
        Rows of ``evasion.csv``.
    defenses : list[dict[str, object]]
        Rows of ``defenses.csv``.
    detector : list[dict[str, object]]
        Rows of ``detector.csv``.
    examples : dict[str, object]
        Images for the example grid.
    forensics : ForensicsResult | None
        The backdoor forensics (None when not run).
    """

    settings: dict[str, object]
    evasion: list[dict[str, object]] = field(default_factory=list)
    defenses: list[dict[str, object]] = field(default_factory=list)
    detector: list[dict[str, object]] = field(default_factory=list)
    examples: dict[str, object] = field(default_factory=dict)
    forensics: ForensicsResult | None = None


def _interval_columns(prefix: str, interval: Interval) -> dict[str, float]:
    return {prefix: interval.estimate, f"{prefix}_low": interval.low, f"{prefix}_high": interval.high}


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> Interval:
    return proportion_interval(int((predictions == labels).sum()), len(labels))


def _difference(first: Interval, second: Interval, count: int) -> Interval:
    return difference_interval(first.estimate, count, second.estimate, count, LEVEL)


def draw_samples(count: int, available: int, seed: int) -> np.ndarray:
    """Positions of the audited images: ``count`` of ``available`` uniformly without replacement, sorted.

    Parameters
    ----------
    count : int
        Images wanted (all when ``available`` is smaller).
    available : int
        Rows of the test set.
    seed : int
        The audit's seed.
    """
    if count >= available:
        return np.arange(available)
    return np.sort(np.random.default_rng([seed, 1]).choice(available, size=count, replace=False))


def adversarial_sets(
    settings: AuditSettings,
    classifier: object,
    clean: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    seed: int,
    advance: Advance,
) -> list[AdversarialSet]:
    """Every attack's adversarial inputs: budgeted ones at each ε, minimal ones unbounded then at each ε.

    Parameters
    ----------
    settings : AuditSettings
        The audit's settings.
    classifier : object
        ART's classifier of the model.
    clean : np.ndarray
        The audited images.
    labels : np.ndarray
        Their classes.
    num_classes : int
        Number of classes.
    seed : int
        The audit's seed.
    advance : Callable[[str], None]
        Called after each (attack, ε) job with its label.
    """
    jobs: list[tuple[str, float | None]] = []
    for name in settings.attacks:
        jobs.extend((name, eps) for eps in settings.eps) if name in BUDGETED_ATTACKS else jobs.append((name, None))
    found: list[AdversarialSet] = []
    for name, eps in jobs:
        if name in MINIMAL_ATTACKS:
            count = min(settings.hsj_samples, len(clean)) if name == "hopskipjump" else len(clean)
            unbounded = craft(name, classifier, clean[:count], labels[:count], None, num_classes, seed)
            found.append(unbounded)
            found.extend(unbounded.within_budget(clean[:count], budget) for budget in settings.eps)
        else:
            found.append(craft(name, classifier, clean, labels, eps, num_classes, seed))
        advance(name if eps is None else f"{name} eps={eps:.3g}")
    return found


def evasion_row(
    adversarial: AdversarialSet,
    clean: np.ndarray,
    labels: np.ndarray,
    clean_predictions: np.ndarray,
    adversarial_predictions: np.ndarray,
) -> dict[str, object]:
    """One row of ``evasion.csv``.

    Parameters
    ----------
    adversarial : AdversarialSet
        The attack's inputs.
    clean : np.ndarray
        All audited images.
    labels : np.ndarray
        Their classes.
    clean_predictions : np.ndarray
        The model's classes of all audited images.
    adversarial_predictions : np.ndarray
        The model's classes of the adversarial inputs.
    """
    rows = adversarial.rows
    count = len(rows)
    clean_accuracy = _accuracy(clean_predictions[rows], labels[rows])
    adversarial_accuracy = _accuracy(adversarial_predictions, labels[rows])
    l2, linf = perturbation_norms(clean[rows], adversarial.adversarial)
    minimal = adversarial.attack in MINIMAL_ATTACKS
    norm = "linf" if not minimal or adversarial.eps is not None else attack_settings(adversarial.attack, 0)["norm"]
    row: dict[str, object] = {
        "attack": adversarial.attack,
        "eps": adversarial.eps,
        "norm": str(norm).split(" ")[0],
        "budget": "unbounded" if adversarial.eps is None else ("scored within eps" if minimal else "eps"),
        "samples": count,
        **_interval_columns("clean_accuracy", clean_accuracy),
        **_interval_columns("adversarial_accuracy", adversarial_accuracy),
        **_interval_columns("accuracy_drop", _difference(clean_accuracy, adversarial_accuracy, count)),
    }
    if adversarial.targets is not None:
        hits = int((adversarial_predictions == adversarial.targets).sum())
        row.update(_interval_columns("targeted_success_rate", proportion_interval(hits, count, LEVEL)))
    row.update(
        {
            "mean_l2": float(l2.mean()) if count else math.nan,
            "max_l2": float(l2.max(initial=0.0)),
            "mean_linf": float(linf.mean()) if count else math.nan,
            "max_linf": float(linf.max(initial=0.0)),
            "seconds": round(adversarial.seconds, 3),
        }
    )
    return row


def defense_rows(
    defense: InputDefense,
    classifier: object,
    clean: np.ndarray,
    labels: np.ndarray,
    clean_predictions: np.ndarray,
    sets: Sequence[AdversarialSet],
    set_predictions: Sequence[np.ndarray],
) -> list[dict[str, object]]:
    """Rows of ``defenses.csv`` for ``defense``: accuracy with it, and its difference to no defense.

    Parameters
    ----------
    defense : InputDefense
        The input defense.
    classifier : object
        ART's classifier of the model.
    clean : np.ndarray
        All audited images.
    labels : np.ndarray
        Their classes.
    clean_predictions : np.ndarray
        The undefended model's classes of the clean images.
    sets : Sequence[AdversarialSet]
        Every attack's inputs.
    set_predictions : Sequence[np.ndarray]
        The undefended model's classes of each set.
    """
    defended_clean = predict(classifier, defense(clean))
    rows: list[dict[str, object]] = []
    for adversarial, undefended in zip(sets, set_predictions, strict=True):
        index = adversarial.rows
        count = len(index)
        defended = predict(classifier, defense(adversarial.adversarial))
        clean_with = _accuracy(defended_clean[index], labels[index])
        clean_without = _accuracy(clean_predictions[index], labels[index])
        adversarial_with = _accuracy(defended, labels[index])
        adversarial_without = _accuracy(undefended, labels[index])
        row: dict[str, object] = {
            "defense": defense.name,
            "attack": adversarial.attack,
            "eps": adversarial.eps,
            "samples": count,
            **_interval_columns("clean_accuracy", clean_with),
            **_interval_columns("adversarial_accuracy", adversarial_with),
            **_interval_columns("clean_difference", _difference(clean_with, clean_without, count)),
            **_interval_columns("adversarial_difference", _difference(adversarial_with, adversarial_without, count)),
        }
        if adversarial.targets is not None:
            hits = int((defended == adversarial.targets).sum())
            row.update(_interval_columns("targeted_success_rate", proportion_interval(hits, count, LEVEL)))
        rows.append(row)
    return rows


def detector_rows(
    subject: AuditSubject,
    settings: AuditSettings,
    clean: np.ndarray,
    sets: Sequence[AdversarialSet],
    seed: int,
    device: str,
) -> tuple[list[dict[str, object]], dict[str, object] | None]:
    """Rows of ``detector.csv`` and the detector's settings (none when no budgeted attack has an ε > 0).

    Parameters
    ----------
    subject : AuditSubject
        The audited run.
    settings : AuditSettings
        The audit's settings.
    clean : np.ndarray
        All audited images.
    sets : Sequence[AdversarialSet]
        Every attack's inputs.
    seed : int
        The audit's seed.
    device : str
        ``cpu`` or ``gpu``.
    """
    budgeted = [name for name in settings.attacks if name in BUDGETED_ATTACKS]
    training_attack = "fgsm" if "fgsm" in budgeted else (budgeted[0] if budgeted else None)
    training = [s for s in sets if s.attack == training_attack and s.eps is not None and s.eps > 0]
    if not training:
        return [], None
    scored = [s for s in sets if (s.attack in BUDGETED_ATTACKS and s.eps and s.eps > 0) or s.eps is None]
    clean_flags, flags = cross_fitted_flags(
        lambda: build_model(subject.model_name, subject.input_shape, 2),
        subject.input_shape,
        clean,
        training,
        scored,
        seed,
        device,
    )
    rows: list[dict[str, object]] = []
    for adversarial, adversarial_flags in zip(scored, flags, strict=True):
        count = len(adversarial.rows)
        benign = proportion_interval(int(clean_flags[adversarial.rows].sum()), count, LEVEL)
        flagged = proportion_interval(int(adversarial_flags.sum()), count, LEVEL)
        rows.append(
            {
                "attack": adversarial.attack,
                "eps": adversarial.eps,
                "samples": count,
                "trained_on": training_attack,
                **_interval_columns("benign_flag_rate", benign),
                **_interval_columns("adversarial_flag_rate", flagged),
                **_interval_columns("flag_rate_difference", _difference(flagged, benign, count)),
            }
        )
    return rows, dict(detector_settings(str(training_attack), [s.eps for s in training if s.eps is not None]))


def example_images(
    sets: Sequence[AdversarialSet],
    set_predictions: Sequence[np.ndarray],
    defenses: Sequence[InputDefense],
    classifier: object,
    clean: np.ndarray,
    labels: np.ndarray,
    clean_predictions: np.ndarray,
    count: int = 6,
) -> dict[str, object]:
    """Images of the example grid: seed 000's targeted BIM (else the first attack) at its largest ε.

    Parameters
    ----------
    sets, set_predictions :
        Every attack's inputs and the undefended model's classes of them.
    defenses : Sequence[InputDefense]
        The audit's defenses (the first one is shown).
    classifier : object
        ART's classifier of the model.
    clean, labels, clean_predictions :
        The audited images, their classes and the model's classes of them.
    count : int
        Images shown.
    """
    budgeted = [(s, p) for s, p in zip(sets, set_predictions, strict=True) if s.eps is not None]
    if not budgeted:
        return {}
    preferred = [(s, p) for s, p in budgeted if s.attack == "bim-targeted"] or budgeted
    attack = preferred[0][0].attack
    chosen, predictions = max(((s, p) for s, p in preferred if s.attack == attack), key=lambda pair: pair[0].eps or 0)
    shown = chosen.rows[:count]
    images: dict[str, object] = {
        "attack": chosen.attack,
        "eps": chosen.eps,
        "labels": labels[shown],
        "original": clean[shown],
        "original_predictions": clean_predictions[shown],
        "adversarial": chosen.adversarial[:count],
        "adversarial_predictions": predictions[:count],
    }
    if chosen.targets is not None:
        images["targets"] = chosen.targets[:count]
    if defenses:
        defended = defenses[0](chosen.adversarial[:count])
        images.update(
            {"defense": defenses[0].name, "defended": defended, "defended_predictions": predict(classifier, defended)}
        )
    return images


def check_fits(subject: AuditSubject, settings: AuditSettings) -> None:
    """Fail with one line before any work when ``settings`` do not fit ``subject`` (the forensics' server rows).

    Parameters
    ----------
    subject : AuditSubject
        The run's model and test rows.
    settings : AuditSettings
        The audit's settings.
    """
    if "forensics" in settings.parts:
        check_server_rows(len(subject.test_set), settings.forensics.server_rows)


def run_audit(subject: AuditSubject, settings: AuditSettings, advance: Advance = lambda label: None) -> AuditResult:
    """Audit ``subject`` (the steps of the module docstring), with ``settings.threads`` torch threads.

    Parameters
    ----------
    subject : AuditSubject
        The run's model and test rows.
    settings : AuditSettings
        The audit's settings.
    advance : Callable[[str], None]
        Called after each of the :func:`planned_steps` steps with its label (e.g. a progress bar's update).
    """
    check_fits(subject, settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _audit(subject, settings, advance)
    finally:
        torch.set_num_threads(threads)


def _evasion_settings(settings: AuditSettings, defenses: Sequence[InputDefense], samples: int) -> dict[str, object]:
    return {
        "samples": samples,
        "sample_draw": "uniform without replacement, numpy default_rng([seed, 1])",
        "eps": list(settings.eps),
        "eps_norm": "linf, inputs scaled to [0, 1]",
        "attacks": {name: dict(attack_settings(name, settings.hsj_samples)) for name in settings.attacks},
        "minimal_attacks_at_eps": "an adversarial input counts at eps when its linf perturbation is at most eps",
        "defenses": {defense.name: dict(defense.settings) for defense in defenses},
        "attacker": "non-adaptive: adversarial inputs are crafted against the undefended model",
        "intervals": "95 %: Wilson for accuracies and rates, two-proportion normal (seed 003) for differences",
    }


def _audit(subject: AuditSubject, settings: AuditSettings, advance: Advance) -> AuditResult:
    started = time.perf_counter()
    seed = subject.config.seed if settings.seed is None else settings.seed
    device = "gpu" if torch.cuda.is_available() else "cpu"
    result = AuditResult(settings={})
    labels_all = subject.test_set.y.numpy()
    accuracy = float(np.mean(predicted_classes(subject.model, subject.test_set.x, EVALUATION_BATCH) == labels_all))
    seconds: dict[str, float] = {}
    summary: dict[str, object] = {
        "run": str(subject.folder),
        "model": subject.model_name,
        "dataset": subject.config.dataset,
        "attack": subject.config.attack,
        "strategy": subject.config.strategy,
        "parts": list(settings.parts),
        "test_rows": len(subject.test_set),
        "clean_accuracy": accuracy,
        "seed": seed,
    }
    if "evasion" in settings.parts:
        clock = time.perf_counter()
        positions = draw_samples(settings.samples, len(subject.test_set), seed)
        clean = subject.test_set.x[torch.from_numpy(positions)].numpy().astype(np.float32)
        labels = subject.test_set.y[torch.from_numpy(positions)].numpy().astype(np.int64)
        classifier = art_classifier(subject.model, subject.input_shape, subject.num_classes, device)
        clean_predictions = predict(classifier, clean)
        sets = adversarial_sets(settings, classifier, clean, labels, subject.num_classes, seed, advance)
        set_predictions = [predict(classifier, adversarial.adversarial) for adversarial in sets]
        result.evasion = [
            evasion_row(adversarial, clean, labels, clean_predictions, predictions)
            for adversarial, predictions in zip(sets, set_predictions, strict=True)
        ]
        seconds["evasion"] = time.perf_counter() - clock
        clock = time.perf_counter()
        defenses = [build_defense(name) for name in settings.defenses] if "defenses" in settings.parts else []
        for defense in defenses:
            result.defenses.extend(
                defense_rows(defense, classifier, clean, labels, clean_predictions, sets, set_predictions)
            )
            advance(defense.name)
        if defenses:
            seconds["defenses"] = time.perf_counter() - clock
        detector = None
        if "detector" in settings.parts:
            clock = time.perf_counter()
            result.detector, detector = detector_rows(subject, settings, clean, sets, seed, device)
            seconds["detector"] = time.perf_counter() - clock
            advance("detector")
        result.examples = example_images(sets, set_predictions, defenses, classifier, clean, labels, clean_predictions)
        summary.update(_evasion_settings(settings, defenses, len(positions)))
        summary["detector"] = detector
    if "forensics" in settings.parts:
        clock = time.perf_counter()
        probe = backdoor_probe(subject.config, subject.input_shape, subject.test_set, subject.num_classes)
        result.forensics = run_forensics(
            subject.model, subject.test_set, probe, subject.num_classes, settings.forensics, seed, advance
        )
        summary["forensics"] = result.forensics.block()
        seconds["forensics"] = time.perf_counter() - clock
    summary.update(
        {
            "device": device,
            "torch_threads": settings.threads,
            "seconds": {part: round(value, 3) for part, value in seconds.items()},
            "wall_seconds": round(time.perf_counter() - started, 3),
        }
    )
    result.settings = summary
    return result
