"""Evasion attacks on the audited model, through the Adversarial Robustness Toolbox (ART 1.20).

Every attack crafts adversarial inputs in [0, 1] against the undefended model (white box except
HopSkipJump, which only reads predicted labels). Budgeted attacks run once per ε of the L∞ budget
list; minimal-perturbation attacks run once, unbounded, and are scored at each ε by keeping an
adversarial input only where its L∞ perturbation is at most ε (else the clean input stands), so
that every attack has an accuracy at every ε and those curves can be compared.

- ``fgsm``: Fast Gradient Sign Method (Goodfellow, Shlens and Szegedy, ICLR 2015):
  ``x' = clip(x + ε sign(∇x L(x, y)), 0, 1)``; ART's ``FastGradientMethod``, norm L∞.
- ``bim``: Basic Iterative Method / iterative FGSM (Kurakin, Goodfellow and Bengio, ICLR 2017
  workshop): ``x_{t+1} = Clip_{x, ε}(x_t + α sign(∇x L(x_t, y)))`` with α = 2/255 for 50
  iterations (seed 000 §1.2's settings); ART's ``BasicIterativeMethod``.
- ``bim-targeted``: the same, towards a target class, descending ``L(x_t, y_target)`` (seed 000:
  ``x_{t+1} = Clip_{x, ε}(x_t - α sign(∇x L(x_t, y_target)))``). The target of an image of class
  ``y`` is the next class ``(y + 1) mod K``: every image has a target other than its class, and
  every class is a target equally often.
- ``pgd``: Projected Gradient Descent (Madry et al., ICLR 2018): BIM from a uniformly random start
  in the ε-ball, α = 2/255, 50 iterations, one random start; ART's ``ProjectedGradientDescent``.
- ``deepfool``: DeepFool (Moosavi-Dezfooli, Fawzi and Frossard, CVPR 2016, Algorithm 2): iterated
  linearisation of the decision boundaries of all classes, the smallest L2 step to the nearest,
  overshoot η = 0.02 (the paper's value), at most 10 iterations; ART's ``DeepFool``. Unbounded.
- ``hopskipjump``: HopSkipJumpAttack (Chen, Jordan and Wainwright, IEEE S&P 2020), decision-based,
  L∞ version, with a small query budget (10 iterations, at most 100 gradient-estimation queries
  per iteration, 10 at the start, 20 random tries for a starting point), on the first
  ``hsj-samples`` images only; ART's ``HopSkipJump``, started from points drawn by a seeded
  generator (:func:`seeded_starting_points`: ART's own draws are unseeded, and the same seed gave
  other images on every call). Unbounded.

An untargeted attacker's goal is a wrong prediction, so an image the model already misclassifies
is left as it is by the minimal attacks (ART's DeepFool pushes every image away from its
*predicted* class, which can carry a misclassified image back to its true class: that is no
attack, and it would let adversarial accuracy exceed clean accuracy).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

ITERATIVE_STEP = 2.0 / 255.0
ITERATIONS = 50
DEEPFOOL_OVERSHOOT = 0.02
DEEPFOOL_ITERATIONS = 10
HSJ_ITERATIONS = 10
HSJ_MAX_EVALUATIONS = 100
HSJ_INITIAL_EVALUATIONS = 10
HSJ_INITIAL_TRIES = 20
BATCH_SIZE = 256

BUDGETED_ATTACKS = ("fgsm", "bim", "bim-targeted", "pgd")
MINIMAL_ATTACKS = ("deepfool", "hopskipjump")
ATTACK_NAMES = (*BUDGETED_ATTACKS, *MINIMAL_ATTACKS)


class Float32Input(nn.Module):
    """A model that casts its input to float32 first (HopSkipJump queries in float64).

    Parameters
    ----------
    model : nn.Module
        The wrapped classifier.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float())


def art_classifier(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int, device: str) -> object:
    """ART's ``PyTorchClassifier`` around ``model`` (inputs in [0, 1], cross-entropy loss, no preprocessing).

    Parameters
    ----------
    model : nn.Module
        The audited model, in evaluation mode.
    input_shape : tuple[int, int, int]
        Channels, height, width.
    num_classes : int
        Number of classes.
    device : str
        ``cpu`` or ``gpu``.
    """
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=Float32Input(model).eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type=device,
    )


