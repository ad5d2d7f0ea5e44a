"""Experiment tracking: one W&B switch for training (Lightning) and search.

The mode comes from the ``mode`` argument (``--trainer.logger.init_args.mode`` on the command
line), else from the ``WANDB_MODE`` environment variable, else ``offline`` — runs are written
to ``<save_dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

WANDB_MODES = ("offline", "online", "disabled")


def wandb_mode(mode: str | None = None) -> str:
    """Resolve the W&B mode: explicit argument, then ``$WANDB_MODE``, then ``offline``."""
    resolved = mode or os.environ.get("WANDB_MODE") or "offline"
    if resolved == "dryrun":  # wandb's legacy spelling of offline
        resolved = "offline"
    if resolved not in WANDB_MODES:
        raise ValueError(f"wandb mode={resolved!r} is not allowed; allowed values: {list(WANDB_MODES)}")
    return resolved


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger, offline unless asked otherwise, writing under ``runs/``."""

    def __init__(self, mode: str | None = None, project: str = "cimnas", save_dir: str = "runs",
                 name: str | None = None, log_model: bool = False, **kwargs: Any) -> None:
        mode = wandb_mode(mode)
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(name=name, project=project, save_dir=save_dir, offline=mode == "offline",
                         log_model=log_model and mode == "online", mode=mode, **kwargs)


#: Environment variable naming a JSON file that a job fills with its final metrics
#: (set by the local sweep runner, :mod:`cimnas.sweep`, for each trial).
METRICS_FILE_ENV = "CIMNAS_METRICS_FILE"


def atomic_write_text(path: "str | os.PathLike[str]", text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename, so a reader
    (or a resumed job) never sees a half-written file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_metrics_file(metrics: dict[str, Any], path: "str | os.PathLike[str] | None" = None) -> str | None:
    """Write ``metrics`` (plain numbers) as JSON to ``path`` or ``$CIMNAS_METRICS_FILE``;
    returns the path written, or None when neither is set."""
    import json

    path = path or os.environ.get(METRICS_FILE_ENV)
    if not path:
        return None
    plain = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in metrics.items()}
    atomic_write_text(path, json.dumps(plain, indent=2, sort_keys=True))
    return os.fspath(path)
