"""End-of-fit results of a fine-tuning job as a Lightning callback, and the result file.

:class:`FinetuneReport` writes, at the end of ``fit``, the final held-out accuracy next to the
predicted one in ``<output_dir>/<design>.finetune.json`` (atomic merge, :func:`update_json`) and
exports the network (:func:`~cimnas.models.export.save_subnet`, plus ONNX when ``onnx`` is
installed); ``validate`` / ``test`` add their accuracies to the same file. A fit that raises
writes nothing.

:class:`~cimnas.models.finetune.FinetuneModule` registers one by default
(``configure_callbacks``), configured by its ``export`` / ``onnx`` / ``final_test`` arguments, so
configs need not list it; a config may list it under ``trainer.callbacks`` instead
(``class_path: cimnas.models.finetune_report.FinetuneReport``), and then that one is used.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from cimnas.io import atomic_write_text
from cimnas.models.export import export_onnx, save_subnet

RESULT_SUFFIX = ".finetune.json"
EXPORT_SUFFIX = ".finetuned.pt"


def result_path_for(design_path: str | os.PathLike | None, output_dir: str | os.PathLike | None,
                    name: str) -> Path:
    """Where the fine-tuning result of a design goes: ``<output_dir>/<design stem>.finetune.json``
    (``output_dir`` defaults to the design file's folder)."""
    folder = Path(output_dir) if output_dir else (Path(design_path).parent if design_path else Path("."))
    stem = Path(design_path).stem if design_path else name
    return folder / f"{stem}{RESULT_SUFFIX}"


def update_json(path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the JSON object at ``path`` (created if missing), atomically."""
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.update(updates)
    data["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


class FinetuneReport(L.Callback):
    """Result file and exports of a :class:`~cimnas.models.finetune.FinetuneModule` fit.

    Args:
        export: write the fine-tuned state dict (and ONNX when ``onnx``) after fit; None: the
            module's ``export``.
        onnx: try the ONNX export; None: the module's ``onnx``.
        final_test: also score the final network on the test split at the end of fit
            (``finetuned_test_accuracy``; respects ``trainer.limit_test_batches``); None: the
            module's ``final_test``.
    """

    def __init__(self, export: bool | None = None, onnx: bool | None = None, final_test: bool | None = None) -> None:
        self.export = export
        self.onnx = onnx
        self.final_test = final_test

    def _option(self, pl_module: L.LightningModule, name: str) -> bool:
        own = getattr(self, name)
        return bool(pl_module.hparams.get(name, True) if own is None else own)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = pl_module
        m.check_bits()  # QAT never changes the bit widths
        dm = trainer.datamodule
        if m.last_val_accuracy is None and dm is not None:
            m.last_val_accuracy = m.evaluate_val()
        test_acc = m.evaluate_test() if self._option(m, "final_test") and dm is not None else None
        if not trainer.is_global_zero:
            return
        exports: dict[str, Any] = {}
        if self._option(m, "export"):
            stem = m.result_path.name[: -len(RESULT_SUFFIX)]
            pt = save_subnet(m.net, m.result_path.with_name(stem + EXPORT_SUFFIX), m.space, m.arch, m.policy,
                             m.supernet_options,
                             meta={"design": m.design_path, "predicted_accuracy": m.design.predicted_accuracy,
                                   "finetuned_val_accuracy": m.last_val_accuracy})
            exports["state_dict"] = str(pt)
            if self._option(m, "onnx"):
                onnx_path = export_onnx(m.net, m.result_path.with_name(stem + ".onnx"), m.arch.resolution,
                                        m.space.in_channels)
                exports["onnx"] = None if onnx_path is None else str(onnx_path)
        pred = m.design.predicted_accuracy
        final = m.last_val_accuracy
        callback = trainer.checkpoint_callback
        best_ckpt = getattr(callback, "best_model_path", None) or None
        last_ckpt = getattr(callback, "last_model_path", None) or None
        result = update_json(m.result_path, {
            **m.base_result(),
            "inherited_val_accuracy": m.inherited_val_accuracy,
            "finetuned_val_accuracy": final,
            "finetuned_test_accuracy": test_acc,
            "abs_error": None if pred is None or final is None else abs(pred - final),
            "epochs": m.current_epoch, "steps": m.global_step, "lr": m.hparams.lr,
            "best_checkpoint": best_ckpt, "last_checkpoint": last_ckpt, "export": exports,
        })
        m.log_numbers({"finetune/finetuned_val_acc": final, "finetune/finetuned_test_acc": test_acc})
        rank_zero_info(f"finetune: predicted {pred}, inherited {m.inherited_val_accuracy}, "
                       f"fine-tuned val {final} -> {m.result_path}")
        m.result = result

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = pl_module
        if trainer.state.fn == "validate" and trainer.is_global_zero and m.last_val_accuracy is not None:
            update_json(m.result_path, {**m.base_result(), "validate_accuracy": m.last_val_accuracy,
                                        "validate_checkpoint": trainer.ckpt_path})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = pl_module
        if trainer.is_global_zero and m.last_test_accuracy is not None:
            update_json(m.result_path, {**m.base_result(), "test_accuracy": m.last_test_accuracy,
                                        "test_checkpoint": trainer.ckpt_path})


__all__ = ["FinetuneReport", "EXPORT_SUFFIX", "RESULT_SUFFIX", "result_path_for", "update_json"]
