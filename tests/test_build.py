"""The built extension: which backend loaded, which kernels registered, and the
errors for a wrong torch or a missing torch at build time."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import lorm_ext
from lorm_ext import _loader

ROOT = Path(__file__).resolve().parents[1]
OPS = ["gram_update", "lowrank_gram_update", "spd_solve"]


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


@pytest.mark.skipif(lorm_ext.backend() != "cuda", reason="built without CUDA kernels")
def test_cuda_build_registers_every_cuda_kernel():
    """Importing the CUDA build resolved every symbol (cuSOLVER, cuBLAS, torch_cuda_linalg)
    and registered a CUDA kernel per op, with or without a GPU present."""
    assert torch.ops.lorm_ext.built_with_cuda()
    assert all(has_kernel(op, "CUDA") for op in OPS)


def test_version_mismatch_is_reported_clearly():
    info = types.SimpleNamespace(TORCH_VERSION="1.0.0", CUDA_VERSION=None)
    message = _loader._version_mismatch(info)
    assert "compiled against torch 1.0.0" in message
    assert torch.__version__ in message and "--no-build-isolation" in message
    same = types.SimpleNamespace(TORCH_VERSION=torch.__version__, CUDA_VERSION=None)
    assert _loader._version_mismatch(same) is None


def test_setup_without_torch_says_what_to_run():
    """`pip install .` builds in isolation, without torch: setup.py must say what to do."""
    result = subprocess.run([sys.executable, "-S", "setup.py", "--version"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "pip install --no-build-isolation ." in result.stderr
