"""Fashion-MNIST, the embedded default data set (70,000 real 28x28 grayscale images, 10 classes).

Debian's ``dataset-fashion-mnist`` package installs the four IDX files (gzip) into
``/usr/share/datasets/fashion-mnist``. Debian re-compresses them, so their MD5 sums differ from
torchvision's list and ``torchvision.datasets.FashionMNIST`` refuses them; we read the IDX
format directly (16-byte image header / 8-byte label header, then uint8). A folder written by
torchvision's downloader (``<root>/FashionMNIST/raw``) works too, gzipped or not.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from cimnas.data.splits import SplitDataModule

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "CIMNAS_FASHION_MNIST_DIR"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Per-pixel mean / std of the Fashion-MNIST training images scaled to [0, 1]
# (computed over the 60,000 training images: 0.2860 / 0.3530).
MEAN, STD = 0.2860, 0.3530
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)
INSTALL_HINT = (
    "Install it with `apt-get update && apt-get install dataset-fashion-mnist` (Debian/Ubuntu, "
    f"installs into {DEBIAN_DIR}), or download it with torchvision "
    "(`python -c \"from torchvision.datasets import FashionMNIST; FashionMNIST('data', download=True)\"`) "
    f"and pass data_dir=data (or set {ENV_VAR})."
)


class DataNotFoundError(FileNotFoundError):
    """The data set is not where we looked; the message says what to run."""


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get(ENV_VAR)):
        if base:
            base = Path(base)
            dirs += [base, base / "FashionMNIST" / "raw", base / "fashion-mnist"]
    dirs.append(DEBIAN_DIR)
    return dirs


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Locate the four IDX files (``.gz`` or plain); raise :class:`DataNotFoundError` naming
    every folder searched and the command that installs the data."""
    searched = _candidate_dirs(data_dir)
    for folder in searched:
        found = {}
        for key, stem in FILES.items():
            for name in (stem + ".gz", stem):
                if (folder / name).is_file():
                    found[key] = folder / name
                    break
        if len(found) == len(FILES):
            return found
    raise DataNotFoundError(
        "Fashion-MNIST not found; searched " + ", ".join(str(d) for d in searched) + ". " + INSTALL_HINT
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dtype_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if dtype_code != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path}: not an unsigned-byte IDX file of 1 or 3 dimensions (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {array.size} values (truncated file?)")
    return array.reshape(dims)


class ImageTensorDataset(Dataset):
    """uint8 images ``[N, H, W]`` + labels, turned into normalised float tensors
    ``[channels, resolution, resolution]`` by ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index].unsqueeze(0)), int(self.labels[index])


def grayscale_transform(resolution: int, channels: int, augment: bool, mean: float = MEAN, std: float = STD) -> v2.Transform:
    """uint8 ``[1, H, W]`` → float ``[channels, resolution, resolution]``, normalised; training
    augmentation = random crop (padding 1/14 of the side) + horizontal flip."""
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} is not allowed; allowed values: [1, 3]")
    if resolution < 8:
        raise ValueError(f"resolution={resolution} must be >= 8")
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
    steps.append(v2.Resize((resolution, resolution), antialias=True))
    if augment:
        steps += [v2.RandomCrop(resolution, padding=max(1, resolution // 14)), v2.RandomHorizontalFlip()]
    steps.append(v2.Normalize([mean], [std]))
    if channels == 3:
        steps.append(v2.Lambda(lambda x: x.expand(3, -1, -1)))
    return v2.Compose(steps)


class FashionMNISTDataModule(SplitDataModule):
    """Fashion-MNIST with the project's split convention (see :mod:`cimnas.data.splits`):
    ``train`` = official training set minus ``val_size`` held-out images, ``val`` = those
    held-out images (never trained on), ``test`` = the official 10,000 test images.

    Args:
        data_dir: folder with the IDX files; default: ``$CIMNAS_FASHION_MNIST_DIR``, then
            Debian's ``/usr/share/datasets/fashion-mnist``.
        resolution: side of the square images fed to the network (28 = native).
        channels: 1, or 3 to replicate the grayscale channel for RGB networks.
        augment: random crop + flip on the training split.
        train_subset / val_subset / test_subset: seeded subsets (fast tests and smoke runs).
    """

    num_classes = 10

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        resolution: int = 28,
        channels: int = 1,
        augment: bool = True,
        val_size: int = 5000,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, val_size, train_subset, val_subset,
                         test_subset, seed)
        grayscale_transform(resolution, channels, augment)  # validate arguments early
        self.data_dir, self.resolution, self.channels, self.augment = data_dir, resolution, channels, augment
        self._arrays: dict[str, torch.Tensor] | None = None

    def prepare_data(self) -> None:
        find_fashion_mnist(self.data_dir)  # fail early, on rank 0, with the install hint

    def _read(self) -> dict[str, torch.Tensor]:
        if self._arrays is None:
            paths = find_fashion_mnist(self.data_dir)
            self._arrays = {k: torch.from_numpy(read_idx(p).copy()) for k, p in paths.items()}
        return self._arrays

    def _load(self, augment: bool) -> tuple[Dataset, Dataset]:
        a = self._read()
        train_tf = grayscale_transform(self.resolution, self.channels, augment and self.augment)
        test_tf = grayscale_transform(self.resolution, self.channels, False)
        return (ImageTensorDataset(a["train_images"], a["train_labels"], train_tf),
                ImageTensorDataset(a["test_images"], a["test_labels"], test_tf))


__all__: Sequence[str] = ["FashionMNISTDataModule", "find_fashion_mnist", "read_idx", "DataNotFoundError"]
