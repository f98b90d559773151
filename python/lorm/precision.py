"""Which precision a run's forward passes take (config key ``amp``).

``false``: float32 everywhere. ``true``: bfloat16 autocast on CUDA, float32 on CPU (what
lorm did before ``auto``). ``auto`` (the default): as ``true``, and bfloat16 on a CPU
that computes it natively (``amx_bf16`` or ``avx512_bf16``) where the backbone gains
from it (``Backbone.cpu_bf16_pays``: measured per family, benchmarks/results/amp-cpu.md);
CPUs without those instructions emulate bfloat16 and get slower. ``always``: bfloat16
autocast on CUDA and on any CPU.

The choice depends on the machine, so two machines of different kinds may run one
config in different precisions (docs/guarantees.md states the scope of exactness).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

AMP_SETTINGS = (True, False, "auto", "always")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native bfloat16 instructions this CPU reports (Linux ``/proc/cpuinfo``;
    elsewhere none are assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


def autocast_dtype(setting: bool | str, device: torch.device, backbone_pays: bool,
                   native_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype of a run's forwards (``None``: float32), by ``setting`` (the
    config's ``amp``), the device, whether the backbone gains from bfloat16 on a CPU and
    whether the CPU has native bfloat16 (default: read from this machine)."""
    if setting not in AMP_SETTINGS:
        raise ValueError(f"amp must be one of true, false, auto, always; got {setting!r}")
    if setting is False:
        return None
    if device.type == "cuda" or setting == "always":
        return torch.bfloat16
    if setting == "auto":
        native = bool(cpu_bf16_flags()) if native_bf16 is None else native_bf16
        return torch.bfloat16 if native and backbone_pays else None
    return None  # amp: true keeps float32 on a CPU


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context running the forward in ``dtype`` (``None``: as it is)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def describe(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).replace("torch.", "")
