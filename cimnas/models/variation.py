"""Device (conductance) variation of RRAM cells, applied to the bit-sliced weights of a subnet.

Model. A weight of ``b_w`` bits is stored offset-encoded (``u = level + qmax`` in ``[0, 2^b_w - 2]``,
CiMLoop's ``offset`` weight encoding, cim-cost-model.md §3.2) and cut into ``ceil(b_w / c)`` slices
of ``c = min(bits_per_cell, b_w)`` bits, one slice per cell (the cost model's slicing, §3.3).
A cell holding slice value ``s`` in ``0..L`` (``L = 2^c - 1``) is programmed to the conductance
``G(s) = G_off + s · ΔG / L`` with ``ΔG = G_on - G_off``; the programmed conductance deviates by a
zero-mean Gaussian (device-to-device, one draw per cell and chip) with standard deviation

    σ_G(s) = sigma_abs · ΔG  +  sigma_rel · G(s)

- ``sigma_rel``: the multiplicative form of DNN+NeuroSim V1.3's inference engine
  (``Inference_pytorch/modules/quantization_cpu_np_infer.py``: ``remainderQ + remainderQ *
  torch.normal(0, vari)`` on the Gmin-offset slice conductance; ``--vari`` help text: "e.g. 0.1
  standard deviation") [src]. Default 0.1 = NeuroSim's example value (not a measurement).
- ``sigma_abs``: a state-independent programming error (write-verify acceptance window and
  post-programming relaxation, e.g. Wan et al., Nature 2022, Extended Data Fig. 3) as a fraction
  of the conductance window [inf]. Default 0.01: 1 % of the window (2.55 levels of an 8-bit
  cell, 0.63 of a 6-bit cell, 0.01 of a 1-bit cell). This is the term that makes multi-level cells
  noisier as their levels get closer: in level units it grows as ``2^c - 1``.
- ``on_off_ratio``: ``G_on / G_off``; default from the cell file (``rram_neurosim_default``:
  R_off / R_on = 900 kΩ / 6 kΩ = 150; cim-cost-model.md §4.5) [src].
- ``sigma_abs_by_bits_per_cell``: optional per-level-count override of ``sigma_abs`` (e.g.
  measured per MLC mode).

In level units the slice error is ``σ_s = sigma_abs · L + sigma_rel · (s + L / (on_off_ratio - 1))``;
the noisy weight is ``Σ_k (s_k + σ_{s_k} z_k) 2^(k c) - qmax`` times the layer's scale (the
offset ``qmax`` is removed digitally, as NeuroSim's dummy Gmin column does). SRAM cells store
digital bits: no variation. Weights are perturbed on the exported static subnet
(:class:`~cimnas.models.static.StaticSubnet`): each ``QuantConv2d`` / ``QuantLinear`` gets the
noisy dequantized weight and its weight quantizer is bypassed for the measurement (inputs stay
quantized), then everything is restored.

Noise-aware accuracy for the search: :class:`cimnas.search.accuracy.NoiseAwareAccuracy` wraps
any accuracy source and multiplies its prediction by a retention factor (:class:`RetentionModel`)
fitted on Monte-Carlo measurements (:func:`fit_retention`) as a function of one feature, the
network's mean relative weight noise :func:`relative_weight_noise` (the "predictor feature").
``python -m cimnas.experiments.variation measure`` writes the measurements, ``... fit`` the model
file a search reads (``variation: <file>`` in a search config).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from cimnas.io import atomic_write_json
from cimnas.models.supernet import evaluate_accuracy
from cimnas.models.quant import FULL_PRECISION, QuantConv2d, QuantLinear, is_quantized, weight_levels

#: rram_neurosim_default: R_off / R_on = 9e5 / 6e3 (cim-cost-model.md §4.5) [src].
DEFAULT_ON_OFF_RATIO = 9e5 / 6e3


@dataclass
class VariationConfig:
    """Conductance-variation parameters (see the module docstring for sources).

    Attributes:
        sigma_rel: multiplicative σ (fraction of the cell's own conductance), NeuroSim's ``vari``.
        sigma_abs: state-independent σ as a fraction of the conductance window ``G_on - G_off``.
        on_off_ratio: ``G_on / G_off`` (> 1).
        sigma_abs_by_bits_per_cell: per effective bits-per-cell override of ``sigma_abs``.
    """

    sigma_rel: float = 0.1
    sigma_abs: float = 0.01
    on_off_ratio: float = DEFAULT_ON_OFF_RATIO
    sigma_abs_by_bits_per_cell: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sigma_rel", "sigma_abs"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"variation.{name}={getattr(self, name)} must be >= 0")
        if not self.on_off_ratio > 1:
            raise ValueError(f"variation.on_off_ratio={self.on_off_ratio} must be > 1")
        self.sigma_abs_by_bits_per_cell = {int(k): float(v) for k, v in self.sigma_abs_by_bits_per_cell.items()}
        for k, v in self.sigma_abs_by_bits_per_cell.items():
            if not 1 <= k <= 8 or v < 0:
                raise ValueError(f"variation.sigma_abs_by_bits_per_cell[{k}]={v}: keys 1..8, values >= 0")

    def scaled(self, factor: float) -> "VariationConfig":
        """Both σ terms times ``factor`` (0 = no variation)."""
        return VariationConfig(self.sigma_rel * factor, self.sigma_abs * factor, self.on_off_ratio,
                               {k: v * factor for k, v in self.sigma_abs_by_bits_per_cell.items()})

    @property
    def is_zero(self) -> bool:
        return self.sigma_rel == 0 and self.sigma_abs == 0 and not any(self.sigma_abs_by_bits_per_cell.values())

    def sigma_abs_for(self, cell_bits: int) -> float:
        return self.sigma_abs_by_bits_per_cell.get(int(cell_bits), self.sigma_abs)


def slice_sigma_levels(slice_values: torch.Tensor, cell_bits: int, config: VariationConfig) -> torch.Tensor:
    """σ of each cell in level units (one level = ``ΔG / (2^cell_bits - 1)``)."""
    top = float(2 ** cell_bits - 1)
    return config.sigma_abs_for(cell_bits) * top + config.sigma_rel * (slice_values + top / (config.on_off_ratio - 1.0))


def perturb_levels(levels: torch.Tensor, weight_bits: int, bits_per_cell: int, config: VariationConfig,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Signed integer weight levels (``|level| <= 2^(b-1) - 1``) -> levels read back from noisy
    cells (float). With zero variation the result equals ``levels`` exactly."""
    if not 1 <= bits_per_cell <= 8:
        raise ValueError(f"bits_per_cell={bits_per_cell} is not allowed; allowed values: 1..8")
    qmax = 2 ** (weight_bits - 1) - 1
    cell_bits = min(int(bits_per_cell), int(weight_bits))
    n_slices = math.ceil(weight_bits / cell_bits)
    u = (levels.double() + qmax).round()
    top = 2 ** cell_bits
    out = torch.zeros_like(u)
    for k in range(n_slices):
        base = float(top ** k)
        s = torch.floor(u / base) % top
        sigma = slice_sigma_levels(s, cell_bits, config)
        if config.is_zero:
            noisy = s
        else:
            z = torch.randn(s.shape, generator=generator, dtype=torch.float64, device=s.device)
            noisy = s + sigma * z
        out = out + noisy * base
    return (out - qmax).to(levels.dtype)


def relative_weight_noise(weight_bits: int, bits_per_cell: int, config: VariationConfig) -> float:
    """Expected RMS weight error over the weight range ``qmax`` for levels uniform on the grid:
    ``sqrt(E[Σ_k σ_k² 4^(k c)]) / qmax``. Slice ``k`` holds ``min(c, b_w - k c)`` bits (a partial
    top slice uses the low levels of its cell, NeuroSim's mapping), uniform over its values."""
    qmax = 2 ** (weight_bits - 1) - 1
    cell_bits = min(int(bits_per_cell), int(weight_bits))
    n_slices = math.ceil(weight_bits / cell_bits)
    top = 2 ** cell_bits
    total = 0.0
    for k in range(n_slices):
        held = min(cell_bits, weight_bits - k * cell_bits)
        s = torch.arange(2 ** held, dtype=torch.float64)
        total += float((slice_sigma_levels(s, cell_bits, config) ** 2).mean()) * float(top ** (2 * k))
    return math.sqrt(total) / qmax


def _cim_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (QuantConv2d, QuantLinear)) and is_quantized(m.weight_bits)]


