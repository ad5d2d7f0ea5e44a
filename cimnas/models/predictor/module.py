"""LightningModule of the accuracy predictor (full precision, or quantization-aware by transfer).

``python train.py fit --config configs/predictor/fmnist_fp.yaml`` trains the full-precision
predictor on arch-only features; ``configs/predictor/fmnist_quant.yaml`` then trains the
quantization-aware one with ``transfer_from`` pointing at the fp export (APQ's predictor
transfer: every fp layer copied, the new quant branch zero-initialised so training starts from the
fp predictor, then the whole MLP fine-tuned on the few quantized measurements).

At the end of ``fit`` the module's default callback (:class:`~cimnas.models.predictor.callbacks.PredictorExport`,
rank 0) writes the held-out report (RMSE, Kendall tau, Spearman rho, scatter plot; also to W&B when
the logger is a ``WandbLogger``) into the run folder and exports the query checkpoint
(:class:`AccuracyPredictor`) to ``export_path``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection

from cimnas.models.predictor.callbacks import PredictorExport
from cimnas.models.predictor.predictor import AccuracyPredictor
from cimnas.models.predictor.report import held_out_metrics, regression_metrics, write_report

QUANT_BRANCH_INITS = ("zero", "default")


class PredictorModule(L.LightningModule):
    """Args:
        space: search-space preset (must match the data module's).
        quantized: quantization-aware predictor (arch + quant branch) or full precision.
        hidden_size / num_layers: APQ MLP shape (400, 3).
        lr / weight_decay: Adam (OFA maintainers: 1e-3 / 1e-4).
        transfer_from: full-precision predictor checkpoint to start from (APQ predictor
            transfer); null trains from scratch with the output bias set to the mean accuracy.
        quant_branch_init: "zero" (start exactly at the fp predictor) or "default" (PyTorch
            Linear init, as APQ).
        standardize_targets: train the MLP on ``(accuracy - mean) / std`` of the training
            targets (folded back into the regressor on export, so checkpoints keep APQ's
            layout and predict accuracy fractions). Needed when designs differ by tenths of a
            point: in accuracy units the loss gradients are ~1e-5 and Adam's weight decay
            shrinks the network to a constant prediction (measured on 1,105 Fashion-MNIST
            records: held-out Kendall tau NaN after 300 epochs).
        export_path: where the default :class:`PredictorExport` callback writes the
            :class:`AccuracyPredictor` checkpoint after ``fit`` (default ``<run folder>/predictor.pt``,
            or ``predictor_fp.pt`` for a full-precision one; never inside the shipped artifacts:
            promote with ``python -m cimnas.promote``).
        report: the default callback writes the held-out report (JSON + scatter PNG) after ``fit``.
    """

    def __init__(
        self,
        space: str = "apq_mbv2_tiny",
        quantized: bool = True,
        hidden_size: int = 400,
        num_layers: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        transfer_from: str | None = None,
        quant_branch_init: str = "zero",
        export_path: str | None = None,
        report: bool = True,
        standardize_targets: bool = True,
    ) -> None:
        super().__init__()
        from cimnas.inputs import refuse_shipped_output

        refuse_shipped_output(export_path, "model.init_args.export_path")
        if quant_branch_init not in QUANT_BRANCH_INITS:
            raise ValueError(f"quant_branch_init={quant_branch_init!r}; allowed values: {list(QUANT_BRANCH_INITS)}")
        if transfer_from is not None and not quantized:
            raise ValueError("transfer_from is for the quantization-aware predictor (quantized: true)")
        self.save_hyperparameters()
        self.model = AccuracyPredictor(space, quantized=quantized, hidden_size=hidden_size, num_layers=num_layers)
        if transfer_from is not None:
            fp = AccuracyPredictor.from_checkpoint(transfer_from, map_location="cpu")
            if fp.space.to_dict() != self.model.space.to_dict():
                from cimnas.inputs import InputError

                raise InputError(f"transfer_from={transfer_from!r}: a predictor of space {fp.space.name!r}, but this "
                                 f"predictor is of space {self.model.space.name!r}")
            if fp.quantized:
                raise ValueError(f"transfer_from={transfer_from} is already quantization-aware; "
                                 "give a full-precision predictor checkpoint")
            self.model.mlp.load_full_precision(fp.mlp.state_dict())
            if quant_branch_init == "zero":
                self.model.mlp.zero_quant_branch()
        # target standardisation (identity until setup("fit") sets it from the training split)
        self.register_buffer("target_mean", torch.tensor(0.0))
        self.register_buffer("target_std", torch.tensor(1.0))
        self._target_scale_set = False
        self.val_metrics = regression_metrics("val_")
        self.test_metrics = regression_metrics("test_")
        #: the held-out report of the last fit (filled by :class:`PredictorExport`)
        self.last_report: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "input_dim") and dm.input_dim != self.model.mlp.input_dim:
            raise ValueError(f"data module gives {dm.input_dim}-dim features, the predictor takes "
                             f"{self.model.mlp.input_dim}; set model.quantized = data.quantized and the same space")
        if stage != "fit" or dm is None or not hasattr(dm, "train_target_mean") or self._target_scale_set:
            return
        mlp = self.model.mlp
        if self.hparams.standardize_targets:
            mean, std = dm.train_target_mean, dm.train_target_std
            self.target_mean.fill_(mean)
            self.target_std.fill_(std)
            if self.hparams.transfer_from is not None:
                mlp.scale_output(1.0 / std, -mean / std)  # same function, standardised units
            else:
                mlp.init_output_bias(0.0)  # start from "predict the mean"
        elif self.hparams.transfer_from is None:
            mlp.init_output_bias(dm.train_target_mean)
        self._target_scale_set = True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted accuracy fractions ``[B]``."""
        return self.model(features) * self.target_std + self.target_mean

    def export_predictor(self) -> AccuracyPredictor:
        """The query model in accuracy units (target standardisation folded into the regressor)."""
        import copy

        predictor = copy.deepcopy(self.model).cpu()
        predictor.mlp.scale_output(float(self.target_std), float(self.target_mean))
        return predictor

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        features, target = batch
        # MSE in standardised units (= MSE of the raw MLP output against the standardised target)
        loss = F.mse_loss(self(features), target) / self.target_std.square()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(target))
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, prefix: str) -> None:
        features, target = batch
        pred = self(features)
        self.log(f"{prefix}loss", F.mse_loss(pred, target), batch_size=len(target))
        metrics.update(pred, target)
        self.log_dict(metrics, batch_size=len(target))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val_")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test_")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ end of fit
    def configure_callbacks(self) -> list[L.Callback]:
        """The end-of-fit report and export (:class:`PredictorExport`, from ``export_path`` /
        ``report``), unless the trainer already has one (listed in the config)."""
        if any(isinstance(cb, PredictorExport) for cb in self.trainer.callbacks):
            return []
        return [PredictorExport()]


__all__ = ["PredictorModule", "held_out_metrics", "write_report", "regression_metrics"]
