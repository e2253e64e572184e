"""A node's own data folder to try ``data-path`` with: one partition of digits as an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.data import DataSpec, client_data


def write_digits_folder(out: Path, partition_id: int, num_partitions: int) -> int:
    """Write partition ``partition_id`` of ``num_partitions`` (IID, default seed) of the digits training split.

    The layout is an ``imagefolder`` tree ``out/train/<class>/<i>.png`` of 8-bit 8x8 grayscale
    images, which a SuperNode reads with ``--node-config "partition-id=... data-path='out'"``.

    Parameters
    ----------
    out : Path
        The folder to create (must not hold a ``train`` folder yet).
    partition_id : int
        Which partition.
    num_partitions : int
        Into how many partitions the training split is divided.

    Returns
    -------
    int
        The number of images written.
    """
    if (out / "train").exists():
        raise ValueError(f"{out / 'train'} exists already; choose a new folder")
    data = client_data(DataSpec.from_config(experiment_config({"num-clients": num_partitions})), partition_id)
    pixels = np.round(data.x.numpy()[:, 0] * 255).astype(np.uint8)
    for index, (image, label) in enumerate(zip(pixels, data.y.tolist(), strict=True)):
        target = out / "train" / str(label)
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(target / f"{index}.png")
    return len(data)
