"""The process keeps freed memory (fl_poison.core.allocator): malloc's behaviour changes, the weights do not.

Each check runs in a fresh Python process, since the setting belongs to the process.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

GLIBC_LINUX = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC_LINUX, reason="mallopt and mallinfo2 are glibc's")

TRAIN_AND_HASH = textwrap.dedent(
    """
    import hashlib
    import torch
    from fl_poison.core.allocator import retain_freed_memory
    from fl_poison.core.data import LabeledTensors
    from fl_poison.core.models import build_model
    from fl_poison.core.training import LocalTraining, train_locally

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("ada-cnn", (1, 28, 28), 10)
    generator = torch.Generator().manual_seed(1)
    data = LabeledTensors(torch.rand(96, 1, 28, 28, generator=generator), torch.randint(0, 10, (96,), generator=generator))
    settings = LocalTraining(epochs=2, batch_size=16, learning_rate=1e-3, optimizer="adam", momentum=0.9, weight_decay=0.0)
    loss = train_locally(model, data, settings, torch.device("cpu"), seed=7)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    print(retain_freed_memory(), loss.hex(), digest)
    """
)

MMAPPED_BYTES = textwrap.dedent(
    """
    import ctypes, sys
    from fl_poison.core.allocator import retain_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(20 * 1024 * 1024)
    print(libc.mallinfo2().hblkhd - before)
    libc.free(block)
    """
)


def run_python(code: str, *arguments: str, environment: dict[str, str] | None = None) -> str:
    """The standard output of ``code`` run by a fresh interpreter with ``arguments``."""
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES" and not key.startswith("MALLOC_")}
    env.update(environment or {})
    result = subprocess.run(
        [sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return result.stdout.strip()


@needs_glibc
def test_training_gives_bit_identical_weights_with_and_without_the_retained_memory() -> None:
    # MALLOC_TRIM_THRESHOLD_ at glibc's own default keeps malloc as it is: the reference run.
    reference = run_python(TRAIN_AND_HASH, environment={"MALLOC_TRIM_THRESHOLD_": "131072"}).split()
    retained = run_python(TRAIN_AND_HASH).split()
    assert reference[0] == "False" and retained[0] == "True"
    assert retained[1:] == reference[1:]


@needs_glibc
def test_a_20_mib_block_comes_from_the_heap_instead_of_its_own_mapping() -> None:
    assert int(run_python(MMAPPED_BYTES, "default")) >= 20 * 1024 * 1024
    assert int(run_python(MMAPPED_BYTES, "retain")) == 0


@needs_glibc
@pytest.mark.parametrize("variable", ["GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"])
def test_the_users_own_malloc_settings_are_left_alone(variable: str) -> None:
    value = "glibc.malloc.trim_threshold=131072" if variable == "GLIBC_TUNABLES" else "131072"
    code = "from fl_poison.core.allocator import retain_freed_memory; print(retain_freed_memory())"
    assert run_python(code, environment={variable: value}) == "False"
