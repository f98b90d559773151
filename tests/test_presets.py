"""Presets shipped inside the package: by name or path, listed by `lorm presets`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lorm.cli import main as cli_main
from lorm.fcil import load_config
from lorm.presets import preset_names, preset_path

ROOT = Path(__file__).resolve().parents[1]


def test_presets_command_lists_each_with_its_first_comment_line(capsys):
    assert cli_main(["presets"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    listed = {l.split()[0]: l.split(None, 1)[1] for l in lines if not l.startswith("lorm run")}
    assert sorted(listed) == preset_names() and len(listed) == 21  # 18 image + 3 CLINC150
    first = preset_path("cub200-beta0.2").read_text().splitlines()[0].lstrip("# ")
    assert listed["cub200-beta0.2"] == first


def test_config_by_name_equals_by_path_and_unknown_names_list_the_presets(tmp_path):
    by_name = load_config("imagenet-r-beta0.1")
    assert by_name == load_config(str(preset_path("imagenet-r-beta0.1")))
    assert by_name == load_config("imagenet-r-beta0.1.yaml")
    with pytest.raises(FileNotFoundError, match="no preset named 'cifar10'.*cifar100-beta0.5"):
        load_config("cifar10")
    with pytest.raises(FileNotFoundError, match="configs/x.yaml does not exist"):
        load_config("configs/x.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("rank: 7\n")
    assert load_config(str(own)).rank == 7


def test_presets_are_package_data_and_the_root_configs_folder_is_gone():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "lorm.presets" in project["packages"] and "lorm.fcil.datasets" in project["packages"]
    assert project["package-data"]["lorm.presets"] == ["*.yaml"]
    assert not (ROOT / "configs").exists()
