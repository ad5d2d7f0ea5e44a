"""LightningDataModules with one split convention (see :mod:`cimnas.data.splits`)."""

from cimnas.data.fashion_mnist import DataNotFoundError, FashionMNISTDataModule, find_fashion_mnist
from cimnas.data.image_folder import ImageFolderDataModule
from cimnas.data.splits import SplitDataModule, heldout_split

__all__ = [
    "FashionMNISTDataModule", "ImageFolderDataModule", "SplitDataModule", "heldout_split",
    "find_fashion_mnist", "DataNotFoundError",
]
