"""Command-line builders shared by the entry points (``train.py``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI


def train_cli(args: Any = None, run: bool = True) -> LightningCLI:
    """The training CLI: ``fit`` / ``validate`` / ``test`` for any LightningModule and
    LightningDataModule of the project (supernet, predictor, fine-tuning), selected by
    ``model.class_path`` / ``data.class_path`` in a ``--config`` YAML, with dotted overrides.
    Logs to W&B (offline by default, see :mod:`cimnas.tracking`); seed 0 unless overridden."""
    return LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={"logger": {"class_path": "cimnas.tracking.WandbLogger"}},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
