"""The classifiers, each split into a feature extractor and a final linear layer.

Every model is a :class:`SplitClassifier`: ``features(x)`` returns the penultimate
representation and ``classifier`` is the last ``nn.Linear``; ``forward`` is
``classifier(features(x))``. Attacks that look inside the model (ADA's latent class means, FLAME's
last-layer gradients; seed 004 §IV) rely on this split.
"""

from __future__ import annotations

import torch
from torch import nn

from fl_poison.core.config import ConfigError

DEFAULT_MODEL_BY_DATASET = {
    "digits": "small-cnn",
    "mnist": "ada-cnn",
    "fashion-mnist": "ada-cnn",
    "cifar10": "cnn3",
}


class SplitClassifier(nn.Module):
    """A classifier ``classifier(features(x))`` whose two parts are reachable.

    Parameters
    ----------
    features : nn.Module
        Maps an input batch to its penultimate representation ``(N, D)``.
    classifier : nn.Linear
        Maps that representation to class logits ``(N, num_classes)``.
    """

    def __init__(self, features: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch ``x`` of shape ``(N, C, H, W)``."""
        return self.classifier(self.features(x))


def small_cnn(in_channels: int, image_size: int, num_classes: int) -> SplitClassifier:
    """A small CNN for 8x8 inputs (scikit-learn digits): two 3x3 convolutions, a pooling, FC 64."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (image_size // 2) ** 2, 64),
        nn.ReLU(),
    )
    return SplitClassifier(features, nn.Linear(64, num_classes))


def ada_cnn(in_channels: int, image_size: int, num_classes: int) -> SplitClassifier:
    """The four-layer CNN of the ADA paper (seed 004 §V-A2).

    conv 5x5 → 20, ReLU, conv 5x5 → 50, ReLU, flatten, FC → 200 (ReLU), FC → classes; stride 1,
    no pooling. Inputs smaller than 16 pixels get padding 2 so that the convolutions keep their
    size (8x8 digits); 28x28 inputs give the paper's 50x20x20 feature map.
    """
    padding = 2 if image_size < 16 else 0
    side = image_size + 2 * padding - 4
    side = side + 2 * padding - 4
    features = nn.Sequential(
        nn.Conv2d(in_channels, 20, 5, padding=padding),
        nn.ReLU(),
        nn.Conv2d(20, 50, 5, padding=padding),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(50 * side * side, 200),
        nn.ReLU(),
    )
    return SplitClassifier(features, nn.Linear(200, num_classes))


def cnn3(in_channels: int, image_size: int, num_classes: int) -> SplitClassifier:
    """A three-convolution CNN as used for CIFAR-10 in seed 000 §2.1.1.

    Three blocks of 3x3 convolution (32, 64, 128 channels), ReLU and 2x2 max-pooling, then
    FC → 256 (ReLU) and FC → classes. The report gives only "3 convolutional layers"; the widths
    follow the common CIFAR-10 tutorial network.
    """
    blocks: list[nn.Module] = []
    channels = in_channels
    side = image_size
    for width in (32, 64, 128):
        blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        if side >= 2:
            blocks.append(nn.MaxPool2d(2))
            side //= 2
        channels = width
    features = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * side * side, 256), nn.ReLU())
    return SplitClassifier(features, nn.Linear(256, num_classes))


def resnet18(in_channels: int, image_size: int, num_classes: int) -> SplitClassifier:
    """torchvision's ResNet-18 adapted to small images (He et al., 2016).

    The 7x7 stride-2 stem becomes a 3x3 stride-1 convolution and the stem max-pooling is dropped,
    the usual adaptation for 32x32 inputs (CIFAR-10). BatchNorm's integer
    ``num_batches_tracked`` buffers stay out of exchanged weights (see :mod:`fl_poison.core.weights`).
    """
    from torchvision.models import resnet18 as torchvision_resnet18

    del image_size  # global average pooling makes the network size-agnostic
    network = torchvision_resnet18(weights=None, num_classes=num_classes)
    network.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    network.maxpool = nn.Identity()
    classifier = network.fc
    network.fc = nn.Identity()
    return SplitClassifier(network, classifier)


MODEL_BUILDERS = {
    "small-cnn": small_cnn,
    "ada-cnn": ada_cnn,
    "cnn3": cnn3,
    "resnet18": resnet18,
}


def resolve_model_name(model: str, dataset: str) -> str:
    """The model to build: the given name, or for ``auto`` the default of ``dataset``."""
    if model != "auto":
        return model
    return DEFAULT_MODEL_BY_DATASET.get(dataset, "ada-cnn")


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> SplitClassifier:
    """Instantiate model ``name`` for inputs ``(C, H, W)`` and ``num_classes`` classes.

    Parameters
    ----------
    name : str
        A key of :data:`MODEL_BUILDERS`.
    input_shape : tuple[int, int, int]
        Channels, height and width of one input (square images are assumed for sizing).
    num_classes : int
        Number of output logits.
    """
    if name not in MODEL_BUILDERS:
        raise ConfigError.bad_value("model", name, " | ".join(("auto", *MODEL_BUILDERS)))
    channels, height, width = input_shape
    if height != width:
        raise ConfigError(f"model: {name} expects square images, got {height}x{width}; allowed: square images")
    return MODEL_BUILDERS[name](channels, height, num_classes)
