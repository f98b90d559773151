"""Per-dataset image transforms, as fed-mammoth's (docs/fidelity.md cites each).

Every dataset there first squashes the image to ``S x S`` (PIL bicubic,
``BASE_TRANSFORM``), turns it into a [0, 1] tensor, then applies its kornia train or
test recipe on the tensor; lorm does the same with torchvision's tensor transforms.
``S`` is ``img_size`` (224 in the paper) and the 256 of a test resize is ``S * 256 / 224``.
"""

from __future__ import annotations

from dataclasses import dataclass

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))                       # [-1, 1], augreg ViTs
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@dataclass(frozen=True)
class Recipe:
    """One dataset's train/test recipe (S = img_size, B = S * 256 / 224).

    Attributes:
        train: ``"rrc"`` RandomResizedCrop(S, scale) + flip; ``"resize-crop"`` resize to
            B x B + RandomCrop(S) + flip; ``"flip"`` flip only; ``"identity"``.
        test: ``"resize-center"`` resize to B x B + CenterCrop(S); ``"short-center"``
            shorter side to B + CenterCrop(S); ``"identity"``.
        normalize: (mean, std), or ``None`` to keep [0, 1].
        scale: RandomResizedCrop's area range.
        base: before everything, ``"squash"`` resizes to S x S; ``"short-side"`` takes
            the shorter side to S + CenterCrop(S); ``"none"`` keeps the image.
        interpolation: ``"bicubic"`` or ``"bilinear"`` for every resize.
    """

    train: str
    test: str
    normalize: tuple | None
    scale: tuple[float, float] = (0.08, 1.0)
    base: str = "squash"
    interpolation: str = "bicubic"


RECIPES = {
    # seq_cifar100.py / seq_imagenetr.py TRANSFORMS["default_*"]
    "default": Recipe("rrc", "resize-center", HALF),
    # seq_imageneta.py: scale (0.05, 1), ImageNet mean/std
    "imagenet-a": Recipe("rrc", "resize-center", IMAGENET, scale=(0.05, 1.0)),
    # seq_cub200.py: resize 256 + random crop + flip, ImageNet mean/std
    "cub200": Recipe("resize-crop", "resize-center", IMAGENET),
    # seq_cars.py: images pre-cropped (short side 224 + centre crop), flip only, [0, 1]
    "cars196": Recipe("flip", "identity", None, base="short-side"),
    # seq_eurosat.py TRANSFORMS["lorm_iclr_*"] (the README's commands): identity on [0, 1]
    "eurosat": Recipe("identity", "identity", None),
    # the one recipe lorm used for every dataset before (transforms: uniform)
    "uniform": Recipe("rrc", "short-center", HALF, base="none", interpolation="bilinear"),
}


def build_transforms(recipe: Recipe, size: int):
    """(train, test) callables: PIL image -> ``(3, size, size)`` float tensor."""
    from ...optional import import_vision

    T = import_vision("torchvision.transforms", "the image datasets' transforms")

    mode = T.InterpolationMode(recipe.interpolation)
    big = int(size * 256 / 224)
    base = {"squash": [T.Resize((size, size), interpolation=mode)],
            "short-side": [T.Resize(size, interpolation=mode), T.CenterCrop(size)],
            "none": []}[recipe.base]
    train = {
        "rrc": [T.RandomResizedCrop(size, scale=recipe.scale, interpolation=mode),
                T.RandomHorizontalFlip()],
        "resize-crop": [T.Resize((big, big), interpolation=mode), T.RandomCrop(size),
                        T.RandomHorizontalFlip()],
        "flip": [T.RandomHorizontalFlip()],
        "identity": [],
    }[recipe.train]
    test = {"resize-center": [T.Resize((big, big), interpolation=mode), T.CenterCrop(size)],
            "short-center": [T.Resize(big, interpolation=mode), T.CenterCrop(size)],
            "identity": []}[recipe.test]
    tail = [T.Normalize(*recipe.normalize)] if recipe.normalize else []
    return (T.Compose(base + [T.ToTensor()] + train + tail),
            T.Compose(base + [T.ToTensor()] + test + tail))


def transforms_for(dataset_recipe: str, config) -> tuple:
    """The (train, test) transforms of ``dataset_recipe`` under ``config.transforms``
    (``authors``: the dataset's own; ``uniform``: lorm's earlier single recipe)."""
    name = "uniform" if config.transforms == "uniform" else dataset_recipe
    return build_transforms(RECIPES[name], config.img_size or 224)
