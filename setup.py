"""Builds lorm and its compiled extension modules against the LibTorch stable ABI.

lorm_ext._C (schemas and CPU kernels) is always built; lorm_ext._cuda (CUDA kernels)
when torch has CUDA and a CUDA toolkit is found (FORCE_CUDA=1 insists, FORCE_ONLY_CPU=1
skips it). Both use only the stable ABI with TORCH_TARGET_VERSION 2.11 and the limited
Python API, so one build imports under every torch from 2.11 on and every CPython from
3.10 on: plain `pip install .` (torch fetched into pip's throw-away build env) and
`pip install --no-build-isolation .` (the torch already installed) give the same result.
"""

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TARGET_TORCH = (2, 11)  # oldest torch the build imports under; keep in step with pyproject.toml

NO_TORCH_MESSAGE = f"""
lorm compiles its extension with torch's headers, and no torch was found here.
`pip install .` provides one in its isolated build environment; to build against the
torch you already have (faster), install torch >= {TARGET_TORCH[0]}.{TARGET_TORCH[1]} first and run

    pip install --no-build-isolation .
"""

try:
    import torch
except ImportError:
    sys.exit(NO_TORCH_MESSAGE)

from setuptools import Extension, setup  # noqa: E402  (after the torch check, which must come first)


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def toolkit_root_from_nvcc() -> str | None:
    """The CUDA toolkit folder, asked of nvcc itself (the nvcc on PATH may be a wrapper)."""
    try:
        out = subprocess.run(["nvcc", "--dryrun", "-c", "-x", "cu", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"_HERE_=(\S+)", out.stdout + out.stderr)
    return str(Path(match.group(1)).parent) if match else None


def find_cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or toolkit_root_from_nvcc()
    if home is None:
        return None
    if not Path(home, "bin", "nvcc").exists():
        sys.exit(f"CUDA_HOME={home} has no bin/nvcc: export CUDA_HOME as the CUDA toolkit folder "
                 "(the one holding bin/nvcc and lib64/libcudart.so)")
    os.environ["CUDA_HOME"] = home  # read by torch.utils.cpp_extension at import
    return home


def want_cuda() -> bool:
    if truthy("FORCE_ONLY_CPU"):
        return False
    has_cuda_torch = torch.version.cuda is not None
    if truthy("FORCE_CUDA"):
        if not has_cuda_torch:
            sys.exit(f"FORCE_CUDA=1 but torch {torch.__version__} was built without CUDA")
        if find_cuda_home() is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: export CUDA_HOME=<toolkit folder>")
        return True
    return has_cuda_torch and find_cuda_home() is not None


def nvidia_wheel_dirs() -> tuple[list[str], list[str]]:
    """Include and library folders of torch's nvidia-* wheels (cuSOLVER, cuBLAS)."""
    try:
        import nvidia
    except ImportError:
        return [], []
    includes, libs = [], []
    for base in nvidia.__path__:
        for sub in sorted(Path(base).iterdir()):
            if (sub / "include" / "cusolverDn.h").exists():
                includes.append(str(sub / "include"))
                libs.append(str(sub / "lib"))
    return includes, libs


def versioned_library(lib_dirs: list[str], stem: str) -> str:
    """`-l:` flag for a library shipped only under a versioned name (libcusolver.so.12)."""
    for folder in lib_dirs:
        found = sorted(glob.glob(os.path.join(folder, f"lib{stem}.so*")))
        if found:
            return "-l:" + os.path.basename(found[0])
    return f"-l{stem}"


def torch_release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def write_build_info(with_cuda: bool) -> None:
    cuda = repr(torch.version.cuda) if with_cuda else "None"
    Path(ROOT, "lorm_ext", "_build_info.py").write_text(
        '"""Written by setup.py: what lorm_ext\'s compiled modules need."""\n'
        f"TARGET_TORCH = {TARGET_TORCH!r}  # the oldest torch they import under\n"
        f"BUILT_WITH_TORCH = {torch.__version__!r}\n"
        f"CUDA_VERSION = {cuda}  # of lorm_ext._cuda; None when it was not built\n"
        f"WITH_CUDA = {with_cuda}\n")


def stable_flags() -> list[str]:
    major, minor = TARGET_TORCH
    return ["-O3", f"-DTORCH_TARGET_VERSION=0x{major:02x}{minor:02x}000000000000ULL"]


def cpu_extension() -> Extension:
    """lorm_ext._C: the schemas and CPU kernels. Links only libtorch_cpu (the stable
    C shim lives there) and needs nothing from torch's C++ ABI."""
    from torch.utils.cpp_extension import include_paths, library_paths

    sources = ["csrc/python_module.cpp", "csrc/ops.cpp", "csrc/solve.cpp", "csrc/gram_blocked.cpp",
               "csrc/checked_add.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    return Extension("lorm_ext._C", sources, include_dirs=include_paths(), library_dirs=library_paths(),
                     libraries=["torch_cpu"], py_limited_api=True, language="c++",
                     extra_compile_args={"cxx": stable_flags()})


def cuda_extension() -> Extension:
    """lorm_ext._cuda: the CUDA kernels, with its own cuBLAS/cuSOLVER handles; links
    libtorch_cuda for the stable C shim of CUDA streams. cuSOLVER and cuBLAS are found at
    import through the libraries torch's nvidia-* wheels ship (lorm_ext/_loader.py loads
    them first; the rpaths, relative to the installed package, are the fallback)."""
    from torch.utils.cpp_extension import include_paths, library_paths

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
    includes, lib_dirs = nvidia_wheel_dirs()
    sources = ["csrc/python_module.cpp", "csrc/solve.cpp", "csrc/gram_blocked.cpp", "csrc/checked_add.cpp",
               *sorted(glob.glob("csrc/cuda/*.cpp")), *sorted(glob.glob("csrc/cuda/*.cu"))]
    flags = stable_flags() + ["-DUSE_CUDA"]
    rpaths = ["$ORIGIN/../torch/lib", "$ORIGIN/../nvidia/cu13/lib"]
    return Extension(
        "lorm_ext._cuda", sources,
        include_dirs=include_paths(device_type="cuda") + includes,
        library_dirs=library_paths(device_type="cuda") + lib_dirs,
        libraries=["torch_cpu", "torch_cuda", "cudart"], py_limited_api=True, language="c++",
        extra_compile_args={"cxx": flags, "nvcc": flags},
        extra_link_args=[versioned_library(lib_dirs, "cusolver"), versioned_library(lib_dirs, "cublas"),
                         *[f"-Wl,-rpath,{p}" for p in rpaths]],
    )


def separate_build_dirs(build_ext_class, with_cuda: bool):
    """build_ext whose object files live in build/ of the source tree, one folder per
    extension module (their shared sources compile with different flags), so ninja
    only recompiles what changed (editable installs would otherwise use a temp dir)."""

    class SeparateBuildDirs(build_ext_class):
        def build_extension(self, ext):
            flavour = "cuda" if with_cuda else "cpu"
            self.build_temp = str(ROOT / "build" / f"temp-torch{torch.__version__}-{flavour}" / ext.name)
            super().build_extension(ext)

    return SeparateBuildDirs.with_options(use_ninja=True)


def main() -> None:
    if torch_release(torch.__version__) < TARGET_TORCH:
        sys.exit(f"lorm needs torch >= {TARGET_TORCH[0]}.{TARGET_TORCH[1]} to build "
                 f"(its stable ABI target); found torch {torch.__version__}")
    from torch.utils.cpp_extension import BuildExtension

    with_cuda = want_cuda()
    write_build_info(with_cuda)
    extensions = [cpu_extension()] + ([cuda_extension()] if with_cuda else [])
    setup(ext_modules=extensions,
          cmdclass={"build_ext": separate_build_dirs(BuildExtension, with_cuda)},
          options={"bdist_wheel": {"py_limited_api": "cp310"}})


main()
