"""lorm's optional dependencies, imported where they are used, and the error that says
what to install when one is missing.

``pip install lorm`` (or ``pip install .`` of a checkout) installs the core: the merges,
the kernels, the CLI, the digits and text readers. It leaves out timm and torchvision
(the ``vision`` extra) on purpose: every torchvision release is built for one torch
(0.28.0 requires torch==2.13.0, 0.29.1 torch>=2.14.0), so an unpinned torchvision, or
timm, which requires one, makes pip take the newest and replace the torch the user has
(issue 27). Pinning the installed torch next to the extra makes pip pick the torchvision
release made for it instead::

    pip install 'lorm[vision]' "torch==$(python -c 'from importlib.metadata import version; print(version("torch"))')"

(the installed distribution's version, which is what pip compares: torch 2.14.1 from
PyPI is ``2.14.1`` there while ``torch.__version__`` says ``2.14.1+cu130``; pinning
``torch==2.14.1+cu130`` makes pip look for another torch, and with PyPI alone the install
fails).

A CPU-only torch (``+cpu``, from PyTorch's CPU index) also needs torchvision's CPU build
from that index: the torchvision wheels on PyPI (and on this project's local mirror) are
CUDA builds, which do not load under it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

VISION_PACKAGES = ("timm", "torchvision")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class MissingExtra(ImportError):
    """An optional dependency is not installed or cannot be imported; the message names
    the extra and the command that adds it."""


def installed_torch() -> str:
    """The installed torch distribution's version, as pip sees it (``2.14.1`` for the
    PyPI wheel whose ``torch.__version__`` is ``2.14.1+cu130``)."""
    import torch

    try:
        return version("torch")
    except PackageNotFoundError:  # a torch on sys.path without metadata
        return torch.__version__


def vision_install_command() -> str:
    """The command that adds the ``vision`` extra and keeps the installed torch."""
    return f"pip install 'lorm[vision]' 'torch=={installed_torch()}'"


def _advice() -> str:
    import torch

    text = (f"{vision_install_command()} (the torch pin keeps your torch {torch.__version__} and "
            "makes pip choose the torchvision release made for it; without it pip takes the "
            "newest torchvision and replaces torch with the one that torchvision requires)")
    if torch.version.cuda is None:
        text += (f"; your torch is CPU-only, so add the index it came from (e.g. --extra-index-url "
                 f"{CPU_INDEX}): torchvision's wheels on PyPI are CUDA builds and do not load "
                 "under a CPU-only torch")
    return text


def import_vision(module: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)`` for a module of timm or torchvision.

    Raises:
        MissingExtra: timm or torchvision is not installed, or fails to import (a
            torchvision built for another torch); the message names ``needed_for``, the
            ``vision`` extra and :func:`vision_install_command`.
    """
    import torch

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in VISION_PACKAGES:
            raise
        raise MissingExtra(f"{needed_for} needs timm and torchvision (lorm's 'vision' extra, not "
                           f"part of a plain `pip install lorm`), and {missing} is not installed: "
                           f"{_advice()}") from exc
    except (ImportError, RuntimeError, OSError) as exc:  # a torchvision built for another torch
        versions = []
        for name in VISION_PACKAGES:
            try:
                versions.append(f"{name} {version(name)}")
            except PackageNotFoundError:
                pass
        raise MissingExtra(f"{needed_for}: importing {module} failed under torch "
                           f"{torch.__version__} ({', '.join(versions) or 'versions unknown'}): "
                           f"{type(exc).__name__}: {exc}. torchvision must be the build made for "
                           f"the installed torch: {_advice()}") from exc
