"""The supernet's end-of-fit export as a Lightning Callback (added by
:class:`~cimnas.models.supernet_module.OFASupernetModule` itself)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from cimnas.models.supernet import save_supernet


class SupernetExport(L.Callback):
    """At the end of ``fit``, :func:`save_supernet` of the trained supernet to the module's
    :meth:`~OFASupernetModule.export_file` (atomically, rank zero), with the last validation
    metrics, the number of validation images and the step / epoch in its ``meta`` (what
    ``python -m cimnas.promote`` compares). Added by the module itself; listing it in a config's
    ``trainer.callbacks`` is the same."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = pl_module.export_file()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("val/") and v.numel() == 1}
        dm = trainer.datamodule
        val_images = None
        if dm is not None and getattr(dm, "val_set", None) is not None:
            val_images = len(dm.val_set)
        meta = {"val_metrics": metrics, "val_acc": metrics.get("val/acc"), "val_images": val_images,
                "global_step": int(pl_module.global_step), "epochs": int(pl_module.current_epoch),
                "run_dir": str(trainer.default_root_dir)}
        save_supernet(pl_module.supernet, path, meta=meta)
        rank_zero_info(f"supernet saved to {path} (val/acc {meta['val_acc']})")


__all__ = ["SupernetExport"]
