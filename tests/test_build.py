"""The built extension: which backend loaded, which kernels registered, that it uses
only torch's stable C ABI, and the errors for a too-old torch or a missing torch at
build time."""

import importlib.util
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


# setup.py's choice of CUDA toolkit and its fallback to a CPU-only build. setup.py runs
# main() only as __main__ (the way setuptools runs it), so importing it just defines it.

def load_setup():
    spec = importlib.util.spec_from_file_location("lorm_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_toolkit(folder: Path, release: str, headers: bool = True) -> Path:
    """A folder shaped like a CUDA toolkit whose bin/nvcc reports `release`."""
    (folder / "bin").mkdir(parents=True)
    nvcc = folder / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    if headers:
        (folder / "include" / "crt").mkdir(parents=True)
        for header in ("cuda_runtime.h", "crt/host_defines.h", "cusolverDn.h"):
            (folder / "include" / header).write_text("")
    return folder


@pytest.fixture
def setup_py(monkeypatch):
    for name in ("CUDA_HOME", "CUDA_PATH", "FORCE_CUDA", "FORCE_ONLY_CPU"):
        monkeypatch.delenv(name, raising=False)
    return load_setup()


def test_toolkit_is_asked_of_a_wrapper_nvcc(setup_py, tmp_path, monkeypatch):
    """The nvcc on PATH may be a wrapper outside the toolkit: the folder above the
    `_HERE_` that `nvcc --dryrun` prints is the toolkit, not the folder above the wrapper."""
    wrapper_bin = tmp_path / "wrapper-bin"
    wrapper_bin.mkdir()
    (wrapper_bin / "nvcc").write_text("#!/bin/sh\necho '#$ _HERE_=/opt/real-cuda/bin' >&2\n")
    (wrapper_bin / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(wrapper_bin))
    assert setup_py.find_cuda_home() == ("/opt/real-cuda", "nvcc --dryrun")
    monkeypatch.setenv("CUDA_PATH", "/from/cuda-path")
    assert setup_py.find_cuda_home() == ("/from/cuda-path", "CUDA_PATH")


def test_nvcc_without_here_line_is_followed_through_links(setup_py, tmp_path, monkeypatch):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0", "13.0")
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    monkeypatch.setenv("PATH", str(on_path))
    assert setup_py.find_cuda_home() == (str(toolkit.resolve()), "nvcc --dryrun")


def test_use_toolkit_overrides_cpp_extensions_early_guess(setup_py, monkeypatch):
    import torch.utils.cpp_extension as cpp_extension
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", "/wrong/guess")
    monkeypatch.setenv("CUDA_HOME", "/wrong/guess")
    setup_py.use_toolkit("/the/toolkit")
    assert cpp_extension.CUDA_HOME == "/the/toolkit" and os.environ["CUDA_HOME"] == "/the/toolkit"


needs_cuda_torch = pytest.mark.skipif(torch.version.cuda is None, reason="needs a torch with CUDA")


@needs_cuda_torch
@pytest.mark.parametrize("case, cause", [
    ("empty", "has no bin/nvcc"),
    ("old", "major versions must match"),
    ("no headers", "has no include/cuda_runtime.h"),
])
def test_unusable_toolkit_falls_back_with_one_warning(setup_py, tmp_path, monkeypatch, capsys, case, cause):
    """The plan says why; the warning comes once, from build_ext (pip runs setup.py
    several times per install, build_ext once)."""
    home = tmp_path / "cuda"
    if case == "empty":
        home.mkdir()
    else:
        fake_toolkit(home, "11.8" if case == "old" else torch.version.cuda, headers=case != "no headers")
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.setattr(setup_py, "ROOT", tmp_path)  # build_ext writes _build_info.py here
    with_cuda, reason, warn = setup_py.cuda_plan()
    assert not with_cuda and warn and cause in reason and str(home) in reason
    assert capsys.readouterr().err == ""
    build = setup_py.lorm_build_ext(FakeBuildExt, False, reason, warn)(tmp_path / "build")
    build.extensions = build.extensions[:1]  # a CPU-only build has no lorm_ext._cuda
    build.run()
    warning = capsys.readouterr().err
    assert warning.count("WARNING") == 1 and "WITHOUT its CUDA kernels" in warning and cause in warning
    assert "FORCE_CUDA=1" in warning and "FORCE_ONLY_CPU=1" in warning

    monkeypatch.setenv("FORCE_CUDA", "1")  # insisting turns the same cause into an error
    with pytest.raises(SystemExit, match=cause):
        setup_py.cuda_plan()


@needs_cuda_torch
def test_matching_toolkit_is_used_and_named(setup_py, tmp_path, monkeypatch, capsys):
    import torch.utils.cpp_extension as cpp_extension
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)
    home = fake_toolkit(tmp_path / "cuda", torch.version.cuda)
    monkeypatch.setenv("CUDA_HOME", str(home))
    with_cuda, reason, warn = setup_py.cuda_plan()
    assert with_cuda and not warn and f"CUDA {torch.version.cuda} toolkit {home} (from CUDA_HOME)" in reason
    assert cpp_extension.CUDA_HOME == str(home)
    assert capsys.readouterr().err == ""


