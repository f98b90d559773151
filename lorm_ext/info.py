"""``python -m lorm_ext.info``: what this installation of lorm_ext is and why.

Prints where lorm_ext was imported from, the torch it runs under, which backend and CPU
loop build run, and what setup.py recorded about the build (the torch it was built with,
and why the CUDA kernels were or were not built).
"""

from __future__ import annotations

import torch

import lorm_ext
from lorm_ext import _loader


def lines() -> list[str]:
    """The report, one ``name: value`` per line."""
    report = [
        f"lorm_ext:      {lorm_ext.__file__}",
        f"torch:         {torch.__version__} (CUDA {torch.version.cuda}, GPU available: "
        f"{torch.cuda.is_available()})",
        f"backend:       {lorm_ext.backend()}",
        f"CPU loops:     {lorm_ext.cpu_isa()}",
        f"explanation:   {lorm_ext.load_message()}",
    ]
    build_info = _loader._build_info()
    if build_info is not None:
        report += [
            f"built with:    torch {build_info.BUILT_WITH_TORCH} (imports under torch >= "
            f"{'.'.join(map(str, build_info.TARGET_TORCH))})",
            f"CUDA kernels:  {'built' if build_info.WITH_CUDA else 'not built'}: "
            f"{getattr(build_info, 'CUDA_REASON', 'reason not recorded (an older build)')}",
        ]
    return report


def main() -> None:
    print("\n".join(lines()))


if __name__ == "__main__":
    main()
