"""The built extension: which backend loaded, which kernels registered, that it uses
only torch's stable C ABI, and the errors for a too-old torch or a missing torch at
build time."""

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import lorm_ext
from lorm_ext import _loader

ROOT = Path(__file__).resolve().parents[1]
OPS = ["gram_update", "lowrank_gram_update", "spd_solve", "inspect_terms"]


def has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"lorm_ext::{op}", key)


def test_backend_is_the_expected_one():
    """CI sets LORM_EXPECT_BACKEND=cuda: the CUDA build must have loaded, not the reference."""
    expected = os.environ.get("LORM_EXPECT_BACKEND")
    assert lorm_ext.backend() in {"cuda", "cpu", "reference"}
    if expected:
        assert lorm_ext.backend() == expected, lorm_ext.load_message()


@pytest.mark.skipif(lorm_ext.backend() == "reference", reason="the extension is not built")
def test_every_op_has_cpu_kernel():
    assert all(has_kernel(op, "CPU") for op in OPS)


@pytest.mark.skipif(lorm_ext.backend() != "cuda",
                    reason="CUDA kernels not loaded (built without them, or torch has no CUDA)")
def test_cuda_build_registers_every_cuda_kernel():
    """Importing lorm_ext._cuda resolved every symbol (cuSOLVER, cuBLAS, the CUDA shim of
    libtorch_cuda) and registered a CUDA kernel per op, with or without a GPU present."""
    assert "lorm_ext._cuda" in sys.modules
    assert all(has_kernel(op, "CUDA") for op in OPS)


def compiled_modules() -> list[Path]:
    names = ["_C"] + (["_cuda"] if lorm_ext.backend() == "cuda" else [])
    return [Path(sys.modules[f"lorm_ext.{name}"].__file__) for name in names]


@pytest.mark.skipif(lorm_ext.backend() == "reference", reason="the extension is not built")
@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_compiled_modules_use_only_the_stable_c_abi():
    """No symbol of torch's C++ ABI (c10::, at::, torch:: mangled names) and no CPython
    symbol outside the limited API: what lets one build import under later torches."""
    for module in compiled_modules():
        assert ".abi3." in module.name
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(module)], check=True,
                                   capture_output=True, text=True).stdout.split()
        cxx_torch = [s for s in undefined if s.startswith(("_ZN3c10", "_ZN2at", "_ZN5torch", "_ZNK3c10"))]
        assert cxx_torch == [], f"{module.name} needs torch C++ symbols: {cxx_torch[:5]}"
        python = [s for s in undefined if s.startswith("Py")]
        assert python == ["PyModule_Create2"], python


def test_too_old_torch_is_refused_newer_accepted():
    info = types.SimpleNamespace(TARGET_TORCH=(2, 11))
    message = _loader._too_old(info, "2.10.1+cpu")
    assert "needs torch >= 2.11" in message and "2.10.1+cpu" in message
    assert _loader._too_old(info, "2.11.0") is None
    assert _loader._too_old(info, "2.14.1+cu130") is None
    assert _loader._too_old(info, "3.0.0") is None


def test_cuda_major_mismatch_is_reported():
    info = types.SimpleNamespace(CUDA_VERSION="13.0")
    assert _loader._cuda_mismatch(info, "13.2") is None
    message = _loader._cuda_mismatch(info, "12.8")
    assert "compiled for CUDA 13.0" in message and "12.8" in message


def test_setup_without_torch_says_what_to_run():
    """`pip install .` builds in isolation, without torch: setup.py must say what to do."""
    result = subprocess.run([sys.executable, "-S", "setup.py", "--version"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "pip install --no-build-isolation ." in result.stderr