def test_force_only_cpu_skips_cuda_without_a_warning(setup_py, monkeypatch, capsys):
    monkeypatch.setenv("FORCE_ONLY_CPU", "1")
    assert setup_py.cuda_plan() == (False, "FORCE_ONLY_CPU=1", False)
    assert capsys.readouterr().err == ""


class FakeBuildExt:
    """The part of torch's BuildExtension that setup.py's build_ext relies on; compiling
    lorm_ext._cuda fails the way a compiler error does."""

    def __init__(self, build_lib: Path):
        self.inplace, self.build_lib, self.built = False, str(build_lib), []
        self.extensions = [types.SimpleNamespace(name="lorm_ext._C"), types.SimpleNamespace(name="lorm_ext._cuda")]

    @classmethod
    def with_options(cls, **options):
        return cls

    def build_extension(self, ext):
        if ext.name == "lorm_ext._cuda":
            raise RuntimeError("ninja: build stopped\nError compiling objects for extension")
        self.built.append(ext.name)

    def run(self):
        for ext in self.extensions:
            self.build_extension(ext)


def test_cuda_compile_error_falls_back_and_is_recorded(setup_py, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(setup_py, "ROOT", tmp_path)  # write _build_info.py under tmp_path
    (tmp_path / "lorm_ext").mkdir()
    (tmp_path / "build" / "lorm_ext").mkdir(parents=True)
    build = setup_py.lorm_build_ext(FakeBuildExt, True, "CUDA 13.0 toolkit /t")(tmp_path / "build")
    build.run()
    assert build.built == ["lorm_ext._C"] and [e.name for e in build.extensions] == ["lorm_ext._C"]
    assert "Error compiling objects for extension" in capsys.readouterr().err
    for folder in (tmp_path / "lorm_ext", tmp_path / "build" / "lorm_ext"):
        info = {}
        exec((folder / "_build_info.py").read_text(), info)
        assert info["WITH_CUDA"] is False and info["CUDA_VERSION"] is None
        assert "compiling lorm_ext._cuda failed" in info["CUDA_REASON"]

    monkeypatch.setenv("FORCE_CUDA", "1")
    with pytest.raises(RuntimeError, match="Error compiling"):
        setup_py.lorm_build_ext(FakeBuildExt, True, "x")(tmp_path / "build").run()


@pytest.mark.skipif(lorm_ext.backend() == "reference", reason="the extension is not built")
def test_build_records_why_cuda_was_or_was_not_built():
    from lorm_ext import _build_info
    assert isinstance(_build_info.CUDA_REASON, str) and _build_info.CUDA_REASON
    assert _build_info.CUDA_REASON in lorm_ext.load_message()
    result = subprocess.run([sys.executable, "-m", "lorm_ext.info"], capture_output=True, text=True,
                            timeout=120, cwd=Path(lorm_ext.__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert f"backend:       {lorm_ext.backend()}" in result.stdout
    assert ("CUDA kernels:  built" if _build_info.WITH_CUDA else "CUDA kernels:  not built") in result.stdout
    assert _build_info.CUDA_REASON in result.stdout
