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

Noise-aware accuracy for the search: :class:`NoiseAwareAccuracy` wraps any accuracy source and
multiplies its prediction by a retention factor fitted on Monte-Carlo measurements
(:func:`fit_retention`) as a function of one feature, the network's mean relative weight noise
:func:`relative_weight_noise` (the "predictor feature"). ``python -m cimnas.models.variation
measure`` writes the measurements, ``... fit`` the model file a search reads
(``variation: <file>`` in a search config).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

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


@torch.no_grad()
def accuracy(net: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 (fraction) of ``net`` in eval mode."""
    was = net.training
    net.eval()
    correct = total = 0
    try:
        for x, y in batches:
            correct += int((net(x).argmax(1) == y).sum())
            total += int(y.numel())
    finally:
        net.train(was)
    if total == 0:
        raise ValueError("accuracy needs at least one batch")
    return correct / total


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


# ---------------------------------------------------------------------- network-level feature


def network_noise_feature(space: Any, arch_batch: Any, bits_per_cell: torch.Tensor, config: VariationConfig) -> torch.Tensor:
    """Mean over active layers (weighted by parameter count, from the cost model's workload) of
    :func:`relative_weight_noise` ``[B]``: the predictor feature of the noise-aware accuracy."""
    from cimnas.hw.workload import workload_from_arch

    wl = workload_from_arch(space, arch_batch, value_stats=None)
    params = (wl.C * wl.M * wl.R * wl.S * wl.G).double() * wl.mask.double()
    table = torch.zeros(9, 9, dtype=torch.float64)
    for b in range(2, 9):
        for c in range(1, 9):
            table[b, c] = relative_weight_noise(b, c, config)
    bpc = bits_per_cell.long().to(wl.weight_bits.device).clamp(1, 8).view(-1, 1).expand_as(wl.weight_bits)
    per_layer = table.to(wl.weight_bits.device)[wl.weight_bits.clamp(2, 8), bpc]
    return (per_layer * params).sum(1) / params.sum(1).clamp_min(1.0)


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
                                    "`python -m cimnas.models.variation fit --records R.jsonl --output M.json`")
        return cls.from_dict(json.loads(p.read_text()))

    def save(self, path: str | os.PathLike) -> None:
        _write_json(Path(path), self.to_dict())


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
        from cimnas.hw.components.cell import is_sram

        clean = self.base.predict(arch)
        keep = self.retention(arch, hardware.bits_per_cell.cpu(), is_sram(hardware.cell).cpu())
        return clean * keep.to(clean.device, clean.dtype)


# ---------------------------------------------------------------------- measurement CLI


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def load_fmnist_batches(eval_images: int, calibration_images: int, batch_size: int = 250, seed: int = 0
                        ) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """(calibration image batches from the training split, held-out ``val`` batches)."""
    from cimnas.data import FashionMNISTDataModule

    dm = FashionMNISTDataModule(resolution=28, channels=1, augment=False, val_size=5000, seed=0)
    dm.setup("validate")
    calib = dm.calibration_batches(calibration_images, batch_size, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dm.val_set, list(range(eval_images))),
                                         batch_size=batch_size, shuffle=False)
    return calib, [(x, y) for x, y in loader]


def subnet(supernet: Any, arch: Any, policy: Any, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """Recalibrated, exported static subnet of ``supernet`` (eval mode)."""
    from cimnas.models.supernet import recalibrate_bn

    supernet.set_active(arch, policy)
    recalibrate_bn(supernet, calibration, sync_distributed=False)
    return supernet.export_subnet().eval()


def measure(supernet_path: str, output: str, num_designs: int = 12, bits_per_cell: Sequence[int] = (1, 2, 4, 8),
            scales: Sequence[float] = (1.0,), samples: int = 2, eval_images: int = 1000,
            calibration_images: int = 500, seed: int = 3, config: VariationConfig | None = None) -> list[dict[str, Any]]:
    """Monte-Carlo noisy accuracy of ``num_designs`` random quantized subnets of the supernet at
    every (bits per cell, σ scale); appends JSON lines to ``output`` (resumable by design index)."""
    from cimnas.models.predictor.measure import sample_design
    from cimnas.models.supernet import load_supernet

    torch.set_num_threads(1)
    config = config or VariationConfig()
    out = Path(output)
    done = set()
    if out.exists():
        done = {json.loads(line)["index"] for line in out.read_text().splitlines() if line.strip()}
    net = load_supernet(supernet_path).eval()
    calib, batches = load_fmnist_batches(eval_images, calibration_images)
    records = []
    for i in range(num_designs):
        if i in done:
            continue
        t0 = time.perf_counter()
        arch, policy = sample_design(net.space, seed, i, quantized=True)
        static = subnet(net, arch, policy, calib)
        clean = accuracy(static, batches)
        rec: dict[str, Any] = {"index": i, "seed": seed, "arch": arch.to_dict(), "policy": policy.to_dict(),
                               "clean": clean, "eval_images": eval_images, "variation": asdict(config), "noisy": []}
        for c in bits_per_cell:
            for s in scales:
                mean, std = noisy_accuracy(static, batches, c, config.scaled(s), samples, seed=1000 * i + c)
                rec["noisy"].append({"bits_per_cell": c, "scale": s, "mean": mean, "std": std})
        rec["eval_s"] = round(time.perf_counter() - t0, 2)
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        records.append(rec)
        print(f"design {i}: clean {clean:.4f} " + " ".join(
            f"c{r['bits_per_cell']}x{r['scale']:g}={r['mean']:.3f}" for r in rec["noisy"]), flush=True)
    return records


def fit(records_path: str, output: str, scale: float = 1.0, chance: float = 0.1) -> RetentionModel:
    """Fit :class:`RetentionModel` on every measurement (all σ scales: the feature already carries
    the σ of its record); the model file's variation (what a search applies) is the records'
    configuration times ``scale``."""
    from cimnas.space import ArchBatch, Architecture, QuantPolicy, get_space

    rows = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{records_path}: no records")
    base = VariationConfig(**rows[0]["variation"])
    space = get_space("apq_mbv2_tiny")
    feats, ratios = [], []
    for r in rows:
        ab = ArchBatch.from_designs(space, [Architecture.from_dict(r["arch"])], [QuantPolicy.from_dict(r["policy"])])
        for n in r["noisy"]:
            config = VariationConfig(**r["variation"]).scaled(n["scale"])
            f = network_noise_feature(space, ab, torch.tensor([n["bits_per_cell"]]), config)
            feats.append(float(f[0]))
            ratios.append(n["mean"] / max(r["clean"], 1e-9))
    model = fit_retention(feats, ratios, chance, base.scaled(scale))
    model.save(output)
    print(json.dumps(model.to_dict()))
    return model


def _active_weight_bits(space: Any, arch: Any, policy: Any) -> tuple[float, float]:
    active = arch.active_blocks(space)
    pw = [b for b, a in zip(policy.pw_w_bits, active) if a]
    dw = [b for b, a in zip(policy.dw_w_bits, active) if a]
    return sum(pw) / max(len(pw), 1), sum(dw) / max(len(dw), 1)


def compare_runs(result_dirs: Sequence[str], model_path: str, predictor: str | None = None,
                 aware: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Best design and final-population statistics of search results folders, each best design
    scored with and without variation. Accuracy: the run's own recorded accuracy (noise-free for
    ordinary runs; under variation for the runs listed in ``aware``, whose clean value is
    recovered by dividing by the retention), or a ``predictor`` re-scoring every design."""
    import csv

    from cimnas.space import ArchBatch, Architecture, QuantPolicy, get_space
    from cimnas.search.evaluator import load_predictor

    model = RetentionModel.load(model_path)
    base = load_predictor(predictor) if predictor else None
    rows = []
    for d in result_dirs:
        best = json.loads((Path(d) / "best.json").read_text())
        space = get_space(best["space_config"] if "space_config" in best else best["space"])
        arch, pol = Architecture.from_dict(best["architecture"]), QuantPolicy.from_dict(best["quantization"])
        ab = ArchBatch.from_designs(space, [arch], [pol])
        bpc = int(best["hardware"].get("bits_per_cell", 1))
        keep = float(model.retention(network_noise_feature(space, ab, torch.tensor([bpc]), model.variation))[0])
        if base is not None:
            clean = float(base.predict(ab).reshape(-1)[0])
        else:
            recorded = float(best["metrics"]["accuracy"])
            clean = recorded / keep if str(d) in aware else recorded
        pw, dw = _active_weight_bits(space, arch, pol)
        m = best["metrics"]
        pop_bpc, pop_pw, pop_dw = [], [], []
        with (Path(d) / "population.csv").open() as fh:
            for r in csv.DictReader(fh):
                if r["feasible"] != "True":
                    continue
                a, q = _row_design(r)
                x, y = _active_weight_bits(space, a, q)
                pop_pw.append(x)
                pop_dw.append(y)
                pop_bpc.append(float(r.get("hw_bits_per_cell", 1)))
        mean = lambda v: sum(v) / len(v) if v else math.nan  # noqa: E731
        edap = m["energy_j"] * m["latency_s"] * m["area_mm2"]
        rows.append({
            "run": str(d), "bits_per_cell": bpc, "mean_pw_w_bits": pw, "mean_dw_w_bits": dw,
            "edap_j_s_mm2": edap, "accuracy_noise_free": clean, "accuracy_under_variation": clean * keep,
            "objective_noise_free": edap / clean, "objective_under_variation": edap / (clean * keep),
            "population_mean_bits_per_cell": mean(pop_bpc), "population_mean_pw_w_bits": mean(pop_pw),
            "population_mean_dw_w_bits": mean(pop_dw), "population_feasible": len(pop_bpc),
        })
    return rows


def _row_design(row: dict[str, str]) -> tuple[Any, Any]:
    """(Architecture, QuantPolicy) of one row of a search's ``population.csv`` / ``pareto.csv``."""
    from cimnas.space import BIT_FIELDS, Architecture, QuantPolicy

    ints = lambda key: [int(v) for v in row[key].split()]  # noqa: E731
    arch = Architecture(depths=ints("depths"), kernels=ints("kernels"), hidden=ints("hidden"),
                        resolution=int(row["resolution"]))
    return arch, QuantPolicy.from_dict({k: ints(k) for k in BIT_FIELDS})


def _read_designs(path: Path, space: Any) -> list[tuple[Any, Any, int, float, float]]:
    """(Architecture, QuantPolicy, bits per cell, EDAP, recorded accuracy) of the feasible rows of a
    results CSV."""
    import csv

    out = []
    with path.open() as fh:
        for r in csv.DictReader(fh):
            if r["feasible"] != "True":
                continue
            a, q = _row_design(r)
            out.append((a, q, int(float(r.get("hw_bits_per_cell", 1))), float(r["edap_j_s_mm2"]), float(r["accuracy"])))
    return out


def compare_fronts(result_dirs: Sequence[str], model_path: str, predictor: str | None = None,
                   thresholds: Sequence[float] = (0.5, 0.55, 0.6), aware: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every design of each run's Pareto archive (``pareto.csv``) scored with and without
    variation: bits per cell and weight bits along the front, and the lowest EDAP reaching each
    accuracy-under-variation threshold."""
    from cimnas.space import ArchBatch, get_space
    from cimnas.search.evaluator import load_predictor

    model = RetentionModel.load(model_path)
    base = load_predictor(predictor) if predictor else None
    space = get_space("apq_mbv2_tiny")
    rows = []
    for d in result_dirs:
        designs = _read_designs(Path(d) / "pareto.csv", space)
        if not designs:
            raise ValueError(f"{d}/pareto.csv has no feasible designs")
        ab = ArchBatch.from_designs(space, [x[0] for x in designs], [x[1] for x in designs])
        bpc = torch.tensor([x[2] for x in designs])
        keep = model.retention(network_noise_feature(space, ab, bpc, model.variation))
        if base is not None:
            clean = base.predict(ab).double().reshape(-1)
        else:
            recorded = torch.tensor([x[4] for x in designs], dtype=torch.float64)
            clean = recorded / keep if str(d) in aware else recorded
        noisy = clean * keep
        edap = torch.tensor([x[3] for x in designs], dtype=torch.float64)
        bits = [_active_weight_bits(space, x[0], x[1]) for x in designs]
        row: dict[str, Any] = {"run": str(d), "front_size": len(designs),
                               "bits_per_cell_counts": {int(c): int((bpc == c).sum()) for c in bpc.unique()},
                               "max_accuracy_noise_free": float(clean.max()), "max_accuracy_under_variation": float(noisy.max()),
                               "bits_per_cell_at_max_accuracy_under_variation": int(bpc[int(noisy.argmax())]),
                               "mean_pw_w_bits": sum(b[0] for b in bits) / len(bits),
                               "mean_dw_w_bits": sum(b[1] for b in bits) / len(bits)}
        for t in thresholds:
            ok = noisy >= t
            if ok.any():
                i = int(torch.where(ok, edap, torch.full_like(edap, math.inf)).argmin())
                row[f"min_edap_at_acc_var>={t:g}"] = float(edap[i])
                row[f"bits_per_cell_at_acc_var>={t:g}"] = int(bpc[i])
                row[f"pw_dw_w_bits_at_acc_var>={t:g}"] = [round(bits[i][0], 2), round(bits[i][1], 2)]
            else:
                row[f"min_edap_at_acc_var>={t:g}"] = None
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cimnas.models.variation", description="device-variation measurements")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="Monte-Carlo noisy accuracy of random subnets (JSONL)")
    m.add_argument("--supernet", default="cimnas/artifacts/fmnist/supernet.pt")
    m.add_argument("--output", required=True)
    m.add_argument("--num-designs", type=int, default=12)
    m.add_argument("--bits-per-cell", type=int, nargs="+", default=[1, 2, 4, 8])
    m.add_argument("--scales", type=float, nargs="+", default=[1.0])
    m.add_argument("--samples", type=int, default=2)
    m.add_argument("--eval-images", type=int, default=1000)
    m.add_argument("--sigma-rel", type=float, default=VariationConfig.sigma_rel)
    m.add_argument("--sigma-abs", type=float, default=VariationConfig.sigma_abs)
    f = sub.add_parser("fit", help="fit the retention model a noise-aware search reads")
    f.add_argument("--records", required=True)
    f.add_argument("--output", required=True)
    f.add_argument("--scale", type=float, default=1.0, help="σ scale the search applies (x the measured config)")
    f.add_argument("--chance", type=float, default=0.1, help="accuracy of a random guess (10 classes: 0.1)")
    c = sub.add_parser("compare", help="bits per cell / weight bits of noise-free vs noise-aware search results")
    c.add_argument("runs", nargs="+", help="search results folders (best.json, population.csv)")
    c.add_argument("--model", default="cimnas/artifacts/fmnist/variation_model.json")
    c.add_argument("--predictor", default=None, help="re-score with this predictor (default: the runs' own accuracy)")
    c.add_argument("--aware", nargs="*", default=[], help="runs whose recorded accuracy is under variation")
    fr = sub.add_parser("fronts", help="Pareto archives of noise-free vs noise-aware runs, scored under variation")
    fr.add_argument("runs", nargs="+", help="search results folders (pareto.csv)")
    fr.add_argument("--model", default="cimnas/artifacts/fmnist/variation_model.json")
    fr.add_argument("--predictor", default=None, help="re-score with this predictor (default: the runs' own accuracy)")
    fr.add_argument("--aware", nargs="*", default=[], help="runs whose recorded accuracy is under variation")
    fr.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.55, 0.6])
    a = p.parse_args(argv)
    if a.cmd in ("compare", "fronts"):
        rows = (compare_runs(a.runs, a.model, a.predictor, a.aware) if a.cmd == "compare"
                else compare_fronts(a.runs, a.model, a.predictor, a.thresholds, a.aware))
        for r in rows:
            print(json.dumps(r))
        return 0
    if a.cmd == "measure":
        measure(a.supernet, a.output, a.num_designs, a.bits_per_cell, a.scales, a.samples, a.eval_images,
                config=VariationConfig(sigma_rel=a.sigma_rel, sigma_abs=a.sigma_abs))
    else:
        fit(a.records, a.output, a.scale, a.chance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "VariationConfig", "slice_sigma_levels", "perturb_levels", "relative_weight_noise", "noisy_weights", "accuracy",
    "noisy_accuracy", "network_noise_feature", "RetentionModel", "fit_retention", "NoiseAwareAccuracy", "measure", "fit",
    "subnet", "load_fmnist_batches", "compare_runs", "compare_fronts",
]
