"""Which backbone weights a config names, found offline, and the record a run keeps of them.

``pretrained`` takes ``auto`` (``shipped`` for the tiny ViT, ``timm`` for a timm
backbone), ``shipped``, ``timm`` (timm's pretrained weights for the backbone tag, read
from timm's hub cache only: nothing is downloaded at run time), ``none`` (random
init) or a local weights file. The shipped tiny ViT (``lorm/weights/``, made by
``lorm pretrain``) is checked against its card's sha256 before use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

TINY_VIT_NAME = "tiny-vit"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_NAME = "tiny-vit-fmnist"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order (timm/models/_hub.py)


@dataclass(frozen=True)
class Weights:
    """Resolved weights: ``source`` is none, shipped, timm or file; ``path`` the file
    (``None`` for none); ``tag`` the timm model tag (timm only)."""

    source: str
    path: Path | None = None
    tag: str | None = None

    def record(self) -> dict:
        """What summary.json keeps: source, tag, path and the file's sha256."""
        return {"source": self.source, "tag": self.tag,
                "path": None if self.path is None else str(self.path),
                "sha256": None if self.path is None else sha256_of(self.path)}


def sha256_of(path: Path) -> str:
    """The file's sha256 as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_paths() -> tuple[Path, Path]:
    """The shipped backbone's ``.safetensors`` file and its JSON card."""
    return WEIGHTS_DIR / f"{SHIPPED_NAME}.safetensors", WEIGHTS_DIR / f"{SHIPPED_NAME}.json"


def verify_shipped() -> Path:
    """The shipped weights' path, after checking the file against its card's sha256."""
    weights, card_path = shipped_paths()
    if not weights.is_file() or not card_path.is_file():
        raise FileNotFoundError(f"the shipped backbone {weights} or its card is missing: "
                                "reinstall lorm, or set pretrained: none")
    card = json.loads(card_path.read_text())
    if sha256_of(weights) != card.get("sha256"):
        raise ValueError(f"{weights} does not match the sha256 in {card_path.name}: the file "
                         "is damaged; reinstall lorm or run `lorm pretrain` to make a new one")
    return weights


def hub_cache() -> Path:
    """huggingface_hub's cache folder (HF_HUB_CACHE / HF_HOME decide it)."""
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def timm_cached_file(tag: str) -> Path:
    """timm's pretrained file for ``tag`` if it is already on disk (hub cache, or torch
    hub's checkpoints for URL weights).

    Raises:
        ValueError: timm knows no pretrained weights for ``tag``.
        FileNotFoundError: not in the cache; the message names the tag, the cache and
            the ways out (fetch once, ``--set pretrained=FILE``, ``pretrained=none``).
    """
    from .optional import import_vision

    import_vision("timm", f"pretrained: timm weights for {tag!r}")
    from timm.models import get_pretrained_cfg

    from timm import is_model

    if not is_model(tag):
        raise ValueError(f"unknown backbone {tag!r}: use 'tiny-vit', 'minilm', 'hf-bert', a "
                         "BERT folder or a timm model name (timm.list_models('vit_*'))")
    cfg = get_pretrained_cfg(tag)
    if cfg is None:
        raise ValueError(f"pretrained: timm: timm has no pretrained weights for backbone {tag!r} "
                         "(timm.list_pretrained('vit_*') lists them); give a weights file "
                         "with --set pretrained=FILE, or pretrained=none")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for name in HUB_FILES:
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
        where, looked = hub_cache(), f"{repo} ({' or '.join(HUB_FILES)})"
    else:
        import torch.hub

        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if candidate.is_file():
            return candidate
        where, looked = candidate.parent, candidate.name
    raise FileNotFoundError(
        f"pretrained: timm needs timm's weights for {tag!r}, but {looked} is not in the cache "
        f"{where}, and nothing is downloaded at run time. Fetch them once where there is "
        f"internet: python -c \"import timm; timm.create_model('{tag}', pretrained=True)\" "
        "(HF_HUB_CACHE or HF_HOME choose the cache), or give a local file with "
        "--set pretrained=FILE (pretrained=none trains a random backbone)")


def resolve_weights(backbone: str, pretrained: str | None) -> Weights:
    """The weights ``pretrained`` names for ``backbone`` (see the module docstring)."""
    choice = "none" if pretrained is None else pretrained
    if choice == "auto":
        choice = "shipped" if backbone == TINY_VIT_NAME else "timm"
    if choice.lower() == "none":
        return Weights("none")
    if choice == "shipped":
        if backbone != TINY_VIT_NAME:
            raise ValueError(f"pretrained: shipped is the tiny ViT's; for backbone {backbone!r} "
                             "use timm, a weights file, or none for a random backbone")
        return Weights("shipped", verify_shipped())
    if choice == "timm":
        if backbone == TINY_VIT_NAME:
            raise ValueError("pretrained: timm needs a timm backbone; the tiny ViT has "
                             "shipped (or none)")
        return Weights("timm", timm_cached_file(backbone), backbone)
    return Weights("file", Path(choice))
