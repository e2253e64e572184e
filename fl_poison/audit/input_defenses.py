"""Input defenses: transformations applied to an image before the model classifies it.

Each defense maps a batch ``(N, C, H, W)`` of float32 inputs in [0, 1] to a batch of the same
shape. They are applied to clean and to adversarial inputs alike, and the adversarial inputs are
crafted against the undefended model (a non-adaptive attacker, as in seeds 000 and 003: the
attacker does not know the defense).

- ``blur``: Gaussian blur of standard deviation ``blur-sigma`` (seed 000 §1.4: Pillow's
  ``ImageFilter.GaussianBlur(radius=1)``, whose radius is the standard deviation). Written here
  (:func:`gaussian_blur`): a separable, normalised kernel ``exp(-k^2 / (2 sigma^2))`` for
  ``k = -r..r`` with ``r = ceil(3 sigma)``, the image's edge pixels repeated outside it (as
  Pillow does), channels blurred independently. Pillow approximates the Gaussian by repeated box
  blurs; this is the exact sampled kernel.
- ``spatial-smoothing``: ART's ``SpatialSmoothing`` (Xu, Evans and Qi, NDSS 2018, "Feature
  Squeezing"): median filter over a ``window`` x ``window`` neighbourhood (seed 003 §2.3).
- ``feature-squeezing``: ART's ``FeatureSqueezing`` (same paper): colour depth reduced to ``bits``.
- ``jpeg``: ART's ``JpegCompression`` (Dziugaite, Ghahramani and Roy, 2016): JPEG encoding and
  decoding at ``quality``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as functional

# The seed 000 setting: Pillow's GaussianBlur(radius=1), radius being the standard deviation.
BLUR_SIGMA = 1.0
SMOOTHING_WINDOW = 3
SQUEEZE_BITS = 4
JPEG_QUALITY = 75


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian kernel of standard deviation ``sigma``, half-width ``ceil(3 sigma)``.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels (positive).
    """
    if not sigma > 0:
        raise ValueError(f"sigma: bad value {sigma!r}; allowed: a positive number")
    half_width = math.ceil(3.0 * sigma)
    offsets = np.arange(-half_width, half_width + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def gaussian_blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Blur each channel of ``images`` with a Gaussian of standard deviation ``sigma`` (edges repeated).

    Parameters
    ----------
    images : np.ndarray
        ``(N, C, H, W)`` inputs.
    sigma : float
        Standard deviation in pixels.
    """
    kernel = torch.from_numpy(gaussian_kernel(sigma))
    half_width = (len(kernel) - 1) // 2
    batch = torch.from_numpy(np.asarray(images, dtype=np.float64))
    count, channels, height, width = batch.shape
    planes = batch.reshape(count * channels, 1, height, width)
    padded = functional.pad(planes, (half_width, half_width, half_width, half_width), mode="replicate")
    rows = functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    blurred = functional.conv2d(rows, kernel.view(1, 1, -1, 1))
    return blurred.reshape(count, channels, height, width).numpy().astype(np.asarray(images).dtype)


@dataclass(frozen=True)
class InputDefense:
    """A named input transformation with the settings it was built with.

    Attributes
    ----------
    name : str
        The defense's name on the command line.
    settings : Mapping[str, object]
        Its settings, for ``audit.json``.
    transform : Callable[[np.ndarray], np.ndarray]
        Maps a batch ``(N, C, H, W)`` in [0, 1] to the defended batch.
    """

    name: str
    settings: Mapping[str, object] = field(default_factory=dict)
    transform: Callable[[np.ndarray], np.ndarray] = field(default=lambda images: images, repr=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.transform(images), dtype=np.float32)


def _art_preprocessor(preprocessor: object) -> Callable[[np.ndarray], np.ndarray]:
    def transform(images: np.ndarray) -> np.ndarray:
        defended, _ = preprocessor(images)  # type: ignore[operator]
        return defended

    return transform


def build_defense(name: str) -> InputDefense:
    """The input defense ``name`` (one of :data:`DEFENSE_NAMES`) at its default settings.

    Parameters
    ----------
    name : str
        ``blur``, ``spatial-smoothing``, ``feature-squeezing`` or ``jpeg``.
    """
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing

    if name == "blur":
        return InputDefense(
            name,
            {"sigma": BLUR_SIGMA, "kernel_half_width": math.ceil(3 * BLUR_SIGMA), "edges": "repeated"},
            lambda images: gaussian_blur(images, BLUR_SIGMA),
        )
    if name == "spatial-smoothing":
        smoothing = SpatialSmoothing(window_size=SMOOTHING_WINDOW, channels_first=True, clip_values=(0.0, 1.0))
        return InputDefense(name, {"window": SMOOTHING_WINDOW, "filter": "median (ART)"}, _art_preprocessor(smoothing))
    if name == "feature-squeezing":
        squeezing = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=SQUEEZE_BITS)
        return InputDefense(name, {"bits": SQUEEZE_BITS}, _art_preprocessor(squeezing))
    if name == "jpeg":
        jpeg = JpegCompression(clip_values=(0.0, 1.0), quality=JPEG_QUALITY, channels_first=True)
        return InputDefense(name, {"quality": JPEG_QUALITY}, _art_preprocessor(jpeg))
    raise ValueError(f"defense: bad value {name!r}; allowed: {', '.join(DEFENSE_NAMES)}")


DEFENSE_NAMES = ("blur", "spatial-smoothing", "feature-squeezing", "jpeg")
