"""Loads the compiled extension and decides which backend the ops run on."""

from __future__ import annotations

import importlib
import warnings

import torch

_state: dict[str, str | None] = {"backend": None, "message": None}


def _version_mismatch(build_info) -> str | None:
    built_cuda = build_info.CUDA_VERSION
    if build_info.TORCH_VERSION == torch.__version__ and (
            built_cuda is None or built_cuda == torch.version.cuda):
        return None
    return (f"lorm_ext._C was compiled against torch {build_info.TORCH_VERSION} "
            f"(CUDA {built_cuda}) but torch {torch.__version__} (CUDA {torch.version.cuda}) "
            "is imported. Rebuild it in this environment: pip install --no-build-isolation .")


def _load() -> tuple[str, str | None]:
    try:
        build_info = importlib.import_module("lorm_ext._build_info")
    except ImportError:
        return "reference", "lorm_ext._C is not built; every op runs lorm_ext.reference (slow)"
    mismatch = _version_mismatch(build_info)
    if mismatch:
        raise ImportError(mismatch)
    try:
        importlib.import_module("lorm_ext._C")
    except ModuleNotFoundError:
        return "reference", "lorm_ext._C is not built; every op runs lorm_ext.reference (slow)"
    except ImportError as exc:  # built, but its libraries do not resolve
        raise ImportError(f"lorm_ext._C failed to load: {exc}. Rebuild with "
                          "pip install --no-build-isolation .") from exc
    importlib.import_module("lorm_ext._fake")
    return ("cuda" if torch.ops.lorm_ext.built_with_cuda() else "cpu"), None


def backend() -> str:
    """``"cuda"`` (compiled with CUDA kernels; CPU kernels too), ``"cpu"`` (compiled,
    CPU kernels only) or ``"reference"`` (not built: ops run the pure-torch oracle)."""
    if _state["backend"] is None:
        _state["backend"], _state["message"] = _load()
    return _state["backend"]


def load_message() -> str | None:
    """Why the reference backend is in use, or None when the extension loaded."""
    backend()
    return _state["message"]


def warn_if_reference() -> bool:
    """True when ops must run the reference; warns once per process."""
    if backend() != "reference":
        return False
    if _state.get("warned") is None:
        _state["warned"] = "yes"
        warnings.warn(_state["message"], RuntimeWarning, stacklevel=3)
    return True


backend()  # load eagerly so a broken build fails at import, not at first use
