"""Held-out report of an accuracy predictor: regression metrics (RMSE, Kendall tau, Spearman rho)
and the measured-vs-predicted scatter plot, written atomically and logged to W&B."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics import KendallRankCorrCoef, MeanSquaredError, MetricCollection, SpearmanCorrCoef

from cimnas.io import atomic_savefig, atomic_write_text, pyplot

#: Files :func:`write_report` writes into its folder.
REPORT_JSON = "predictor_report.json"
SCATTER_PNG = "predictor_scatter.png"


def regression_metrics(prefix: str) -> MetricCollection:
    return MetricCollection(
        {"rmse": MeanSquaredError(squared=False), "kendall": KendallRankCorrCoef(),
         "spearman": SpearmanCorrCoef()},
        prefix=prefix,
    )


def held_out_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """RMSE (accuracy fraction), Kendall tau, Spearman rho, and the "predict the mean" RMSE."""
    m = regression_metrics("")
    m.update(pred.float(), target.float())
    out = {k: float(v) for k, v in m.compute().items()}
    out["baseline_rmse_predict_mean"] = float((target - target.mean()).pow(2).mean().sqrt())
    out["num_configs"] = int(len(target))
    return out


def write_report(pred: torch.Tensor, target: torch.Tensor, folder: str | os.PathLike,
                 loggers: list | tuple = (), title: str = "held-out configurations") -> dict[str, Any]:
    """Write ``predictor_report.json`` and ``predictor_scatter.png`` into ``folder`` (each
    atomically); log both to every ``WandbLogger`` among ``loggers``. Returns the metrics."""
    import json

    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = held_out_metrics(pred, target)
    png = folder / SCATTER_PNG
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    t, p = (100 * target).numpy(), (100 * pred).numpy()
    ax.scatter(t, p, s=10, alpha=0.7)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("measured top-1 (%)")
    ax.set_ylabel("predicted top-1 (%)")
    ax.set_title(f"{title}\nRMSE {100 * metrics['rmse']:.2f} pt, Kendall {metrics['kendall']:.3f}, "
                 f"Spearman {metrics['spearman']:.3f}", fontsize=8)
    fig.tight_layout()
    atomic_savefig(png, fig)
    report = {"metrics": metrics, "scatter_png": str(png)}
    atomic_write_text(folder / REPORT_JSON, json.dumps(report, indent=2))
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            logger.experiment.log({"predictor/scatter": wandb.Image(str(png)),
                                   **{f"predictor/held_out_{k}": v for k, v in metrics.items()}})
    return report


__all__ = ["REPORT_JSON", "SCATTER_PNG", "held_out_metrics", "regression_metrics", "write_report"]
