"""Backdoor triggers, shared by attacking clients and by the server's ASR evaluation.

A trigger is a ``mask`` in [0, 1] and a ``pattern``; stamping an image ``x`` gives
``x * (1 - mask) + pattern * mask``. This one formula covers the blend trigger (an image mixed
in everywhere, :mod:`clients.attacks.blend`), the BadNets patch (:mod:`clients.attacks.badnets`)
and DBA's global trigger cut into strips (:mod:`clients.attacks.dba`). The square patch and its
settings (``trigger-size``, ``trigger-value``, ``trigger-position``) are shared by BadNets and DBA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fl_poison.core.settings import Setting, auto_or, choice, integer, number_in

REFERENCE_TRIGGER_SIZE = 6  # seed 001: a 6x6 square on 32x32 CIFAR-10 images
REFERENCE_IMAGE_SIZE = 32
MIN_TRIGGER_SIZE = 3  # smaller patches are barely learnable on 8x8 digits (ASR 0.88 vs 0.98 at 3 px)
TRIGGER_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")

TRIGGER_SIZE = Setting(
    "trigger-size",
    "auto",
    "Side in pixels of the BadNets patch and of the DBA global trigger; auto = scaled to the input (6 px at 32 px, 5 px at 28 px, 3 px at 8 px).",
    auto_or(integer(1), "an integer >= 1"),
)
TRIGGER_VALUE = Setting(
    "trigger-value",
    1.0,
    "Pixel value of the BadNets / DBA trigger in [0, 1] (1 = white; DBA on colour images stamps red).",
    number_in(0, 1, True, True),
)
TRIGGER_POSITION = Setting(
    "trigger-position", "bottom-right", "Corner of the BadNets patch and DBA trigger.", choice(*TRIGGER_POSITIONS)
)
PATCH_SETTINGS = (TRIGGER_SIZE, TRIGGER_VALUE, TRIGGER_POSITION)


@dataclass(frozen=True)
class Trigger:
    """A stamp ``x * (1 - mask) + pattern * mask``.

    Attributes
    ----------
    mask : torch.Tensor
        ``(C, H, W)`` weights in [0, 1]; 0 leaves a pixel untouched.
    pattern : torch.Tensor
        ``(C, H, W)`` pixel values in [0, 1] written where the mask is non-zero.
    """

    mask: torch.Tensor
    pattern: torch.Tensor

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Stamp a batch ``images`` of shape ``(N, C, H, W)`` (a new tensor; the input is not changed)."""
        return images * (1.0 - self.mask) + self.pattern * self.mask


def default_trigger_size(image_size: int) -> int:
    """The patch side scaled from seed 001's 6 px on 32 px images, at least 3 px (3 px on 8x8 digits).

    Parameters
    ----------
    image_size : int
        Side of the (square) input images in pixels.
    """
    scaled = round(REFERENCE_TRIGGER_SIZE * image_size / REFERENCE_IMAGE_SIZE)
    return min(image_size, max(MIN_TRIGGER_SIZE, scaled))


def corner_slices(image_size: int, size: int, position: str) -> tuple[slice, slice]:
    """Row and column slices of a ``size`` square in the corner named by ``position``.

    Parameters
    ----------
    image_size : int
        Side of the (square) image in pixels.
    size : int
        Side of the square (clipped to the image).
    position : str
        One of :data:`TRIGGER_POSITIONS`.
    """
    size = min(size, image_size)
    rows = slice(image_size - size, image_size) if position.startswith("bottom") else slice(0, size)
    columns = slice(image_size - size, image_size) if position.endswith("right") else slice(0, size)
    return rows, columns


def patch_colour(channels: int, value: float, red: bool) -> torch.Tensor:
    """Per-channel values ``(C, 1, 1)``: ``value`` everywhere, or pure red on colour images when ``red``.

    Parameters
    ----------
    channels : int
        Number of image channels.
    value : float
        Intensity in [0, 1].
    red : bool
        Zero the green and blue channels of a 3-channel image.
    """
    colour = torch.full((channels, 1, 1), float(value))
    if red and channels == 3:
        colour[1:] = 0.0
    return colour


def patch_trigger(shape: tuple[int, int, int], size: int, value: float, position: str, red: bool = False) -> Trigger:
    """A BadNets square patch of side ``size`` and colour ``value`` in a corner.

    Parameters
    ----------
    shape : tuple[int, int, int]
        Input shape ``(C, H, W)`` (square images).
    size : int
        Patch side in pixels.
    value : float
        Patch intensity in [0, 1].
    position : str
        ``bottom-right``, ``bottom-left``, ``top-right`` or ``top-left``.
    red : bool
        Colour the patch red on RGB images (DBA's trigger in seed 001).
    """
    channels, height, _ = shape
    mask = torch.zeros(shape)
    rows, columns = corner_slices(height, size, position)
    mask[:, rows, columns] = 1.0
    pattern = patch_colour(channels, value, red).expand(shape).clone()
    return Trigger(mask, pattern)
