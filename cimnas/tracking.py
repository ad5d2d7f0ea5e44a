"""Experiment tracking: one W&B switch for training (Lightning) and search.

The mode comes from the ``mode`` argument (``--trainer.logger.init_args.mode`` on the command
line), else from the ``WANDB_MODE`` environment variable, else ``offline`` — runs are written
to ``<save_dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import os
from typing import Any

WANDB_MODES = ("offline", "online", "disabled")


def wandb_mode(mode: str | None = None) -> str:
    """Resolve the W&B mode: explicit argument, then ``$WANDB_MODE``, then ``offline``."""
    resolved = mode or os.environ.get("WANDB_MODE") or "offline"
    if resolved == "dryrun":  # wandb's legacy spelling of offline
        resolved = "offline"
    if resolved not in WANDB_MODES:
        raise ValueError(f"wandb mode={resolved!r} is not allowed; allowed values: {list(WANDB_MODES)}")
    return resolved


def _make_wandb_logger() -> type:
    from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

    class WandbLogger(_LightningWandbLogger):
        """Lightning's W&B logger, offline unless asked otherwise, writing under ``runs/``."""

        def __init__(self, mode: str | None = None, project: str = "cimnas", save_dir: str = "runs",
                     name: str | None = None, log_model: bool = False, **kwargs: Any) -> None:
            mode = wandb_mode(mode)
            os.makedirs(save_dir, exist_ok=True)
            super().__init__(name=name, project=project, save_dir=save_dir, offline=mode == "offline",
                             log_model=log_model and mode == "online", mode=mode, **kwargs)

    WandbLogger.__qualname__ = "WandbLogger"  # importable as cimnas.tracking.WandbLogger
    return WandbLogger


def __getattr__(name: str) -> Any:
    """``cimnas.tracking.WandbLogger`` is built on first access, so the search (which needs only
    :func:`wandb_mode`) does not import Lightning."""
    if name == "WandbLogger":
        cls = _make_wandb_logger()
        globals()["WandbLogger"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
