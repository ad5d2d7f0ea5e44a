"""LightningDataModule over measured record files (JSONL, see :mod:`records`).

Records are encoded once (one batched encode) into in-memory tensors. The split is a seeded
permutation of the de-duplicated records, ordered by key: the held-out ``test`` part (the
report set) and ``val`` part do not depend on ``max_train_samples``, so predictors trained on
different numbers of samples are compared on the same held-out configurations.
"""

from __future__ import annotations


import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from cimnas.models.predictor.encoding import ArchEncoder
from cimnas.models.predictor.records import load_record_set, records_to_batch
from cimnas.space import get_space


class PredictorDataModule(L.LightningDataModule):
    """Args:
        records: JSONL record files (merged; duplicates by key are dropped, first wins).
        space: search-space preset of the records.
        quantized: encode the quant part too (every record needs a policy); otherwise the
            arch part only (full-precision predictor).
        test_fraction / val_fraction: held-out report part / monitoring part.
        split_seed: seed of the split permutation.
        max_train_samples: use only the first N training records (few-sample transfer runs).
        batch_size: training batch size.
    """

    def __init__(
        self,
        records: list[str],
        space: str = "apq_mbv2_tiny",
        quantized: bool = True,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        max_train_samples: int | None = None,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        if not records:
            raise ValueError("records: give at least one JSONL record file")
        for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            if not 0.0 <= frac < 1.0:
                raise ValueError(f"{name}={frac} must be in [0, 1)")
        if test_fraction + val_fraction >= 1.0:
            raise ValueError(f"test_fraction + val_fraction = {test_fraction + val_fraction} leaves no training data")
        if max_train_samples is not None and max_train_samples <= 0:
            raise ValueError(f"max_train_samples={max_train_samples} must be positive or null")
        self.records_paths = [str(p) for p in records]
        self.space = get_space(space)
        self.encoder = ArchEncoder(self.space)
        self.quantized = quantized
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        self.split_seed = split_seed
        self.max_train_samples = max_train_samples
        self.batch_size = batch_size
        self.splits: dict[str, TensorDataset] = {}

    @property
    def input_dim(self) -> int:
        return self.encoder.dim if self.quantized else self.encoder.arch_dim

    def load_records(self) -> list[dict]:
        return load_record_set(self.records_paths, self.space, self.quantized)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        records = self.load_records()
        batch = records_to_batch(self.space, records, self.quantized)
        features = self.encoder.encode(batch, quantized=self.quantized)
        targets = torch.tensor([float(r["accuracy"]) for r in records], dtype=torch.float32)
        n = len(records)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        n_test = max(1, round(self.test_fraction * n)) if self.test_fraction > 0 else 0
        n_val = max(1, round(self.val_fraction * n)) if self.val_fraction > 0 else 0
        test_idx, val_idx, train_idx = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
        if self.max_train_samples is not None:
            train_idx = train_idx[: self.max_train_samples]
        if n_val == 0:  # monitor on the held-out set when no separate validation part is asked for
            val_idx = test_idx
        for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
            self.splits[name] = TensorDataset(features[idx], targets[idx])

    @property
    def train_target_mean(self) -> float:
        return float(self.splits["train"].tensors[1].mean())

    @property
    def train_target_std(self) -> float:
        """Standard deviation of the training targets (1.0 when they do not vary)."""
        y = self.splits["train"].tensors[1].double()
        std = float(y.std()) if len(y) > 1 else 0.0
        return std if std > 1e-12 else 1.0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            self.setup()
        ds = self.splits[split]
        return DataLoader(ds, batch_size=self.batch_size if shuffle else max(1, len(ds)), shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


__all__ = ["PredictorDataModule"]
