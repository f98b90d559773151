"""The paper's settings as YAML presets shipped inside the package: ``lorm run --config
NAME`` (``lorm presets`` lists them). The first comment line of each file is its
one-line description."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def preset_names() -> list[str]:
    """Names of the shipped presets (file names without ``.yaml``), sorted."""
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def description(name: str) -> str:
    """The preset's first comment line, without the ``#``."""
    for line in preset_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def preset_path(name: str) -> Path:
    """The file of preset ``name`` (``"cifar100-beta0.5"``, with or without ``.yaml``)."""
    path = _folder() / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no preset named {name!r}; presets: {', '.join(preset_names())} "
                                "(`lorm presets`), or give a YAML file path")
    return path


def resolve(name_or_path: str | Path) -> Path:
    """A YAML file path as given if it exists, else the shipped preset of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") and len(path.parts) > 1:
        raise FileNotFoundError(f"config file {path} does not exist (shipped presets: "
                                "`lorm presets`)")
    return preset_path(str(name_or_path))
