"""Command-line builders shared by the entry points (``train.py``)."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from cimnas.io import write_metrics_file


class WandbSaveConfig(SaveConfigCallback):
    """Writes the resolved config next to the logs (as Lightning does) and, with a W&B logger,
    also into the run: as the run's config and as ``config.yaml`` in its files folder, so each
    (offline) run carries the exact command that produced it."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            experiment = logger.experiment
            text = self.parser.dump(self.config)
            run_dir = getattr(experiment, "dir", None)
            if run_dir and os.path.isdir(run_dir):  # a disabled run has no folder
                path = os.path.join(run_dir, "config.yaml")
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
            experiment.config.update({"cli_config": text, "stage": stage}, allow_val_change=True)


class MetricsFileCallback(L.Callback):
    """At the end of fit / validate / test, writes ``trainer.callback_metrics`` to
    ``$CIMNAS_METRICS_FILE`` (the local sweep runner reads the sweep metric from it)."""

    def _write(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            write_metrics_file({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn != "fit":
            self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)


class CimnasCLI(LightningCLI):
    """LightningCLI that always adds :class:`MetricsFileCallback` (whatever the config's
    callback list) so sweeps can read the final metrics of any training job."""

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(MetricsFileCallback())
        return trainer


def train_cli(args: Any = None, run: bool = True) -> LightningCLI:
    """The training CLI: ``fit`` / ``validate`` / ``test`` for any LightningModule and
    LightningDataModule of the project (supernet, predictor, fine-tuning), selected by
    ``model.class_path`` / ``data.class_path`` in a ``--config`` YAML, with dotted overrides.
    Logs to W&B (offline by default, see :mod:`cimnas.tracking`); seed 0 unless overridden."""
    return CimnasCLI(
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
