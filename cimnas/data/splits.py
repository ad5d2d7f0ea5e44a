"""The split convention shared by every data module.

``train``: the training set minus a held-out part; ``val``: that held-out part (never trained
on; supernet validation and predictor measurements use it); ``test``: the official test set.
The held-out indices depend only on the data-set size, ``val_size`` and ``seed``, so every job
(supernet training, predictor measurement, fine-tuning) sees the same split.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset


def heldout_split(num_items: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic disjoint (train, val) index tensors covering ``range(num_items)``."""
    if not 0 <= val_size < num_items:
        raise ValueError(f"val_size={val_size} must be in [0, {num_items - 1}] for a set of {num_items} items")
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    val = perm[:val_size].sort().values
    train = perm[val_size:].sort().values
    return train, val


def take_subset(indices: torch.Tensor, size: int | None, seed: int, name: str) -> torch.Tensor:
    """The first ``size`` of a seeded permutation of ``indices`` (all when ``size`` is None)."""
    if size is None:
        return indices
    if size <= 0:
        raise ValueError(f"{name}={size} must be a positive number of samples or null")
    perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed + 7919))
    return indices[perm[: min(size, len(indices))]].sort().values


class SplitDataModule(L.LightningDataModule):
    """Base class: subclasses implement :meth:`_load` returning the full training and test
    datasets for a given split (``train`` gets augmentation, the others do not)."""

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int = 5000,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.train_subset = train_subset
        self.val_subset = val_subset
        self.test_subset = test_subset
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # subclasses --------------------------------------------------------------------
    def _load(self, augment: bool) -> tuple[Dataset, Dataset]:
        """Return (full official training set, official test set)."""
        raise NotImplementedError

    # Lightning hooks ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_aug, test_plain = self._load(augment=True)
        train_plain, _ = self._load(augment=False)
        train_idx, val_idx = heldout_split(len(train_plain), self.val_size, self.seed)
        train_idx = take_subset(train_idx, self.train_subset, self.seed, "train_subset")
        val_idx = take_subset(val_idx, self.val_subset, self.seed, "val_subset")
        test_idx = take_subset(torch.arange(len(test_plain)), self.test_subset, self.seed, "test_subset")
        self.train_indices, self.val_indices, self.test_indices = train_idx, val_idx, test_idx
        self.train_set = Subset(train_aug, train_idx.tolist())
        self.train_eval_set = Subset(train_plain, train_idx.tolist())
        self.val_set = Subset(train_plain, val_idx.tolist())
        self.test_set = Subset(test_plain, test_idx.tolist())

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int, seed_offset: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed + seed_offset) if shuffle else None
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            generator=generator, persistent_workers=self.num_workers > 0, drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, False, self.eval_batch_size)

    def calibration_batches(self, num_images: int = 2000, batch_size: int = 200, seed: int = 0) -> list[torch.Tensor]:
        """Un-augmented training images for BN recalibration / histogram collection: a seeded
        subset of ``num_images`` split into batches (OFA: 2,000 images in batches of 200)."""
        self.setup()
        idx = take_subset(torch.arange(len(self.train_eval_set)), num_images, seed, "num_images")
        loader = DataLoader(Subset(self.train_eval_set, idx.tolist()), batch_size=batch_size, shuffle=False)
        return [x for x, _ in loader]


__all__: Sequence[str] = ["heldout_split", "take_subset", "SplitDataModule"]