def next_class_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The targeted attacks' target of each image: the next class, ``(y + 1) mod num_classes``.

    Parameters
    ----------
    labels : np.ndarray
        True classes.
    num_classes : int
        Number of classes.
    """
    return (np.asarray(labels) + 1) % num_classes


def attack_settings(name: str, hsj_samples: int) -> Mapping[str, object]:
    """The settings attack ``name`` runs with, for ``audit.json``.

    Parameters
    ----------
    name : str
        A name of :data:`ATTACK_NAMES`.
    hsj_samples : int
        Images HopSkipJump attacks.
    """
    if name == "fgsm":
        return {"norm": "linf", "art": "FastGradientMethod"}
    if name in ("bim", "bim-targeted"):
        settings: dict[str, object] = {"norm": "linf", "step": ITERATIVE_STEP, "iterations": ITERATIONS}
        if name == "bim-targeted":
            settings["target"] = "(true class + 1) mod classes"
        return {**settings, "art": "BasicIterativeMethod"}
    if name == "pgd":
        return {
            "norm": "linf",
            "step": ITERATIVE_STEP,
            "iterations": ITERATIONS,
            "random_starts": 1,
            "art": "ProjectedGradientDescent",
        }
    if name == "deepfool":
        return {
            "norm": "l2 (minimal)",
            "overshoot": DEEPFOOL_OVERSHOOT,
            "max_iterations": DEEPFOOL_ITERATIONS,
            "classes_linearised": "all",
            "art": "DeepFool",
        }
    if name == "hopskipjump":
        return {
            "norm": "linf (minimal)",
            "samples": hsj_samples,
            "iterations": HSJ_ITERATIONS,
            "max_evaluations": HSJ_MAX_EVALUATIONS,
            "initial_evaluations": HSJ_INITIAL_EVALUATIONS,
            "initial_tries": HSJ_INITIAL_TRIES,
            "art": "HopSkipJump",
        }
    raise ValueError(f"attack: bad value {name!r}; allowed: {', '.join(ATTACK_NAMES)}")


@dataclass(frozen=True)
class AdversarialSet:
    """Adversarial inputs of one attack (at one ε for a budgeted attack; unbounded for a minimal one).

    Attributes
    ----------
    attack : str
        The attack's name.
    eps : float | None
        The L∞ budget, None for an unbounded minimal attack.
    rows : np.ndarray
        Positions of the attacked images among the audited samples.
    adversarial : np.ndarray
        The adversarial inputs ``(len(rows), C, H, W)``.
    targets : np.ndarray | None
        The target classes of a targeted attack.
    seconds : float
        Time spent crafting them.
    """

    attack: str
    eps: float | None
    rows: np.ndarray
    adversarial: np.ndarray
    targets: np.ndarray | None
    seconds: float

    def within_budget(self, clean: np.ndarray, eps: float) -> AdversarialSet:
        """This unbounded set scored at L∞ budget ``eps``: inputs perturbed by more than ``eps`` are the clean ones.

        Parameters
        ----------
        clean : np.ndarray
            The clean inputs of :attr:`rows`.
        eps : float
            The budget.
        """
        linf = np.abs(self.adversarial - clean).reshape(len(clean), -1).max(axis=1)
        keep = (linf <= eps + 1e-6)[:, None, None, None]
        return AdversarialSet(
            self.attack, eps, self.rows, np.where(keep, self.adversarial, clean), self.targets, self.seconds
        )


def craft(
    name: str,
    classifier: object,
    clean: np.ndarray,
    labels: np.ndarray,
    eps: float | None,
    num_classes: int,
    seed: int,
) -> AdversarialSet:
    """Adversarial inputs of attack ``name`` for ``clean`` images of classes ``labels``.

    Parameters
    ----------
    name : str
        A name of :data:`ATTACK_NAMES`.
    classifier : object
        ART's classifier of the model (:func:`art_classifier`).
    clean : np.ndarray
        The images to attack ``(N, C, H, W)`` in [0, 1], float32.
    labels : np.ndarray
        Their true classes.
    eps : float | None
        The L∞ budget of a budgeted attack; ignored (None) for a minimal one.
    num_classes : int
        Number of classes (for the targets).
    seed : int
        Seeds numpy and torch before crafting (PGD's random start, HopSkipJump's random draws).
    """
    from art.attacks.evasion import (
        BasicIterativeMethod,
        DeepFool,
        FastGradientMethod,
        HopSkipJump,
        ProjectedGradientDescent,
    )

    np.random.seed(seed)  # ART draws from numpy's global generator; this pins it for one attack
    torch.manual_seed(seed)
    targets = next_class_targets(labels, num_classes) if name == "bim-targeted" else None
    rows = np.arange(len(clean))
    started = time.perf_counter()
    if name in BUDGETED_ATTACKS and eps is None:
        raise ValueError(f"{name} needs an eps budget")
    if name in BUDGETED_ATTACKS and eps == 0:
        # no perturbation fits an L∞ budget of 0: the inputs are the clean ones (50 BIM steps that
        # cannot move a pixel cost 40 s on MNIST's CNN for nothing)
        return AdversarialSet(name, 0.0, rows, clean.copy(), targets, time.perf_counter() - started)
    if name == "fgsm":
        attack: object = FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=BATCH_SIZE)
    elif name in ("bim", "bim-targeted"):
        attack = BasicIterativeMethod(
            classifier,
            eps=eps,
            eps_step=ITERATIVE_STEP,
            max_iter=ITERATIONS,
            targeted=targets is not None,
            batch_size=BATCH_SIZE,
            verbose=False,
        )
    elif name == "pgd":
        attack = ProjectedGradientDescent(
            classifier,
            norm=np.inf,
            eps=eps,
            eps_step=ITERATIVE_STEP,
            max_iter=ITERATIONS,
            num_random_init=1,
            batch_size=BATCH_SIZE,
            verbose=False,
        )
    elif name == "deepfool":
        attack = DeepFool(
            classifier, max_iter=DEEPFOOL_ITERATIONS, epsilon=DEEPFOOL_OVERSHOOT, batch_size=BATCH_SIZE, verbose=False
        )
    elif name == "hopskipjump":
        attack = HopSkipJump(
            classifier,
            norm=np.inf,
            max_iter=HSJ_ITERATIONS,
            max_eval=HSJ_MAX_EVALUATIONS,
            init_eval=HSJ_INITIAL_EVALUATIONS,
            init_size=HSJ_INITIAL_TRIES,
            batch_size=BATCH_SIZE,
            verbose=False,
        )
    else:
        raise ValueError(f"attack: bad value {name!r}; allowed: {', '.join(ATTACK_NAMES)}")
    one_hot = np.eye(num_classes, dtype=np.float32)[targets if targets is not None else labels]
    if name == "hopskipjump":
        adversarial = clean.copy()
        starts, found = seeded_starting_points(classifier, clean, HSJ_INITIAL_TRIES, seed)
        if found.any():
            generated = attack.generate(x=clean[found], x_adv_init=starts[found])  # type: ignore[attr-defined]
            adversarial[found] = generated
    elif name in MINIMAL_ATTACKS:
        adversarial = attack.generate(x=clean)  # type: ignore[attr-defined]
    if name in MINIMAL_ATTACKS:
        already_wrong = predict(classifier, clean) != labels
        adversarial[already_wrong] = clean[already_wrong]
    else:
        adversarial = attack.generate(x=clean, y=one_hot)  # type: ignore[attr-defined]
    adversarial = np.clip(np.asarray(adversarial, dtype=np.float32), 0.0, 1.0)
    return AdversarialSet(name, eps, rows, adversarial, targets, time.perf_counter() - started)


def seeded_starting_points(
    classifier: object, clean: np.ndarray, tries: int, seed: int, tolerance: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """HopSkipJump's starting points, drawn from a seeded generator (ART draws them from an unseeded one).

    As ART's initialisation does: up to ``tries`` images uniform in [0, 1] per input, the first one
    the model classifies differently from the input, moved towards the input by a binary search on
    the segment between them (the point nearest the input still classified differently, to
    ``tolerance`` of the segment). Given as ``x_adv_init``, ART starts from these; the gradient
    estimates that follow draw from numpy's global generator, which :func:`craft` seeds.

    Parameters
    ----------
    classifier : object
        ART's classifier.
    clean : np.ndarray
        The inputs ``(N, C, H, W)`` in [0, 1].
    tries : int
        Most random images drawn per input.
    seed : int
        The generator's seed.
    tolerance : float
        Length of the final bracket of the binary search, as a fraction of the segment.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        The starting points (the input itself where none was found) and which inputs have one.
    """
    generator = np.random.default_rng(seed)
    predicted = predict(classifier, clean)
    starts = clean.copy()
    found = np.zeros(len(clean), dtype=bool)
    for row in range(len(clean)):
        candidates = generator.uniform(0.0, 1.0, size=(tries, *clean.shape[1:])).astype(clean.dtype)
        differing = np.flatnonzero(predict(classifier, candidates) != predicted[row])
        if len(differing) == 0:
            continue
        far = candidates[differing[0]]
        low, high = 0.0, 1.0  # x + high * (far - x) is classified differently, x + low * (far - x) is not
        while high - low > tolerance:
            middle = (low + high) / 2
            point = clean[row] + middle * (far - clean[row])
            if predict(classifier, point[None])[0] != predicted[row]:
                high = middle
            else:
                low = middle
        starts[row] = clean[row] + high * (far - clean[row])
        found[row] = True
    return starts, found


def perturbation_norms(clean: np.ndarray, adversarial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L2 and L∞ norms of ``adversarial - clean`` (over every channel and pixel).

    Parameters
    ----------
    clean, adversarial : np.ndarray
        Batches of the same shape.
    """
    difference = (np.asarray(adversarial, dtype=np.float64) - clean).reshape(len(clean), -1)
    return np.linalg.norm(difference, axis=1), np.abs(difference).max(axis=1, initial=0.0)


def predict(classifier: object, inputs: np.ndarray) -> np.ndarray:
    """Predicted classes of ``inputs``.

    Parameters
    ----------
    classifier : object
        ART's classifier.
    inputs : np.ndarray
        A batch ``(N, C, H, W)``.
    """
    if len(inputs) == 0:
        return np.zeros(0, dtype=np.int64)
    scores = classifier.predict(np.asarray(inputs, dtype=np.float32), batch_size=BATCH_SIZE)  # type: ignore[attr-defined]
    return np.asarray(scores).argmax(axis=1)
