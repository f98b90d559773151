"""The install must not replace the user's torch (issue 27): no torchvision, and no timm
(which requires torchvision), among the core dependencies; they are the `vision` extra,
imported where used, and a missing one stops with the command that adds it keeping torch.
scripts/fresh-install-check.sh checks the install itself against a real pip."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from lorm.cli import main as cli_main
from lorm.optional import CPU_INDEX, MissingExtra, import_vision, vision_install_command

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def dist_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


def hide(monkeypatch, package: str) -> None:
    """``package`` and every submodule already imported read as not installed."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def test_core_dependencies_leave_torchvision_and_timm_to_the_vision_extra():
    core = {dist_name(r): r for r in PROJECT["dependencies"]}
    assert not {"torchvision", "timm"} & set(core), core
    assert core["torch"] == "torch>=2.11"  # README: one build for every torch >= 2.11
    extras = PROJECT["optional-dependencies"]
    assert sorted(dist_name(r) for r in extras["vision"]) == ["timm", "torchvision"]
    # no other extra drags them in either (each would pull the newest torchvision)
    for name, requirements in extras.items():
        if name != "vision":
            assert not {"torchvision", "timm"} & {dist_name(r) for r in requirements}, name


def test_missing_timm_names_the_vision_extra_with_the_installed_torch_pinned(monkeypatch):
    from lorm.backbones.timm_vit import build_backbone

    hide(monkeypatch, "timm")
    with pytest.raises(MissingExtra) as caught:
        build_backbone("tiny-vit", num_classes=10, seed=0)
    message = str(caught.value)
    assert "backbone 'tiny-vit'" in message and "timm is not installed" in message
    # the version pip knows (2.14.1), not torch.__version__ (2.14.1+cu130): pip would look
    # for that torch anew and, on this machine's mirror, fail to resolve
    assert f"pip install 'lorm[vision]' 'torch=={version('torch')}'" in message
    assert vision_install_command() in message


def test_missing_torchvision_stops_the_image_transforms(monkeypatch):
    from lorm.fcil.datasets.transforms import RECIPES, build_transforms

    hide(monkeypatch, "torchvision")
    with pytest.raises(MissingExtra, match=r"transforms needs timm and torchvision.*torchvision "
                                           r"is not installed.*lorm\[vision\]"):
        build_transforms(RECIPES["default"], 8)


def test_demo_without_timm_stops_before_any_run_with_one_line(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "timm")
    output = tmp_path / "runs"
    assert cli_main(["demo", "--output", str(output), "--seeds", "0", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lorm demo (its tiny ViT is a timm VisionTransformer) needs timm")
    assert "lorm[vision]" in err and "Traceback" not in err
    assert not output.exists()


def test_other_missing_modules_are_not_blamed_on_the_extra():
    with pytest.raises(ModuleNotFoundError) as caught:
        import_vision("lorm_no_such_module", "x")
    assert not isinstance(caught.value, MissingExtra)


def test_a_torchvision_that_fails_to_import_is_named_with_the_torch(monkeypatch, tmp_path):
    """What a torchvision built for another torch does at import (its C++ ops do not load)."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra) as caught:
        import_vision("torchvision.transforms", "the image datasets' transforms")
    message = str(caught.value)
    assert f"failed under torch {torch.__version__}" in message
    assert "RuntimeError: operator torchvision::nms does not exist" in message
    assert "torchvision must be the build made for the installed torch" in message
    assert vision_install_command() in message


@pytest.mark.parametrize("cuda", [None, "13.0"])
def test_a_cpu_only_torch_is_told_that_pypi_torchvision_is_a_cuda_build(monkeypatch, cuda):
    monkeypatch.setattr(torch.version, "cuda", cuda)
    hide(monkeypatch, "torchvision")
    with pytest.raises(MissingExtra) as caught:
        import_vision("torchvision", "x")
    assert (CPU_INDEX in str(caught.value)) == (cuda is None)


def test_env_sh_installs_every_dependency_and_extra():
    """scripts/env.sh (demo.sh, test.sh) installs its own list, not the extras: it must
    hold all of them, or the tests of an extra would skip or fail there."""
    text = (ROOT / "scripts" / "env.sh").read_text()
    need = set(ast.literal_eval(re.search(r"need = (\[.*?\])", text, re.S).group(1)))
    modules = {"scikit-learn": "sklearn", "pyyaml": "yaml", "pycryptodome": "Crypto"}
    requirements = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values()
                                              for r in extra]
    for requirement in requirements:
        name = dist_name(requirement)
        if name == "torch":  # env.sh installs it first (LORM_TORCH)
            continue
        assert modules.get(name, name.replace("-", "_")) in need, requirement
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.I), requirement
