"""Image transforms shared by the image readers."""

from __future__ import annotations


def default_image_transforms(img_size: int):
    """(train, test): RandomResizedCrop + flip / resize + centre crop, to [-1, 1]."""
    from torchvision import transforms

    normalize = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train = transforms.Compose([transforms.RandomResizedCrop(img_size), transforms.RandomHorizontalFlip(),
                                transforms.ToTensor(), normalize])
    test = transforms.Compose([transforms.Resize(int(img_size * 256 / 224)),
                               transforms.CenterCrop(img_size), transforms.ToTensor(), normalize])
    return train, test
