"""Every accuracy source of the search: the protocol (:class:`AccuracySource`: ``predict(ArchBatch)
-> [B]`` top-1 fractions), the trained predictor loaded from its checkpoint (:func:`load_predictor`:
our APQ-layout or ranking predictor, or OFA's), a constant (:class:`ConstantAccuracy`), and the
noise-aware wrapper.

:class:`NoiseAwareAccuracy` wraps any source with the retention factor of RRAM conductance
variation (:class:`cimnas.models.variation.RetentionModel`), a function of the network's mean
relative weight noise :func:`network_noise_feature`, which reads each layer's parameter count from
the cost-model lowering. (``cimnas.models`` is imported on first use, not with this module: the
search's start-up needs only the protocol.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from cimnas.hw.components.cell import is_sram
from cimnas.search.lowering import workload_from_arch
from cimnas.space import ArchBatch

if TYPE_CHECKING:
    from cimnas.models.variation import RetentionModel, VariationConfig


@runtime_checkable
class AccuracySource(Protocol):
    """Anything that predicts top-1 accuracy (a fraction) for a batch of (architecture, bits)."""

    def predict(self, arch_batch: ArchBatch) -> torch.Tensor:  # pragma: no cover - protocol
        ...


class ArtifactError(FileNotFoundError):
    """A default artifact (predictor checkpoint, layer statistics) is missing."""


#: The commands that regenerate the shipped default artifacts (README, "The full pipeline").
REGENERATE_HINT = (
    "the README's 'The full pipeline' steps 1-2 (`python train.py fit --config configs/supernet/fmnist.yaml`; "
    "`python -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist_fp.yaml` and "
    "`--config configs/predictor/measure_fmnist.yaml`; `python train.py fit --config "
    "configs/predictor/fmnist_fp.yaml`, then `--config configs/predictor/fmnist_quant.yaml`) and "
    "`python -m cimnas.search.value_stats` for the layer value statistics (docs/search.md)"
)


class ConstantAccuracy:
    """A fixed accuracy for every design (``predictor: constant:<fraction>``): for fixed-network
    (hardware-only) searches of spaces without a trained predictor, where accuracy cannot change
    the ranking (e.g. ResNet50 at the reference's 0.7595, cimnas-reference-code.md §8.2)."""

    def __init__(self, value: float):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"predictor constant:{value} must be an accuracy fraction in (0, 1]")
        self.value = float(value)

    def predict(self, arch_batch: ArchBatch) -> torch.Tensor:
        return torch.full((arch_batch.batch_size,), self.value, dtype=torch.float64, device=arch_batch.device)


def load_predictor(path: str | Path, device: str | torch.device = "cpu") -> AccuracySource:
    """Load the accuracy predictor checkpoint, failing loudly (never falling back to a proxy);
    ``constant:<fraction>`` gives a :class:`ConstantAccuracy`."""
    if str(path).startswith("constant:"):
        return ConstantAccuracy(float(str(path).split(":", 1)[1]))
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"accuracy predictor checkpoint {str(path)!r} not found. The default search needs the shipped "
            f"default artifacts; regenerate them with: {REGENERATE_HINT}, or pass --predictor PATH."
        )
    from cimnas.models.ofa_predictor import OFAAccuracyPredictor, is_ofa_predictor_file
    from cimnas.models.predictor import AccuracyPredictor

    if is_ofa_predictor_file(path):  # OFA's MobileNetV3 predictor (python -m cimnas.models.ofa_predictor)
        return OFAAccuracyPredictor.load(path, map_location=device)
    predictor = AccuracyPredictor.from_checkpoint(path, map_location=device)
    predictor.eval()
    return predictor


def network_noise_feature(space: Any, arch_batch: Any, bits_per_cell: torch.Tensor, config: VariationConfig) -> torch.Tensor:
    """Mean over active layers (weighted by parameter count, from the cost model's workload) of
    :func:`relative_weight_noise` ``[B]``: the predictor feature of the noise-aware accuracy."""
    from cimnas.models.variation import relative_weight_noise

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




__all__ = ["REGENERATE_HINT", "AccuracySource", "ArtifactError", "ConstantAccuracy", "NoiseAwareAccuracy", "load_predictor",
           "network_noise_feature"]
