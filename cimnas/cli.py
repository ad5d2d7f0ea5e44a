"""Command-line builders shared by the entry points (``train.py``).

Run folders: a config's ``trainer.default_root_dir`` may hold ``{timestamp}``
(``runs/supernet_fmnist/{timestamp}``); each new job gets a fresh folder (UTC time
``YYYYmmdd-HHMMSS``), a job resumed with ``--ckpt_path <run>/checkpoints/<file>.ckpt`` continues in
the checkpoint's run folder. Every ``ModelCheckpoint`` without a ``dirpath`` writes to
``<run>/checkpoints`` and the end-of-fit exports default to the run folder, so no job writes into
the repository root or the shipped artifacts. The W&B run id is kept in ``<run>/wandb_run_id``
(and in each checkpoint): a resumed job continues the same W&B run.

Argument names must be spelled out (no prefix abbreviations: ``--trainer.max_epoch`` is an
unknown key, not ``max_epochs``).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from cimnas.io import write_metrics_file


class WandbSaveConfig(SaveConfigCallback):
    """Writes the resolved config next to the logs (as Lightning does) and, with a W&B logger,
    also into the run: as the run's config and as ``config.yaml`` in its files folder, so each
    (offline) run carries the exact command that produced it."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the resolved config goes into the run folder (not the logger's shared save_dir)
        if self.already_saved:
            return
        if self.save_to_log_dir and trainer.is_global_zero:
            run_dir = trainer.default_root_dir
            os.makedirs(run_dir, exist_ok=True)
            # validate / test of a checkpoint run in its fit's folder: keep the fit's config.yaml
            name = self.config_filename if stage == "fit" else f"config_{stage}.yaml"
            self.parser.save(self.config, os.path.join(run_dir, name), skip_none=False,
                             overwrite=True, multifile=self.multifile)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True

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


#: File of a run folder holding the W&B run id (a resumed job continues that run).
WANDB_ID_FILE = "wandb_run_id"
RUN_STAMP = "{timestamp}"


class RunFolderCallback(L.Callback):
    """Records the W&B run id of the job in ``<run>/wandb_run_id`` and in every checkpoint."""

    def _run_id(self, trainer: L.Trainer) -> str | None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run_id = getattr(logger.experiment, "id", None)
                return str(run_id) if run_id else None
        return None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_id = self._run_id(trainer)
        if run_id and trainer.is_global_zero:
            from cimnas.io import atomic_write_text

            atomic_write_text(Path(trainer.default_root_dir) / WANDB_ID_FILE, run_id + "\n")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        run_id = self._run_id(trainer)
        if run_id:
            checkpoint["cimnas_wandb_run_id"] = run_id


class RNGStateCallback(L.Callback):
    """Saves the global RNG states (torch CPU / CUDA, numpy, python) in every checkpoint and
    restores them on resume, so dropout and any other draw from the global generators continue
    as in the uninterrupted run (data order and augmentation have their own seeds:
    :mod:`cimnas.data.splits`; subnet sampling is seeded by the global step)."""

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        name, keys, pos, has_gauss, cached = np.random.get_state()
        # plain tensors and numbers only: Lightning reads checkpoints with weights_only=True
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def read_checkpoint_file(path: str) -> dict[str, Any]:
    """A Lightning checkpoint file (dict with ``state_dict``), or one line naming the file."""
    from cimnas.inputs import InputError, load_torch_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ckpt_path {path!r} not found")
    checkpoint = load_torch_file(p, "ckpt_path")  # weights_only: our checkpoints hold plain data only
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"ckpt_path {path!r}: not a Lightning checkpoint (field 'state_dict' missing)")
    return checkpoint


def _ckpt_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a.startswith("--ckpt_path="):
            return a.split("=", 1)[1]
        if a == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
    return None


def check_checkpoint(path: str, model: L.LightningModule) -> None:
    """``--ckpt_path`` must be a readable Lightning checkpoint of this job's model: a missing,
    empty, text or corrupt file, or one of another model / configuration (the module's
    ``check_checkpoint(checkpoint, path)``), fails with one line naming the file."""
    checkpoint = read_checkpoint_file(path)
    hook = getattr(model, "check_checkpoint", None)
    if callable(hook):
        hook(checkpoint, path)


