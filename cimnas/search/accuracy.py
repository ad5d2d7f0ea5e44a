"""Accuracy sources of the search beyond the predictor itself.

:class:`NoiseAwareAccuracy` wraps any source (``predict(ArchBatch) -> [B]``) with the retention
factor of RRAM conductance variation (:class:`cimnas.models.variation.RetentionModel`), a function
of the network's mean relative weight noise :func:`network_noise_feature`, which reads each
layer's parameter count from the cost-model lowering.
"""

from __future__ import annotations

from typing import Any

import torch

from cimnas.hw.components.cell import is_sram
from cimnas.models.variation import RetentionModel, VariationConfig, relative_weight_noise
from cimnas.search.lowering import workload_from_arch


def network_noise_feature(space: Any, arch_batch: Any, bits_per_cell: torch.Tensor, config: VariationConfig) -> torch.Tensor:
    """Mean over active layers (weighted by parameter count, from the cost model's workload) of
    :func:`relative_weight_noise` ``[B]``: the predictor feature of the noise-aware accuracy."""
    wl = workload_from_arch(space, arch_batch, value_stats=None)
    params = (wl.C * wl.M * wl.R * wl.S * wl.G).double() * wl.mask.double()
    table = torch.zeros(9, 9, dtype=torch.float64)
    for b in range(2, 9):
        for c in range(1, 9):
            table[b, c] = relative_weight_noise(b, c, config)
    bpc = bits_per_cell.long().to(wl.weight_bits.device).clamp(1, 8).view(-1, 1).expand_as(wl.weight_bits)
    per_layer = table.to(wl.weight_bits.device)[wl.weight_bits.clamp(2, 8), bpc]
    return (per_layer * params).sum(1) / params.sum(1).clamp_min(1.0)


class NoiseAwareAccuracy:
    """Accuracy source under device variation: ``base.predict(arch) · retention(feature(arch,
    bits_per_cell))`` for RRAM designs; SRAM designs (digital cells) keep ``base``'s value.

    ``predict(arch)`` alone (no hardware) assumes the worst case of the space, 8 bits per cell;
    the search calls :meth:`predict_with_hardware` (``DesignEvaluator`` hook)."""

    def __init__(self, base: Any, model: RetentionModel, space: Any | None = None):
        self.base = base
        self.model = model
        self.space = getattr(base, "space", None) if space is None else space
        if self.space is None:
            raise ValueError("NoiseAwareAccuracy needs the search space (the base source has no .space)")

    def to(self, device: Any) -> "NoiseAwareAccuracy":
        if hasattr(self.base, "to"):
            self.base = self.base.to(device)
        return self

    def retention(self, arch: Any, bits_per_cell: torch.Tensor, sram: torch.Tensor | None = None) -> torch.Tensor:
        feature = network_noise_feature(self.space, arch, bits_per_cell, self.model.variation)
        keep = self.model.retention(feature)
        if sram is not None:
            keep = torch.where(sram.to(keep.device), torch.ones_like(keep), keep)
        return keep

    def predict(self, arch: Any) -> torch.Tensor:
        bpc = torch.full((arch.batch_size,), 8, dtype=torch.long)
        clean = self.base.predict(arch)
        return clean * self.retention(arch, bpc).to(clean.device, clean.dtype)

    def predict_with_hardware(self, arch: Any, hardware: Any) -> torch.Tensor:
        clean = self.base.predict(arch)
        keep = self.retention(arch, hardware.bits_per_cell.cpu(), is_sram(hardware.cell).cpu())
        return clean * keep.to(clean.device, clean.dtype)




__all__ = ["network_noise_feature", "NoiseAwareAccuracy"]
