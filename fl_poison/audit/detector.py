"""A binary input detector of adversarial examples (seed 003 §3.3.1), through ART's ``BinaryInputDetector``.

The detector (Metzen et al., ICLR 2017, "On Detecting Adversarial Perturbations", in ART's
simplest form) is a second classifier of the audited model's architecture with two outputs,
trained from scratch to tell clean inputs (class 0) from adversarial ones (class 1). It is
trained on the adversarial inputs of one attack (FGSM when audited, else the first budgeted
attack), at every ε > 0 of the audit, each clean image repeated once per ε so the two classes
are balanced; then it flags inputs of every attack.

The audit has only the test set, so training and scoring are cross-fitted: the audited images
are split in two halves by the audit's seed; a detector trained on one half's images (clean and
adversarial) scores the other half, and the other way round. Every flag rate is thus measured on
images the detector never saw, in any form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fl_poison.audit.evasion import AdversarialSet

DETECTOR_EPOCHS = 20
DETECTOR_BATCH_SIZE = 64
DETECTOR_LEARNING_RATE = 1e-3


def detector_settings(training_attack: str, eps: Sequence[float]) -> Mapping[str, object]:
    """The detector's settings for ``audit.json``.

    Parameters
    ----------
    training_attack : str
        The attack whose adversarial inputs train it.
    eps : Sequence[float]
        The budgets of those inputs.
    """
    return {
        "architecture": "the audited model's, 2 outputs, trained from scratch",
        "training_attack": training_attack,
        "training_eps": list(eps),
        "epochs": DETECTOR_EPOCHS,
        "batch_size": DETECTOR_BATCH_SIZE,
        "optimizer": f"Adam, learning rate {DETECTOR_LEARNING_RATE}",
        "evaluation": "2-fold cross-fitting over the audited images",
        "art": "BinaryInputDetector",
    }


def cross_fitted_flags(
    build_network: Callable[[], nn.Module],
    input_shape: tuple[int, int, int],
    clean: np.ndarray,
    training_sets: Sequence[AdversarialSet],
    scored_sets: Sequence[AdversarialSet],
    seed: int,
    device: str,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Detector flags of the clean images and of each scored set's inputs, each from the detector of the other fold.

    Parameters
    ----------
    build_network : Callable[[], nn.Module]
        A fresh detector network with two outputs.
    input_shape : tuple[int, int, int]
        Channels, height, width.
    clean : np.ndarray
        The audited images ``(N, C, H, W)``.
    training_sets : Sequence[AdversarialSet]
        Adversarial inputs of every audited image, the detector's positive class.
    scored_sets : Sequence[AdversarialSet]
        Adversarial inputs to score (their ``rows`` index ``clean``).
    seed : int
        Seeds the folds and the detectors' initialisation and batch order.
    device : str
        ``cpu`` or ``gpu``.

    Returns
    -------
    tuple[np.ndarray, list[np.ndarray]]
        A flag per clean image, and per scored set a flag per input.
    """
    from art.defences.detector.evasion import BinaryInputDetector
    from art.estimators.classification import PyTorchClassifier

    count = len(clean)
    fold_of = np.zeros(count, dtype=np.int64)
    fold_of[np.random.default_rng([seed, 2]).permutation(count)[count // 2 :]] = 1
    clean_flags = np.zeros(count, dtype=bool)
    scored_flags = [np.zeros(len(adversarial.rows), dtype=bool) for adversarial in scored_sets]
    for fold in (0, 1):
        training = fold_of != fold
        inputs = [clean[training]] * len(training_sets)
        inputs += [adversarial.adversarial[training[adversarial.rows]] for adversarial in training_sets]
        labels = np.concatenate(
            [np.zeros(sum(len(part) for part in inputs[: len(training_sets)]), dtype=np.int64)]
            + [np.ones(len(part), dtype=np.int64) for part in inputs[len(training_sets) :]]
        )
        torch.manual_seed(seed + fold)
        np.random.seed(seed + fold)  # ART shuffles batches with numpy's global generator
        network = build_network()
        classifier = PyTorchClassifier(
            model=network,
            loss=nn.CrossEntropyLoss(),
            optimizer=torch.optim.Adam(network.parameters(), lr=DETECTOR_LEARNING_RATE),
            input_shape=input_shape,
            nb_classes=2,
            clip_values=(0.0, 1.0),
            device_type=device,
        )
        detector = BinaryInputDetector(classifier)
        detector.fit(
            np.concatenate(inputs).astype(np.float32),
            np.eye(2, dtype=np.float32)[labels],
            nb_epochs=DETECTOR_EPOCHS,
            batch_size=DETECTOR_BATCH_SIZE,
        )
        scored = ~training
        clean_flags[scored] = detector.detect(clean[scored])[1]
        for flags, adversarial in zip(scored_flags, scored_sets, strict=True):
            in_fold = scored[adversarial.rows]
            if in_fold.any():
                flags[in_fold] = detector.detect(adversarial.adversarial[in_fold])[1]
    return clean_flags, scored_flags