@contextlib.contextmanager
@torch.no_grad()
def noisy_weights(net: nn.Module, bits_per_cell: int, config: VariationConfig,
                  generator: torch.Generator | None = None) -> Iterator[nn.Module]:
    """Within the block, every quantized conv / linear of ``net`` (an exported static subnet)
    computes with one draw of noisy cell conductances; restored on exit."""
    saved = []
    try:
        for m in _cim_layers(net):
            levels, scale = weight_levels(m.weight, m.weight_bits, m.per_channel)
            noisy = perturb_levels(levels, m.weight_bits, bits_per_cell, config, generator)
            saved.append((m, m.weight.detach().clone(), m.weight_bits))
            m.weight.copy_((noisy * scale).to(m.weight.dtype))
            m.weight_bits = FULL_PRECISION  # bypass the weight quantizer: the weight is already the read-out
        yield net
    finally:
        for m, weight, bits in saved:
            m.weight.copy_(weight)
            m.weight_bits = bits


def accuracy(net: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 (fraction) of ``net`` in eval mode (:func:`cimnas.models.supernet.evaluate_accuracy`)."""
    return evaluate_accuracy(net, batches)


def noisy_accuracy(net: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], bits_per_cell: int,
                   config: VariationConfig, samples: int = 3, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of the top-1 over ``samples`` chips (independent draws)."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    values = []
    for i in range(samples):
        g = torch.Generator().manual_seed(int(seed) * 7919 + i)
        with noisy_weights(net, bits_per_cell, config, g):
            values.append(accuracy(net, batches))
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if samples > 1 else 0.0


@dataclass
class RetentionModel:
    """``accuracy_noisy = accuracy_clean · retention(feature)``, ``retention = chance + (1 - chance) ·
    exp(-(feature / scale)^shape)`` (a Weibull-shaped fall from 1 to chance level)."""

    scale: float
    shape: float
    chance: float
    variation: VariationConfig
    fit_rmse: float = math.nan
    n_points: int = 0

    def retention(self, feature: torch.Tensor) -> torch.Tensor:
        f = feature.double().clamp_min(0)
        return self.chance + (1.0 - self.chance) * torch.exp(-torch.pow(f / self.scale, self.shape))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = "cimnas.variation/1"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RetentionModel":
        if d.get("format") != "cimnas.variation/1":
            raise ValueError(f"not a variation model file (format {d.get('format')!r}, expected 'cimnas.variation/1')")
        return cls(float(d["scale"]), float(d["shape"]), float(d["chance"]), VariationConfig(**d["variation"]),
                   float(d.get("fit_rmse", math.nan)), int(d.get("n_points", 0)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RetentionModel":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"variation model {str(p)!r} not found; write it with "
                                    "`python -m cimnas.experiments.variation fit --records R.jsonl --output M.json`")
        return cls.from_dict(json.loads(p.read_text()))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict(), indent=1)


def fit_retention(features: Sequence[float], ratios: Sequence[float], chance: float,
                  variation: VariationConfig) -> RetentionModel:
    """Least-squares fit of (scale, shape) on measured ``noisy / clean`` accuracy ratios (grid
    search in log-space, then a local refinement: two parameters, no optimiser needed)."""
    f = torch.tensor(features, dtype=torch.float64)
    r = torch.tensor(ratios, dtype=torch.float64).clamp(max=1.0)
    if f.numel() < 2:
        raise ValueError("fit_retention needs at least two measurements")
    best = (math.inf, 1.0, 1.0)
    scales = torch.logspace(-4, 1, 400, dtype=torch.float64)
    shapes = torch.linspace(0.3, 4.0, 75, dtype=torch.float64)
    S, K = torch.meshgrid(scales, shapes, indexing="ij")
    pred = chance + (1 - chance) * torch.exp(-torch.pow(f.view(1, 1, -1) / S.unsqueeze(-1), K.unsqueeze(-1)))
    err = ((pred - r) ** 2).mean(-1)
    i = int(err.argmin())
    best = (float(err.reshape(-1)[i]), float(S.reshape(-1)[i]), float(K.reshape(-1)[i]))
    return RetentionModel(best[1], best[2], chance, variation, math.sqrt(best[0]), int(f.numel()))


__all__ = [
    "VariationConfig", "slice_sigma_levels", "perturb_levels", "relative_weight_noise", "noisy_weights", "accuracy",
    "noisy_accuracy", "RetentionModel", "fit_retention",
]
