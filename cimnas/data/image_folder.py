"""ImageNet-style ImageFolder data (``<root>/train/<class>/*.JPEG``, ``<root>/val/<class>/...``)
with the standard augmentation, for real runs.

Split convention as for every data module (:mod:`cimnas.data.splits`): ``train`` = ``train/``
minus ``val_size`` held-out images, ``val`` = those held-out images (predictor measurements),
``test`` = the ``val/`` folder (the official validation set).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from cimnas.data.splits import SplitDataModule

# ImageNet channel statistics (torchvision / timm convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transform(resolution: int, augment: bool, channels: int = 3) -> v2.Transform:
    """Train: RandomResizedCrop(0.08-1) + flip + colour jitter 0.1 (OFA's recipe); eval: resize to
    resolution/0.875 then centre crop."""
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} is not allowed; allowed values: [1, 3]")
    steps: list[v2.Transform] = [v2.ToImage()]
    if augment:
        steps += [v2.RandomResizedCrop(resolution, antialias=True), v2.RandomHorizontalFlip(),
                  v2.ColorJitter(brightness=32 / 255, saturation=0.5)]
    else:
        steps += [v2.Resize(int(round(resolution / 0.875)), antialias=True), v2.CenterCrop(resolution)]
    if channels == 1:
        steps.append(v2.Grayscale(1))
    steps += [v2.ToDtype(torch.float32, scale=True)]
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
    steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


class ImageFolderDataModule(SplitDataModule):
    """Images in ``root/train`` and ``root/val`` class folders (the ImageNet layout)."""

    def __init__(
        self,
        root: str,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        resolution: int = 224,
        channels: int = 3,
        val_size: int = 10000,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, val_size, train_subset, val_subset,
                         test_subset, seed)
        imagenet_transform(resolution, False, channels)  # validate early
        self.root, self.resolution, self.channels = Path(root), resolution, channels

    def prepare_data(self) -> None:
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"root={str(self.root)!r}: missing folder {split}/ — expected the ImageNet layout "
                    "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"
                )

    @property
    def num_classes(self) -> int:
        return len(ImageFolder(str(self.root / "train")).classes)

    def _load(self, augment: bool) -> tuple[Dataset, Dataset]:
        self.prepare_data()
        train = ImageFolder(str(self.root / "train"), transform=imagenet_transform(self.resolution, augment, self.channels))
        test = ImageFolder(str(self.root / "val"), transform=imagenet_transform(self.resolution, False, self.channels))
        if train.classes != test.classes:
            raise ValueError(f"root={str(self.root)!r}: train/ and val/ have different class folders")
        return train, test
