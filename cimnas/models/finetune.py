"""Quantization-aware fine-tuning of one searched design (APQ-style QAT) with Lightning.

``python train.py fit --config configs/finetune.yaml --model.init_args.design results/default/best.json``

1. The design file (:mod:`cimnas.models.design`) is checked against the supernet's space.
2. The subnet inherits the supernet's weights: the supernet is set to the design's architecture
   and per-block bit widths, its BN statistics are recalibrated on training images
   (``ofa-predictor.md`` §2.4), and it is exported to a static network
   (:meth:`~cimnas.models.supernet.OFASupernet.export_subnet`) of fake-quantized layers whose bit
   widths stay fixed for the whole run.
3. The accuracy of that inherited network on the held-out split (what the predictor was trained
   to predict) is measured, then the network is fine-tuned with straight-through fake
   quantization (reference: 5 epochs at lr 1e-3, ``cimnas-reference-code.md`` §1.6).
4. At the end of ``fit`` the module's default callback
   (:class:`~cimnas.models.finetune_report.FinetuneReport`) writes the final held-out accuracy next
   to the predicted one in ``<output_dir>/<design>.finetune.json`` (atomic) and exports the network
   (:func:`~cimnas.models.export.save_subnet`, plus ONNX when ``onnx`` is installed).
   ``validate`` / ``test`` add their accuracies to the same file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy

import cimnas
from cimnas.models.design import Design, load_design
from cimnas.models.export import block_bit_widths
from cimnas.models.finetune_report import EXPORT_SUFFIX, RESULT_SUFFIX, FinetuneReport, result_path_for, update_json
from cimnas.models.supernet import (
    evaluate_accuracy,
    fit_resolution,
    load_supernet,
    recalibrate_bn,
)

#: The shipped Fashion-MNIST supernet (space ``apq_mbv2_tiny``).
DEFAULT_SUPERNET = "cimnas/artifacts/fmnist/supernet.pt"


def resolve_artifact(path: str | os.PathLike, what: str = "supernet") -> Path:
    """``path`` as given, else relative to the repository / package root (so the default
    artifact is found from any working directory)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute():
        package = Path(cimnas.__file__).resolve().parent
        for base in (package.parent, package):
            rel = p.relative_to("cimnas") if base == package and p.parts[:1] == ("cimnas",) else p
            if (base / rel).is_file():
                return base / rel
    raise FileNotFoundError(
        f"{what} file {str(path)!r} not found. Train one with `python train.py fit --config "
        f"configs/supernet/<name>.yaml` (its export_path), or pass --model.init_args.{what}=<path>.")


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class FinetuneModule(L.LightningModule):
    """Quantization-aware fine-tuning of the static subnet of one design.

    Args:
        design: design JSON written by the search (``<results>/best.json``) — or a mapping with
            ``architecture`` and ``quantization`` (and optionally ``space``).
        supernet: supernet file (``save_supernet`` output or a supernet Lightning checkpoint).
        lr: peak learning rate (reference QAT: 1e-3), cosine-decayed per step to 0.
        optimizer: ``sgd`` (momentum, Nesterov) or ``adam``.
        momentum / weight_decay: optimizer settings (no decay on BN, biases and clip ranges).
        label_smoothing: of the cross-entropy.
        calib_images / calib_batch_size: BN recalibration set before fine-tuning (OFA: 2000 / 200).
        recalibrate: recalibrate BN statistics of the inherited subnet (always, unless debugging).
        measure_inherited: score the inherited network on the held-out split at the start of fit.
        output_dir: folder of the result JSON and the exports (default: the design file's folder).
        export: the default :class:`FinetuneReport` callback writes the fine-tuned state dict (and
            ONNX, when ``onnx`` is installed) after fit.
        onnx: try the ONNX export.
        final_test: also score the final network on the test split at the end of fit
            (``finetuned_test_accuracy``; respects ``trainer.limit_test_batches``).
        seed: seed of the calibration subset.
    """

    def __init__(
        self,
        design: str | dict,
        supernet: str = DEFAULT_SUPERNET,
        lr: float = 1e-3,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.0,
        calib_images: int = 2000,
        calib_batch_size: int = 200,
        recalibrate: bool = True,
        measure_inherited: bool = True,
        output_dir: str | None = None,
        export: bool = True,
        onnx: bool = True,
        final_test: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr={lr} must be positive")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer={optimizer!r} is not allowed; allowed values: ['sgd', 'adam']")
        self.save_hyperparameters()
        from cimnas.inputs import refuse_shipped_output

        refuse_shipped_output(output_dir, "model.init_args.output_dir")
        if output_dir is None and not isinstance(design, dict):
            refuse_shipped_output(Path(str(design)).parent / "x", "the design file's folder (the default output_dir)")
        self.supernet_path = resolve_artifact(supernet, "supernet")
        source = load_supernet(self.supernet_path)
        self.design: Design = load_design(design, space=source.space)
        self.design_path = None if isinstance(design, dict) else str(design)
        self.space = source.space
        self.arch, self.policy = self.design.architecture, self.design.quantization
        source.set_active(self.arch, self.policy)
        self.supernet_options = {"kernel_transform": source.kernel_transform,
                                 "per_channel_weights": source.per_channel_weights, "dropout": source.dropout_rate}
        self._source = [source]  # kept out of the module tree (not trained, not in checkpoints)
        self.net = source.export_subnet()
        self.expected_block_bits = [self.policy.block_bits(b) for b in source.active_block_indices()]
        self.check_bits()
        n = self.space.num_classes
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.result_path = result_path_for(self.design_path, output_dir, self.design.name)
        self._prepared = False
        self.inherited_val_accuracy: float | None = None
        self.last_val_accuracy: float | None = None
        self.last_test_accuracy: float | None = None
        #: the result record of the last fit (filled by :class:`FinetuneReport`)
        self.result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ inherited network
    def check_bits(self) -> None:
        found = block_bit_widths(self.net)
        if found != self.expected_block_bits:
            raise RuntimeError(f"subnet bit widths {found} differ from the design's {self.expected_block_bits}")

    def calibration_batches(self) -> list[torch.Tensor]:
        """Un-augmented training images for BN recalibration (the datamodule's seeded subset)."""
        hp = self.hparams
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None and hasattr(dm, "calibration_batches"):
            return dm.calibration_batches(hp.calib_images, hp.calib_batch_size, seed=hp.seed)
        if dm is None:
            raise RuntimeError("BN recalibration needs training images: pass a datamodule (data.class_path)")
        batches, seen = [], 0
        for batch in dm.train_dataloader():
            batches.append(_images(batch))
            seen += batches[-1].shape[0]
            if seen >= hp.calib_images:
                break
        return batches

    @torch.no_grad()
    def inherit(self, batches: Iterable[torch.Tensor] | None = None) -> None:
        """(Re)build ``self.net`` from the supernet: recalibrate BN of the design's subnet on
        ``batches`` (default: :meth:`calibration_batches`) and copy the exported weights."""
        source = self._source[0]
        device = self.device if self._trainer is None else self.trainer.strategy.root_device
        source.to(device)
        source.set_active(self.arch, self.policy)
        if self.hparams.recalibrate:
            used = recalibrate_bn(source, self.calibration_batches() if batches is None else batches)
            rank_zero_info(f"finetune: BN of the inherited subnet recalibrated on {used} images")
        exported = source.export_subnet()
        self.net.load_state_dict(exported.state_dict())
        source.to("cpu")
        self.check_bits()
        self._prepared = True

    def setup(self, stage: str) -> None:
        # A checkpoint given by --ckpt_path is loaded after this hook and replaces these weights.
        if not self._prepared:
            self.inherit()

    # ------------------------------------------------------------------ model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(fit_resolution(x, self.arch.resolution))

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.net.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)  # BN, biases and clip ranges do not decay
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0)
        else:
            opt = torch.optim.Adam(groups, lr=hp.lr)
        total = self.trainer.estimated_stepping_batches
        steps = int(total) if total is not None and math.isfinite(total) and total > 0 else 1
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.val_acc.update(self(x), y)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.log("val/acc", acc, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.last_val_accuracy = float(acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.test_acc.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        acc = self.test_acc.compute()
        self.test_acc.reset()
        self.log("test/acc", acc)
        self.last_test_accuracy = float(acc)

    # ------------------------------------------------------------------ results
    def _batch_limit(self, limit: int | float | None, loader: Any) -> int | None:
        if isinstance(limit, int):
            return limit
        if limit is None or limit >= 1.0:
            return None
        return max(1, int(len(loader) * limit))

    def evaluate_val(self) -> float:
        """Top-1 on the validation split (``trainer.limit_val_batches`` respected)."""
        loader = self.trainer.datamodule.val_dataloader()
        return evaluate_accuracy(self, loader, max_batches=self._batch_limit(self.trainer.limit_val_batches, loader))

    def evaluate_test(self) -> float:
        """Top-1 on the test split (``trainer.limit_test_batches`` respected)."""
        loader = self.trainer.datamodule.test_dataloader()
        return evaluate_accuracy(self, loader, max_batches=self._batch_limit(self.trainer.limit_test_batches, loader))

    def log_numbers(self, values: dict[str, float | None]) -> None:
        numbers = {k: v for k, v in values.items() if v is not None}
        for logger in self.loggers:
            logger.log_metrics(numbers, step=self.global_step)

    def base_result(self) -> dict[str, Any]:
        d = self.design
        return {
            "design": self.design_path, "design_name": d.name, "space": self.space.name,
            "architecture": self.arch.to_dict(), "quantization": self.policy.to_dict(),
            "hardware": d.hardware, "predicted_accuracy": d.predicted_accuracy,
            "supernet": str(self.supernet_path),
        }

    def on_fit_start(self) -> None:
        if self.hparams.measure_inherited and self.trainer.datamodule is not None:
            self.inherited_val_accuracy = self.evaluate_val()
            rank_zero_info(f"finetune: inherited (BN-recalibrated) val accuracy {self.inherited_val_accuracy:.4f}, "
                           f"predicted {self.design.predicted_accuracy}")
        self.log_numbers({"finetune/predicted_acc": self.design.predicted_accuracy,
                           "finetune/inherited_val_acc": self.inherited_val_accuracy})

    def configure_callbacks(self) -> list[L.Callback]:
        """The end-of-fit result file and exports (:class:`FinetuneReport`, from ``export`` /
        ``onnx`` / ``final_test``), unless the trainer already has one (listed in the config)."""
        if any(isinstance(cb, FinetuneReport) for cb in self.trainer.callbacks):
            return []
        return [FinetuneReport()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cimnas_design"] = {"space": self.space.to_dict(), "architecture": self.arch.to_dict(),
                                       "quantization": self.policy.to_dict(), "options": self.supernet_options}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_checkpoint(checkpoint, getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None)
        self._prepared = True

    def check_checkpoint(self, checkpoint: dict[str, Any], source: Any) -> None:
        """A fine-tuning checkpoint of this design, else one line naming the file."""
        from cimnas.inputs import InputError

        saved = checkpoint.get("cimnas_design")
        if saved is None:
            raise InputError(f"checkpoint {source!r}: field 'cimnas_design' missing; not a fine-tuning checkpoint")
        if saved["architecture"] != self.arch.to_dict() or saved["quantization"] != self.policy.to_dict():
            raise InputError(f"checkpoint {source!r} was fine-tuned for another design (architecture / quantization "
                             f"differ from {self.design_path})")


if __name__ == "__main__":  # `python -m cimnas.models.finetune fit ...` = train.py (the batch mode uses it)
    import sys

    from cimnas.cli import main

    sys.exit(main())


__all__ = ["FinetuneModule", "FinetuneReport", "DEFAULT_SUPERNET", "EXPORT_SUFFIX", "RESULT_SUFFIX",
           "resolve_artifact", "result_path_for", "update_json"]
