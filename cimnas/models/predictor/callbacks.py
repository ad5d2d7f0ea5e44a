"""End-of-fit outputs of the accuracy predictor as a Lightning callback.

:class:`PredictorExport` runs at the end of ``fit`` (rank 0 only; a fit that raises writes
nothing): it writes the held-out report (:func:`~cimnas.models.predictor.report.write_report`)
into the run folder, the held-out metrics to ``$CIMNAS_METRICS_FILE``, and the query checkpoint
(:class:`~cimnas.models.predictor.predictor.AccuracyPredictor`, atomically) to the export path.

:class:`~cimnas.models.predictor.module.PredictorModule` registers one by default
(``configure_callbacks``), configured by its ``export_path`` / ``report`` arguments, so configs
need not list it; a config may list it under ``trainer.callbacks`` instead
(``class_path: cimnas.models.predictor.PredictorExport``), and then that one is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cimnas.io import write_metrics_file
from cimnas.models.predictor.report import write_report

#: Default checkpoint names in the run folder (quantization-aware / full-precision predictor).
QUANT_EXPORT_NAME = "predictor.pt"
FP_EXPORT_NAME = "predictor_fp.pt"


class PredictorExport(L.Callback):
    """Held-out report and query-checkpoint export at the end of fit.

    Args:
        export_path: the :class:`AccuracyPredictor` checkpoint file; None: the module's
            ``export_path``, else ``<run folder>/predictor.pt`` (``predictor_fp.pt`` for a
            full-precision predictor). Never inside the shipped artifacts.
        report: write the held-out report (JSON + scatter PNG, on the data module's ``test``
            split); None: the module's ``report`` (default true).
    """

    def __init__(self, export_path: str | None = None, report: bool | None = None) -> None:
        from cimnas.inputs import refuse_shipped_output

        refuse_shipped_output(export_path, "export_path")
        self.export_path = export_path
        self.report = report
        #: the held-out report of the last fit (None before, or without a test split)
        self.last_report: dict[str, Any] | None = None

    def export_file(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """The checkpoint file this callback writes for ``pl_module``."""
        hp = pl_module.hparams
        path = self.export_path or hp.get("export_path")
        if path:
            return path
        return os.path.join(trainer.default_root_dir, QUANT_EXPORT_NAME if hp.get("quantized", True) else FP_EXPORT_NAME)

    def _wants_report(self, pl_module: L.LightningModule) -> bool:
        return bool(self.report if self.report is not None else pl_module.hparams.get("report", True))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.last_report = None
        dm = trainer.datamodule
        if self._wants_report(pl_module) and dm is not None and "test" in getattr(dm, "splits", {}):
            features, target = dm.splits["test"].tensors
            with torch.no_grad():
                pred = pl_module(features.to(pl_module.device)).cpu()
            kind = "quantization-aware" if pl_module.hparams.get("quantized", True) else "full-precision"
            self.last_report = write_report(pred, target, Path(trainer.default_root_dir), trainer.loggers,
                                            title=f"{kind} predictor, {len(target)} held-out configs")
            # beside the trainer's metrics (val_kendall: the predictor sweep's metric), not instead of them
            write_metrics_file({f"held_out_{k}": v for k, v in self.last_report["metrics"].items()}, merge=True)
        pl_module.last_report = self.last_report
        path = self.export_file(trainer, pl_module)
        if path:
            predictor = pl_module.export_predictor()
            predictor.meta = {"hparams": {k: v for k, v in pl_module.hparams.items()}, "report": self.last_report,
                              "target_mean": float(pl_module.target_mean),
                              "target_std": float(pl_module.target_std)}
            predictor.save(path)


__all__ = ["PredictorExport", "QUANT_EXPORT_NAME", "FP_EXPORT_NAME"]
