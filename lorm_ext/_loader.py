"""Loads the compiled extension modules and decides which backend the ops run on.

lorm_ext._C (schemas, CPU kernels) and lorm_ext._cuda (CUDA kernels) are built on the
LibTorch stable ABI for a target torch (``_build_info.TARGET_TORCH``): they import under
that torch and every later one. _cuda is loaded only under a torch with CUDA of the same
major version it was compiled with.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import os
import re
import warnings

import torch

_state: dict[str, str | None] = {"backend": None, "message": None, "explanation": None}

NOT_BUILT = "lorm_ext._C is not built; every op runs lorm_ext.reference (slow)"
REBUILD = "Reinstall lorm in this environment: pip install ."


def _release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def _too_old(build_info, torch_version: str) -> str | None:
    """Why this torch cannot load the build (older than its stable-ABI target), or None."""
    target = tuple(build_info.TARGET_TORCH)
    if _release(torch_version) >= target:
        return None
    return (f"lorm_ext needs torch >= {target[0]}.{target[1]} (the stable ABI version it was "
            f"built for) but torch {torch_version} is imported. Upgrade torch.")


def _cuda_mismatch(build_info, torch_cuda: str) -> str | None:
    """Why the CUDA kernels cannot load under a torch with CUDA torch_cuda, or None."""
    built = build_info.CUDA_VERSION
    if built.split(".")[0] == torch_cuda.split(".")[0]:
        return None
    return (f"lorm_ext._cuda was compiled for CUDA {built} but this torch uses CUDA "
            f"{torch_cuda}. {REBUILD}")


def _preload_cuda_libraries() -> None:
    """Loads cuSOLVER and cuBLAS from the nvidia-* wheels of *this* environment (the ones
    torch uses), so _cuda resolves them wherever it was built."""
    try:
        import nvidia
    except ImportError:
        return  # a system CUDA: the dynamic linker's search path must hold them
    for stem in ("cublas", "cusolver"):
        for base in nvidia.__path__:
            found = sorted(glob.glob(os.path.join(base, "*", "lib", f"lib{stem}.so.*")))
            if found:
                ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)
                break


def _import_compiled(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # built, but its libraries do not resolve
        raise ImportError(f"{name} failed to load: {exc}. {REBUILD}") from exc


def _build_info():
    """The build's record (lorm_ext/_build_info.py), or None when it was never built."""
    try:
        return importlib.import_module("lorm_ext._build_info")
    except ImportError:
        return None


def _cuda_note(build_info) -> str:
    """Why the build has CUDA kernels or not, as setup.py recorded it."""
    reason = getattr(build_info, "CUDA_REASON", None) or "reason not recorded (an older build)"
    if build_info.WITH_CUDA:
        return f"CUDA kernels built for CUDA {build_info.CUDA_VERSION} with {reason}"
    return f"no CUDA kernels in this build: {reason}"


def _load() -> tuple[str, str | None, str]:
    """(backend, why the reference runs or None, one line explaining what loaded)."""
    build_info = _build_info()
    if build_info is None:
        return "reference", NOT_BUILT, NOT_BUILT
    too_old = _too_old(build_info, torch.__version__)
    if too_old:
        raise ImportError(too_old)
    if importlib.util.find_spec("lorm_ext._C") is None:
        return "reference", NOT_BUILT, NOT_BUILT
    _import_compiled("lorm_ext._C")
    importlib.import_module("lorm_ext._fake")
    note = _cuda_note(build_info)
    if not build_info.WITH_CUDA:
        return "cpu", None, f"CPU kernels; {note}"
    if torch.version.cuda is None:
        return "cpu", None, f"CPU kernels; {note}, not loaded: torch {torch.__version__} has no CUDA"
    mismatch = _cuda_mismatch(build_info, torch.version.cuda)
    if mismatch:
        raise ImportError(mismatch)
    _preload_cuda_libraries()
    _import_compiled("lorm_ext._cuda")
    return "cuda", None, f"CPU and CUDA kernels; {note}"


def backend() -> str:
    """``"cuda"`` (CPU and CUDA kernels loaded), ``"cpu"`` (CPU kernels; the build has
    no CUDA kernels or this torch has no CUDA) or ``"reference"`` (not built: ops run
    the pure-torch oracle)."""
    if _state["backend"] is None:
        _state["backend"], _state["message"], _state["explanation"] = _load()
    return _state["backend"]


def cpu_isa() -> str:
    """Which build of the CPU kernels' vector loops runs: ``"avx2"``, ``"baseline"``
    (x86-64 without AVX2, or ``LORM_CPU_BASELINE=1`` set before the first op call),
    ``"generic"`` (not x86-64: one build) or ``"reference"`` (the extension is not
    built). Both x86-64 builds give bitwise the same results."""
    if backend() == "reference":
        return "reference"
    return torch.ops.lorm_ext.cpu_isa()


def load_message() -> str:
    """One line saying what loaded and why: the kernels in use, and why the build has CUDA
    kernels or not (recorded by setup.py: the toolkit it used, or the cause of a CPU-only
    build), or why every op runs the reference. ``python -m lorm_ext.info`` prints more."""
    backend()
    return _state["explanation"]


def warn_if_reference() -> bool:
    """True when ops must run the reference; warns once per process."""
    if backend() != "reference":
        return False
    if _state.get("warned") is None:
        _state["warned"] = "yes"
        warnings.warn(_state["message"], RuntimeWarning, stacklevel=3)
    return True


backend()  # load eagerly so a broken build fails at import, not at first use
