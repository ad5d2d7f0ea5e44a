"""Trace a real network into a cost-model :class:`~cimnas.hw.workload.Workload`.

Forward hooks on every ``nn.Conv2d`` / ``nn.Linear`` a module executes record its shape, bit
widths and value histograms (from calibration images), in execution order.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cimnas.hw.histogram import integer_histogram, reference_lossy_histogram
from cimnas.hw.workload import NBINS, Workload, WorkloadError


def _kind_of_conv(m: nn.Conv2d) -> str:
    if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
        return "depthwise"
    if m.kernel_size == (1, 1) and m.groups == 1:
        return "pointwise"
    return "conv"


def _minmax_levels(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, bool]:
    """Fallback quantisation: unsigned min-max when x >= 0, else symmetric signed."""
    x = x.detach().float()
    if float(x.min()) >= 0:
        hi = float(x.max()) or 1.0
        return torch.round(x / hi * (2**bits - 1)), False
    amax = float(x.abs().max()) or 1.0
    return torch.round(x / amax * (2 ** (bits - 1) - 1)), True


@torch.no_grad()
def workload_from_module(module: nn.Module, images: torch.Tensor, *, default_bits: int = 8,
                         reference_histograms: bool = False, nbins: int = NBINS) -> Workload:
    """Run ``images`` through ``module`` and describe every ``nn.Conv2d`` / ``nn.Linear`` it
    executes, in execution order (B = 1, N = 1 per inference).

    Quantised layers (contract with the supernet): ``weight_bits`` / ``input_bits`` int
    attributes and ``quantize_weight()`` / ``quantize_input(x)`` returning integer levels; others
    fall back to min-max quantisation at ``default_bits``. ``reference_histograms=True`` builds
    the reference code's lossy 8-level histograms instead (cim-cost-model.md §1.5)."""
    records: list[dict[str, Any]] = []
    hooks = []

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        wb = int(getattr(mod, "weight_bits", default_bits) or default_bits)
        ib = int(getattr(mod, "input_bits", default_bits) or default_bits)
        # a float layer (e.g. FULL_PRECISION = 32 bits) runs at default_bits on the chip
        w_quant, i_quant = 1 <= wb <= 8, 1 <= ib <= 8
        wb, ib = (wb if w_quant else default_bits), (ib if i_quant else default_bits)
        if isinstance(mod, nn.Conv2d):
            kind = _kind_of_conv(mod)
            g = mod.groups
            shape = dict(N=1, C=mod.in_channels // g, M=mod.out_channels // g, R=mod.kernel_size[0],
                         S=mod.kernel_size[1], P=int(output.shape[-2]), Q=int(output.shape[-1]), G=g,
                         stride=int(mod.stride[0]))
        else:
            kind = "linear"
            tokens = int(math.prod(output.shape[1:-1])) if output.dim() > 2 else 1
            shape = dict(N=1, C=mod.in_features, M=mod.out_features, R=1, S=1, P=tokens, Q=1, G=1, stride=1)
        if reference_histograms:
            in_hist = reference_lossy_histogram(x, nbins)
            w_hist = reference_lossy_histogram(mod.weight, nbins)
        else:
            if i_quant and hasattr(mod, "quantize_input"):
                levels = mod.quantize_input(x)
                in_signed = bool(levels.min() < 0)
            else:
                levels, in_signed = _minmax_levels(x, ib)
            in_hist = integer_histogram(levels, ib, in_signed, nbins)
            if w_quant and hasattr(mod, "quantize_weight"):
                wl = mod.quantize_weight()
                w_signed = True
            else:
                wl, w_signed = _minmax_levels(mod.weight, wb)
                w_signed = True if float(mod.weight.min()) < 0 else w_signed
            w_hist = integer_histogram(wl, wb, w_signed, nbins)
        records.append(dict(kind=kind, **shape, input_bits=ib, weight_bits=wb, output_bits=8,
                            input_hist=in_hist.tolist(), weight_hist=w_hist.tolist(), name=_name_of(module, mod)))

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    was_training = module.training
    module.eval()
    try:
        module(images)  # histograms over every calibration image; shapes per inference (N = 1)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    if not records:
        raise WorkloadError("the module executed no nn.Conv2d / nn.Linear layer")
    return Workload.from_layers(records, default_bits=default_bits)


def _name_of(root: nn.Module, mod: nn.Module) -> str:
    for name, m in root.named_modules():
        if m is mod:
            return name or type(mod).__name__
    return type(mod).__name__


__all__ = ["workload_from_module"]
