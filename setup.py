"""Builds lorm and its compiled extension lorm_ext._C against the torch installed here.

CPU kernels are always built. CUDA kernels are built when torch has CUDA and a CUDA
toolkit is found (FORCE_CUDA=1 insists, FORCE_ONLY_CPU=1 skips them). Use
`pip install --no-build-isolation .`: the extension must be compiled against the very
torch it will be imported with.
"""

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

NO_TORCH_MESSAGE = """
lorm compiles its extension against the torch already installed in your environment,
and none was found here (pip builds in an isolated environment by default).
Install torch first, then build without isolation:

    pip install torch==2.14.1        # or the torch you already use
    pip install --no-build-isolation .
"""

try:
    import torch
except ImportError:
    sys.exit(NO_TORCH_MESSAGE)

from setuptools import setup  # noqa: E402  (after the torch check, which must come first)


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


def write_build_info(with_cuda: bool) -> None:
    cuda = repr(torch.version.cuda) if with_cuda else "None"
    Path(ROOT, "lorm_ext", "_build_info.py").write_text(
        '"""Written by setup.py: what lorm_ext._C was compiled against."""\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA_VERSION = {cuda}\n"
        f"WITH_CUDA = {with_cuda}\n")


def extension():
    with_cuda = want_cuda()
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = ["csrc/python_module.cpp", "csrc/ops.cpp", "csrc/solve.cpp",
               "csrc/gram_blocked.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cxx_flags = ["-O3"]
    write_build_info(with_cuda)
    if not with_cuda:
        return CppExtension("lorm_ext._C", sources, extra_compile_args={"cxx": cxx_flags}), BuildExtension, False

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
    includes, lib_dirs = nvidia_wheel_dirs()
    torch_lib = str(Path(torch.__file__).parent / "lib")
    rpaths = ["$ORIGIN/../torch/lib", "$ORIGIN/../nvidia/cu13/lib", torch_lib, *lib_dirs]
    ext = CUDAExtension(
        "lorm_ext._C",
        sources + sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("csrc/cuda/*.cu")),
        include_dirs=includes,
        library_dirs=lib_dirs,
        define_macros=[("LORM_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-DLORM_WITH_CUDA"]},
        extra_link_args=[versioned_library(lib_dirs, "cusolver"),
                         versioned_library(lib_dirs, "cublas"),
                         "-ltorch_cuda_linalg",
                         *[f"-Wl,-rpath,{p}" for p in rpaths]],
    )
    return ext, BuildExtension, True


def persistent_build(build_ext_class, with_cuda: bool):
    """build_ext whose object files live in build/ of the source tree, so ninja only
    recompiles what changed (editable installs would otherwise use a fresh temp dir)."""

    class PersistentBuildExtension(build_ext_class):
        def finalize_options(self):
            super().finalize_options()
            flavour = "cuda" if with_cuda else "cpu"
            self.build_temp = str(ROOT / "build" / f"temp-torch{torch.__version__}-{flavour}")

    return PersistentBuildExtension.with_options(use_ninja=True)


ext, build_ext, with_cuda = extension()
setup(ext_modules=[ext], cmdclass={"build_ext": persistent_build(build_ext, with_cuda)})
