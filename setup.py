"""Builds lorm and its compiled extension modules against the LibTorch stable ABI.

lorm_ext._C (schemas and CPU kernels) is always built; lorm_ext._cuda (CUDA kernels)
when torch has CUDA and a usable CUDA toolkit is found (CUDA_HOME, CUDA_PATH, else the
real folder behind the nvcc on PATH). When it cannot be built, for any reason, the
default is a CPU-only build with one warning; FORCE_CUDA=1 makes that an error and
FORCE_ONLY_CPU=1 skips the CUDA kernels quietly. lorm_ext/_build_info.py records why.
Both use only the stable ABI with TORCH_TARGET_VERSION 2.11 and the limited
Python API, so one build imports under every torch from 2.11 on and every CPython from
3.10 on: plain `pip install .` (torch fetched into pip's throw-away build env) and
`pip install --no-build-isolation .` (the torch already installed) give the same result.
"""

import glob
import os
import re
import shutil
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


class NoCuda(Exception):
    """Why the CUDA kernels cannot be built here (one line, shown to the user)."""


def toolkit_root_from_nvcc() -> str | None:
    """The CUDA toolkit folder, asked of the nvcc on PATH: `nvcc --dryrun` prints
    `#$ _HERE_=<bin>` of the real toolkit even when that nvcc is a wrapper script."""
    try:
        out = subprocess.run(["nvcc", "--dryrun", "-c", "-x", "cu", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"_HERE_=(\S+)", out.stdout + out.stderr)
    if match:
        return str(Path(match.group(1)).parent)
    nvcc = shutil.which("nvcc")  # an nvcc without _HERE_: follow symbolic links instead
    return str(Path(nvcc).resolve().parent.parent) if nvcc else None


def find_cuda_home() -> tuple[str, str]:
    """(toolkit folder, where it came from); raises NoCuda when there is none."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable], variable
    home = toolkit_root_from_nvcc()
    if home is None:
        raise NoCuda("no CUDA toolkit found (no CUDA_HOME, CUDA_PATH or nvcc on PATH)")
    return home, "nvcc --dryrun"


def toolkit_version(home: str) -> str:
    """The toolkit's CUDA release ("13.0") from its own nvcc."""
    try:
        out = subprocess.run([str(Path(home, "bin", "nvcc")), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoCuda(f"{home}/bin/nvcc does not run: {exc}") from exc
    match = re.search(r"release (\d+\.\d+)", out)
    if match is None:
        raise NoCuda(f"{home}/bin/nvcc --version names no CUDA release")
    return match.group(1)


def usable_toolkit() -> tuple[str, str]:
    """(toolkit folder, one line on how it was found) for the CUDA kernels, checked the way
    the build will need it; raises NoCuda naming the first thing missing."""
    if torch.version.cuda is None:
        raise NoCuda(f"torch {torch.__version__} was built without CUDA")
    home, source = find_cuda_home()
    if not Path(home, "bin", "nvcc").exists():
        raise NoCuda(f"the CUDA toolkit folder {home} (from {source}) has no bin/nvcc")
    for header in ("cuda_runtime.h", "crt/host_defines.h"):
        if not Path(home, "include", header).exists():
            raise NoCuda(f"the CUDA toolkit {home} (from {source}) has no include/{header}")
    version = toolkit_version(home)
    if version.split(".")[0] != torch.version.cuda.split(".")[0]:
        raise NoCuda(f"the CUDA toolkit {home} is CUDA {version} but torch {torch.__version__} "
                     f"uses CUDA {torch.version.cuda} (the major versions must match)")
    if not nvidia_wheel_dirs()[0] and not Path(home, "include", "cusolverDn.h").exists():
        raise NoCuda(f"no cusolverDn.h, neither in torch's nvidia-* wheels nor in {home}/include")
    return home, f"CUDA {version} toolkit {home} (from {source})"


def use_toolkit(home: str) -> None:
    """Points torch.utils.cpp_extension at home. It fixes its module-level CUDA_HOME when
    first imported (from the environment or the folder above `which nvcc`, a wrapper's
    folder here), so both the variable and the module attribute are set."""
    os.environ["CUDA_HOME"] = home
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension.CUDA_HOME = home


FORCE_HINT = ("Set FORCE_CUDA=1 to make this an error, or FORCE_ONLY_CPU=1 to build "
              "without CUDA kernels and without this warning.")


def warn_no_cuda(cause: str) -> None:
    """The one warning of a default build that falls back to CPU-only."""
    print(f"\nWARNING: lorm_ext is built WITHOUT its CUDA kernels (CPU kernels only): {cause}. "
          f"{FORCE_HINT}\n", file=sys.stderr, flush=True)


def cuda_plan() -> tuple[bool, str, bool]:
    """(build the CUDA kernels?, why, warn?): FORCE_ONLY_CPU=1 skips them, FORCE_CUDA=1
    insists (exits naming the cause), otherwise they are built when the toolkit is usable.
    The warning is left to build_ext: pip runs setup.py several times per install."""
    if truthy("FORCE_ONLY_CPU"):
        return False, "FORCE_ONLY_CPU=1", False
    try:
        home, found = usable_toolkit()
    except NoCuda as exc:
        if truthy("FORCE_CUDA"):
            sys.exit(f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {exc}. Export "
                     "CUDA_HOME=<toolkit folder> (the one holding bin/nvcc and include/), or unset "
                     "FORCE_CUDA to fall back to a CPU-only build.")
        return False, str(exc), torch.version.cuda is not None  # a CPU torch: no warning
    use_toolkit(home)
    return True, found + (" (FORCE_CUDA=1)" if truthy("FORCE_CUDA") else ""), False


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


def build_info_text(with_cuda: bool, cuda_reason: str) -> str:
    cuda = repr(torch.version.cuda) if with_cuda else "None"
    return ('"""Written by setup.py: what lorm_ext\'s compiled modules need, and why the CUDA '
            'kernels were or were not built."""\n'
            f"TARGET_TORCH = {TARGET_TORCH!r}  # the oldest torch they import under\n"
            f"BUILT_WITH_TORCH = {torch.__version__!r}\n"
            f"CUDA_VERSION = {cuda}  # of lorm_ext._cuda; None when it was not built\n"
            f"WITH_CUDA = {with_cuda}\n"
            f"CUDA_REASON = {cuda_reason!r}  # the toolkit used, or why there are no CUDA kernels\n")


def write_build_info(with_cuda: bool, cuda_reason: str, *package_dirs: Path) -> None:
    """lorm_ext/_build_info.py in the source tree and in each given package folder (the
    build's copy, which build_py made before the extensions were compiled)."""
    for folder in (Path(ROOT, "lorm_ext"), *package_dirs):
        if folder.is_dir():
            (folder / "_build_info.py").write_text(build_info_text(with_cuda, cuda_reason))


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


def lorm_build_ext(build_ext_class, with_cuda: bool, cuda_reason: str, warn: bool = False):
    """build_ext that (1) keeps object files in build/ of the source tree, one folder per
    extension module (their shared sources compile with different flags), so ninja only
    recompiles what changed; (2) in the default mode, turns a failed build of lorm_ext._cuda
    into a CPU-only build with one warning (FORCE_CUDA=1: the failure stands), and gives
    the warning of a planned fallback (`warn`) once, when the extensions are built; (3)
    writes _build_info.py with the outcome."""

    class LormBuildExt(build_ext_class):
        def build_extension(self, ext):
            flavour = "cuda" if with_cuda else "cpu"
            self.build_temp = str(ROOT / "build" / f"temp-torch{torch.__version__}-{flavour}" / ext.name)
            if ext.name != "lorm_ext._cuda" or truthy("FORCE_CUDA"):
                return super().build_extension(ext)
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001  (any compile or link error: fall back)
                self.cuda_failure = f"compiling lorm_ext._cuda failed ({type(exc).__name__}: " \
                                    f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r})"
                warn_no_cuda(self.cuda_failure)
                # a new list (the caller is iterating the old one): nothing copies or lists it
                self.extensions = [e for e in self.extensions if e is not ext]

        def run(self):
            self.cuda_failure = None
            if warn:
                warn_no_cuda(cuda_reason)
            super().run()
            built = with_cuda and self.cuda_failure is None
            packages = [] if self.inplace else [Path(self.build_lib, "lorm_ext")]
            write_build_info(built, cuda_reason if self.cuda_failure is None else self.cuda_failure,
                             *packages)

    return LormBuildExt.with_options(use_ninja=True)


def main() -> None:
    if torch_release(torch.__version__) < TARGET_TORCH:
        sys.exit(f"lorm needs torch >= {TARGET_TORCH[0]}.{TARGET_TORCH[1]} to build "
                 f"(its stable ABI target); found torch {torch.__version__}")
    with_cuda, cuda_reason, warn = cuda_plan()  # before anything imports torch.utils.cpp_extension
    from torch.utils.cpp_extension import BuildExtension

    write_build_info(with_cuda, cuda_reason)  # build_py copies it; build_ext rewrites the outcome
    extensions = [cpu_extension()] + ([cuda_extension()] if with_cuda else [])
    setup(ext_modules=extensions,
          cmdclass={"build_ext": lorm_build_ext(BuildExtension, with_cuda, cuda_reason, warn)},
          options={"bdist_wheel": {"py_limited_api": "cp310"}})


if __name__ == "__main__":  # setuptools runs setup.py as __main__; tests import it
    main()