def resolve_run_dir(root: str | None, ckpt_path: str | None, now: _dt.datetime | None = None) -> str | None:
    """The run folder of a job: ``root`` with ``{timestamp}`` replaced by the UTC time (a new run)
    or, when ``ckpt_path`` is ``<run>/checkpoints/<file>``, by that run's folder (a resume)."""
    if root is None or RUN_STAMP not in str(root):
        return root
    if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
        ckpt = Path(ckpt_path)
        if ckpt.parent.name == "checkpoints":
            return str(ckpt.parent.parent)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    run = str(root).replace(RUN_STAMP, stamp)
    n = 1
    while Path(run).exists():  # two jobs started in the same second
        run = str(root).replace(RUN_STAMP, f"{stamp}-{n}")
        n += 1
    return run


def _stored_wandb_id(run_dir: str | None) -> str | None:
    if run_dir is None:
        return None
    f = Path(run_dir) / WANDB_ID_FILE
    return f.read_text().strip() or None if f.is_file() else None


class CimnasCLI(LightningCLI):
    """LightningCLI that resolves the run folder (see the module docstring), puts checkpoints
    under it, resumes the W&B run of a resumed job, and always adds
    :class:`MetricsFileCallback` (whatever the config's callback list) so sweeps can read the
    final metrics of any training job."""

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        ckpt = cfg.get("ckpt_path")
        root = cfg.trainer.get("default_root_dir")
        if root is None:  # never Lightning's default (the working directory: ./checkpoints, ./lightning_logs)
            model = str((cfg.get("model") or {}).get("class_path", "job")).rsplit(".", 1)[-1]
            root = f"runs/{model}/{RUN_STAMP}"
        run_dir = resolve_run_dir(root, ckpt)
        cfg.trainer.default_root_dir = run_dir
        logger = cfg.trainer.get("logger")
        run_id = _stored_wandb_id(run_dir) if ckpt else None
        if run_id and logger is not None and not isinstance(logger, bool) and \
                str(logger.get("class_path", "")).endswith("WandbLogger"):
            init = logger.get("init_args")
            if init is not None and init.get("id") is None:
                init["id"] = run_id
                init["resume"] = "allow"

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        from lightning.pytorch.callbacks import ModelCheckpoint

        cfg = self.config[self.subcommand] if self.subcommand else self.config
        ckpt = cfg.get("ckpt_path")
        if ckpt and ckpt not in ("last", "best", "hpc", "registry"):
            check_checkpoint(ckpt, self.model)  # before anything is written (run folder, W&B)
        trainer = super().instantiate_trainer(**kwargs)
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        # first: an end-of-fit callback of the config (e.g. PredictorExport) that writes its own
        # metrics to the same file runs after it, as a module's default callbacks do
        trainer.callbacks.insert(0, MetricsFileCallback())
        trainer.callbacks.append(RunFolderCallback())
        trainer.callbacks.append(RNGStateCallback())
        return trainer


def train_cli(args: Any = None, run: bool = True) -> LightningCLI:
    """The training CLI: ``fit`` / ``validate`` / ``test`` for any LightningModule and
    LightningDataModule of the project (supernet, predictor, fine-tuning), selected by
    ``model.class_path`` / ``data.class_path`` in a ``--config`` YAML, with dotted overrides.
    Logs to W&B (offline by default, see :mod:`cimnas.tracking`); seed 0 unless overridden."""
    from lightning.pytorch.cli import LightningArgumentParser

    from cimnas.inputs import one_line_errors

    return CimnasCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={"logger": {"class_path": "cimnas.tracking.WandbLogger"}},
        save_config_callback=WandbSaveConfig,
        parser_class=one_line_errors(LightningArgumentParser),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"allow_abbrev": False, **{c: {"allow_abbrev": False} for c in ("fit", "validate", "test",
                                                                                          "predict")}},
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> int:
    """``train.py``: the training CLI with user errors (bad files, invalid values) as one line
    ``error: ...`` and exit status 2; ``--debug`` shows the traceback."""
    from cimnas.inputs import check_config_files, run_user_main

    def _run(args: list[str]) -> int:
        check_config_files(args)
        ckpt = _ckpt_arg(args)
        if ckpt and ckpt not in ("last", "best", "hpc", "registry", "null"):
            read_checkpoint_file(ckpt)  # LightningCLI reads it while parsing
        train_cli(args)
        return 0

    return run_user_main(_run, argv)
