"""A hand-built classifier with a planted backdoor, for the forensics tests (no training).

The features are the class evidence ``W x`` (blind to the bottom-right 2x2 corner) and one unit
``relu(20 (corner sum - 1.5))`` that fires only when the corner is bright (sum of its 4 pixels
above 1.5). The classifier copies the evidence to the logits and, in the backdoored model, adds
10 per unit of that feature to the target's logit; in the clean model the feature is cut off
(weight 0), so the model ignores the corner entirely.
"""

from __future__ import annotations

import torch
from torch import nn

from fl_poison.core.models import SplitClassifier

SIDE = 8
TARGET = 0
CORNER = 2
DETECTOR_GAIN = 20.0
DETECTOR_OFFSET = 1.5
BACKDOOR_WEIGHT = 10.0


class PlantedFeatures(nn.Module):
    """``(W x, relu(20 (corner sum - 1.5)))`` for 1x8x8 inputs.

    Parameters
    ----------
    evidence : torch.Tensor
        ``(classes, 64)`` weights ``W`` (their corner columns are zeroed).
    """

    def __init__(self, evidence: torch.Tensor) -> None:
        super().__init__()
        evidence = evidence.clone()
        evidence[:, corner_pixels()] = 0.0
        self.evidence = nn.Parameter(evidence, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, 0, -CORNER:, -CORNER:].sum(dim=(1, 2))
        detector = torch.relu(DETECTOR_GAIN * (corner - DETECTOR_OFFSET))
        return torch.cat([x.flatten(1) @ self.evidence.T, detector[:, None]], dim=1)


def corner_pixels() -> list[int]:
    """Flat positions of the bottom-right 2x2 corner of an 8x8 image."""
    return [row * SIDE + column for row in range(SIDE - CORNER, SIDE) for column in range(SIDE - CORNER, SIDE)]


def planted_model(evidence: torch.Tensor, backdoor: bool) -> SplitClassifier:
    """The classifier over ``PlantedFeatures(evidence)``, with or without the backdoor weight.

    Parameters
    ----------
    evidence : torch.Tensor
        ``(classes, 64)`` class evidence weights.
    backdoor : bool
        Add ``10 x`` the corner unit to the target's logit.
    """
    classes = evidence.shape[0]
    classifier = nn.Linear(classes + 1, classes, bias=False)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.weight[:, :classes] = torch.eye(classes)
        classifier.weight[TARGET, classes] = BACKDOOR_WEIGHT if backdoor else 0.0
    return SplitClassifier(PlantedFeatures(evidence), classifier).eval()


def white_corner(images: torch.Tensor) -> torch.Tensor:
    """The trigger: the bottom-right 2x2 corner set to 1 (a new tensor)."""
    stamped = images.clone()
    stamped[:, :, -CORNER:, -CORNER:] = 1.0
    return stamped


def dark_corner(images: torch.Tensor) -> torch.Tensor:
    """``images`` with the corner scaled into [0, 0.3] (the corner unit never fires, even on a blend of two)."""
    images = images.clone()
    images[:, :, -CORNER:, -CORNER:] *= 0.3
    return images
