"""BN recalibration and top-1 evaluation of the active subnet of a supernet (or any model),
OFA §2.4: exact BN statistics of a subnet from a few calibration batches."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.models.dynamic_ops import DynamicBatchNorm, _BatchStats


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def fit_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of a batch to ``resolution`` (no-op when it already has that size)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], max_batches: int | None = None,
                   sync_distributed: bool | None = None) -> int:
    """Reset the BN statistics of the active subnet to the exact batch statistics averaged over
    ``batches`` (tensors or ``(images, labels)`` tuples), weighted by batch size (OFA §2.4).
    Under an initialised process group the sums are all-reduced. Returns the images used."""
    layers = [m for m in model.modules() if isinstance(m, DynamicBatchNorm)]
    if not layers:
        raise ValueError("recalibrate_bn needs a model with DynamicBatchNorm layers (an OFASupernet)")
    resolution = getattr(getattr(model, "active_arch", None), "resolution", None)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.calibration = _BatchStats()
    seen = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = _images(batch).to(device)
            if resolution is not None:
                x = fit_resolution(x, resolution)
            model(x)
            seen += x.shape[0]
        if seen == 0:
            raise ValueError("recalibrate_bn received no batches")
        if sync_distributed is None:
            sync_distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        for layer in layers:
            stats = layer.calibration
            if stats.mean_sum is None:  # layer of a skipped block
                continue
            mean_sum, var_sum = stats.mean_sum, stats.var_sum
            count = torch.tensor(float(stats.count), device=mean_sum.device)
            if sync_distributed:
                for t in (mean_sum, var_sum, count):
                    torch.distributed.all_reduce(t)
            c = mean_sum.shape[0]
            layer.bn.running_mean[:c] = mean_sum / count
            layer.bn.running_var[:c] = var_sum / count
    finally:
        for layer in layers:
            layer.calibration = None
        model.train(was_training)
    return seen


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, batches: Iterable[Any], max_batches: int | None = None) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode over ``(images, labels)`` batches,
    resized to the active resolution when the model is a supernet."""
    resolution = getattr(getattr(model, "active_arch", None), "resolution", None)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            if resolution is not None:
                x = fit_resolution(x, resolution)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy received no batches")
    return correct / total
