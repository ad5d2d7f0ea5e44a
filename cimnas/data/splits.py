"""The split convention shared by every data module.

``train``: the training set minus a held-out part; ``val``: that held-out part (never trained
on; supernet validation and predictor measurements use it); ``test``: the official test set.
The held-out indices depend only on the data-set size, ``val_size`` and ``seed``, so every job
(supernet training, predictor measurement, fine-tuning) sees the same split.

Training data order is a pure function of ``(seed, epoch)`` and each image's augmentation of
``(seed, epoch, index)`` (:class:`EpochSampler`, :class:`EpochSeededDataset`), so a job resumed
from a mid-epoch checkpoint sees exactly the batches, in the same order and with the same random
crops, that the uninterrupted job would have seen: the loader skips the batches the checkpoint's
``global_step`` already trained on.
"""

from __future__ import annotations

from typing import Sequence

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

_MIX = 1_000_003


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)`` (Lightning calls
    :meth:`set_epoch` each epoch); yields ``epoch * n + index`` so :class:`EpochSeededDataset`
    knows the epoch of each draw. ``skip(k)`` drops the first ``k`` indices of the next pass
    (a mid-epoch resume)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch, self._skip = int(n), int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, k: int) -> None:
        self._skip = max(0, int(k))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * _MIX + self.epoch))
        start, self._skip = self._skip, 0
        base = self.epoch * self.n
        return iter((base + perm[start:]).tolist())


class EpochSeededDataset(Dataset):
    """Index ``epoch * n + i`` returns ``base[i]`` with the global RNG seeded from
    ``(seed, epoch, i)`` (and restored afterwards): random augmentations do not depend on which
    images were drawn before, or on the global RNG state."""

    def __init__(self, base: Dataset, seed: int = 0) -> None:
        self.base, self.seed, self.n = base, int(seed), len(base)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), self.n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * _MIX + epoch) * _MIX + i)
            return self.base[i]


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
        # always a generator of its own: a loader without one draws its workers' base seed from the
        # global RNG on every pass, which would make the global RNG depend on evaluation history
        generator = torch.Generator().manual_seed(self.seed + seed_offset)
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            generator=generator, persistent_workers=self.num_workers > 0, drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; order and augmentation reproducible per (seed, epoch), and a
        loader built while the trainer resumes mid-epoch skips the batches already trained on."""
        self.setup()
        sampler = EpochSampler(len(self.train_set), self.seed)
        done = self._batches_done_in_epoch()
        if done:
            sampler.skip(done * self.batch_size)
        return DataLoader(EpochSeededDataset(self.train_set, self.seed), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed),
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def _batches_done_in_epoch(self) -> int:
        """Training batches of the current epoch a restored trainer has already run (0 unless it
        resumes mid-epoch; one optimizer step per batch, as the project's modules do)."""
        trainer = getattr(self, "_trainer", None) or getattr(self, "trainer", None)
        if trainer is None or getattr(trainer, "ckpt_path", None) is None or trainer.accumulate_grad_batches != 1:
            return 0
        per_epoch = math.ceil(len(self.train_set) / self.batch_size)
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            per_epoch = min(per_epoch, limit)
        elif limit is not None and limit < 1.0:
            per_epoch = int(per_epoch * limit)
        done = trainer.global_step - trainer.current_epoch * per_epoch
        return done if 0 < done < per_epoch else 0

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
        loader = DataLoader(Subset(self.train_eval_set, idx.tolist()), batch_size=batch_size, shuffle=False,
                            generator=torch.Generator().manual_seed(seed))
        return [x for x, _ in loader]


__all__: Sequence[str] = ["heldout_split", "take_subset", "SplitDataModule"]
