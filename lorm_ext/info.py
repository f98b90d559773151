"""``python -m lorm_ext.info [--self-check]``: what this installation of lorm_ext is and why.

Prints where lorm_ext was imported from, the torch it runs under, which backend and CPU
loop build run, what setup.py recorded about the build (the torch it was built with,
and why the CUDA kernels were or were not built), and the CUDA self-check's outcome in
this process; ``--self-check`` runs that check first (on the current GPU).
"""

from __future__ import annotations

import sys
import warnings

import torch

import lorm_ext
from lorm_ext import _loader, self_check
from lorm_ext.errors import SelfCheckError, SelfCheckWarning


def run_self_check() -> str | None:
    """Runs the CUDA self-check now on the current GPU (its outcome then shows in
    :func:`lines`); returns why it cannot run here, or None."""
    if lorm_ext.backend() != "cuda":
        return "no CUDA kernels loaded"
    if not torch.cuda.is_available():
        return "no GPU visible (torch.cuda.is_available() is False)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelfCheckWarning)  # the outcome line says it all
        try:
            self_check.GUARD.ensure(torch.device("cuda", torch.cuda.current_device()))
        except SelfCheckError:
            pass  # LORM_CUDA_CHECK=strict: likewise
    return None


def lines(cannot_check: str | None = None) -> list[str]:
    """The report, one ``name: value`` per line; ``cannot_check``: why a requested
    self-check could not run."""
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
    check = self_check.outcome() if cannot_check is None else f"cannot run here: {cannot_check}"
    report.append(f"CUDA check:    {check}")
    return report


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    unknown = [a for a in argv if a != "--self-check"]
    if unknown:
        sys.exit(f"usage: python -m lorm_ext.info [--self-check]; unknown: {' '.join(unknown)}")
    print("\n".join(lines(run_self_check() if argv else None)))


if __name__ == "__main__":
    main()
