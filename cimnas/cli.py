"""Command-line builders shared by the entry points (``train.py``)."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger


class WandbSaveConfig(SaveConfigCallback):
    """Writes the resolved config next to the logs (as Lightning does) and, with a W&B logger,
    also into the run: as the run's config and as ``config.yaml`` in its files folder, so each
    (offline) run carries the exact command that produced it."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            experiment = logger.experiment
            text = self.parser.dump(self.config, skip_none=False)
            run_dir = getattr(experiment, "dir", None)
            if run_dir:
                path = os.path.join(run_dir, "config.yaml")
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
            experiment.config.update({"cli_config": text, "stage": stage}, allow_val_change=True)


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
        save_config_callback=WandbSaveConfig,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
