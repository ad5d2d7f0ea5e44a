"""Cost-model workloads: per-layer shapes, bit widths and value statistics as ``[B, L]`` tensors.

Shapes follow CiMLoop / Timeloop's convention (cim-cost-model.md §5): for a layer with G groups,
``C`` and ``M`` are the input and output channels *per group* (a depthwise layer has
``C = M = 1`` and ``G = channels``), ``R x S`` the kernel, ``P x Q`` the output size, ``N`` the
batch (1 = one inference). Padded layers have ``mask == False``.

Value statistics: optional 31-bin input / weight histograms ``[Bh, L, 31]`` (``Bh`` is 1 or B;
the cost model's histogram encoder turns them into x̄, w̄ for each bit width and bits per cell)
and optional explicit slice averages ``average_input_value`` / ``average_weight_value`` ``[B, L]``
(NaN = not given) that override the histograms. Without either, :data:`DEFAULT_INPUT_HIST` /
:data:`DEFAULT_WEIGHT_HIST` are used.

This module is the cost model's input format only; it knows no network. Workloads are built
by :func:`cimnas.models.workload_trace.workload_from_module` (forward hooks on a real network,
histograms from calibration images) and :func:`cimnas.search.lowering.workload_from_arch`
(batched, from the search space's layer plan, no network needed).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from cimnas.hw.histogram import normalize

LAYER_KINDS: tuple[str, ...] = ("conv", "depthwise", "pointwise", "linear")
SHAPE_FIELDS: tuple[str, ...] = ("N", "C", "M", "R", "S", "P", "Q", "G", "stride")
BIT_FIELDS: tuple[str, ...] = ("input_bits", "weight_bits", "output_bits")
NBINS = 31

#: Typical histograms used when a layer's are unknown: CiMLoop's ResNet-18 layer 05 (a post-ReLU
#: input distribution and a bell-shaped weight distribution), mit-emze/cimloop
#: ``workspace/models/workloads/resnet18/05.yaml`` [src]. x̄ ≈ 0.597, w̄ ≈ 0.479 (8 bit, offset).
DEFAULT_INPUT_HIST = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.304, 0.082, 0.0878, 0.0894, 0.0892,
                      0.0809, 0.0679, 0.0536, 0.0429, 0.0322, 0.0235, 0.017, 0.0121, 0.00793, 0.00539,
                      0.00426)
DEFAULT_WEIGHT_HIST = (0.00282, 0.00321, 0.00413, 0.00535, 0.00706, 0.00953, 0.0122, 0.0166, 0.0213,
                       0.0294, 0.0404, 0.054, 0.0714, 0.0876, 0.1, 0.105, 0.0968, 0.0817, 0.0672,
                       0.0476, 0.0361, 0.0276, 0.0188, 0.0148, 0.0107, 0.00845, 0.00635, 0.00434,
                       0.00401, 0.00299, 0.00238)



def _spread(values: tuple[float, ...]) -> tuple[float, ...]:
    """8 values on CIMNAS's 31-bin grid (bins 0, 4, 8, 13, 17, 22, 26, 30; cim-cost-model.md §1.5)."""
    out = [0.0] * NBINS
    for b, v in zip((0, 4, 8, 13, 17, 22, 26, 30), values):
        out[b] = v
    total = sum(out)
    return tuple(v / total for v in out)


#: Typical per-role histograms of CIMNAS's shipped MobileNetV2 workload (OlgaKrestinskaya/CIMNAS
#: ``workspace/main/workloads/mobilenet_v2/{00,03,04,05,31,32,33}.yaml``, one ImageNet image,
#: the reference's 8-level histograms) [src]: the mean of the files of each role.
TYPICAL_HISTOGRAMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # stem conv (00): normalised image input
    "stem": (_spread((0.00256, 0.03721, 0.25609, 0.42556, 0.22273, 0.04494, 0.01061, 0.00030)),
             _spread((0.00231, 0.00463, 0.03935, 0.21759, 0.63773, 0.08218, 0.01389, 0.00231))),
    # expand / feature-mix pointwise (03, 33): block outputs, centred
    "expand": (_spread((0.00056, 0.00475, 0.06750, 0.55252, 0.32336, 0.04703, 0.00377, 0.00049)),
               _spread((0.00085, 0.00839, 0.10409, 0.71820, 0.15742, 0.00969, 0.00094, 0.00043))),
    # depthwise (04, 31): post-ReLU6 activations, mostly at the lowest level
    "depthwise": (_spread((0.67814, 0.25156, 0.05251, 0.01124, 0.00330, 0.00147, 0.00057, 0.00120)),
                  _spread((0.00385, 0.02051, 0.05495, 0.41861, 0.45773, 0.03688, 0.00614, 0.00120))),
    # project pointwise (05, 32): post-ReLU6 activations
    "project": (_spread((0.67913, 0.19592, 0.07029, 0.04255, 0.00951, 0.00109, 0.00058, 0.00094)),
                _spread((0.00080, 0.00509, 0.07830, 0.70326, 0.20767, 0.00400, 0.00059, 0.00030))),
}


class WorkloadError(ValueError):
    """A malformed workload description."""


_INT_FIELDS = ("kind",) + SHAPE_FIELDS + BIT_FIELDS


@dataclass
class Workload:
    """B networks of (up to) L layers; every tensor field is ``[B, L]`` except the histograms."""

    kind: torch.Tensor
    N: torch.Tensor
    C: torch.Tensor
    M: torch.Tensor
    R: torch.Tensor
    S: torch.Tensor
    P: torch.Tensor
    Q: torch.Tensor
    G: torch.Tensor
    stride: torch.Tensor
    input_bits: torch.Tensor
    weight_bits: torch.Tensor
    output_bits: torch.Tensor
    mask: torch.Tensor
    input_hist: torch.Tensor | None = None  # [Bh, L, 31], Bh in {1, B}
    weight_hist: torch.Tensor | None = None
    average_input_value: torch.Tensor | None = None  # [B, L], NaN = not given
    average_weight_value: torch.Tensor | None = None
    names: list[str] | None = None  # optional layer names (B = 1 workloads)

    def __post_init__(self) -> None:
        shape = self.kind.shape
        if len(shape) != 2:
            raise WorkloadError(f"workload tensors must be [B, L], got kind of shape {list(shape)}")
        for f in _INT_FIELDS + ("mask",):
            t = getattr(self, f)
            if t.shape != shape:
                raise WorkloadError(f"field {f} has shape {list(t.shape)}, expected {list(shape)}")
        for f in ("input_hist", "weight_hist"):
            h = getattr(self, f)
            if h is not None and (h.dim() != 3 or h.shape[1] != shape[1] or h.shape[0] not in (1, shape[0])):
                raise WorkloadError(f"{f} must be [1 or B, L, nbins], got {list(h.shape)}")
        for f in ("average_input_value", "average_weight_value"):
            a = getattr(self, f)
            if a is not None and a.shape != shape:
                raise WorkloadError(f"{f} must be [B, L], got {list(a.shape)}")

    # ------------------------------------------------------------------ basics
    @property
    def batch_size(self) -> int:
        return int(self.kind.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.kind.shape[1])

    @property
    def device(self) -> torch.device:
        return self.kind.device

    def _map(self, fn, hist_fn=None) -> "Workload":
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = (hist_fn or fn)(v) if f.name.endswith("_hist") else fn(v)
            else:
                out[f.name] = v
        return Workload(**out)

    def to(self, device: torch.device | str) -> "Workload":
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index: Any) -> "Workload":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)

        def hist(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[0] == 1 and self.batch_size != 1 else t[index]

        return self._map(lambda t: t[index], hist)

    def expand(self, batch_size: int) -> "Workload":
        """Broadcast a B = 1 workload over ``batch_size`` rows (views, no copies)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise WorkloadError(f"only a B = 1 workload can be expanded, this one has B = {self.batch_size}")
        return self._map(lambda t: t.expand(batch_size, *t.shape[1:]), lambda h: h)

    def macs(self) -> torch.Tensor:
        """MACs per layer ``[B, L]`` (0 for padded layers)."""
        m = self.N * self.G * self.M * self.C * self.R * self.S * self.P * self.Q
        return torch.where(self.mask, m, torch.zeros_like(m))

    def layer_dicts(self, row: int = 0) -> list[dict[str, Any]]:
        """The active layers of one row as plain dicts (compacted by mask)."""
        out = []
        for l in range(self.num_layers):
            if not bool(self.mask[row, l]):
                continue
            d = {"kind": LAYER_KINDS[int(self.kind[row, l])]}
            for f in SHAPE_FIELDS + BIT_FIELDS:
                d[f] = int(getattr(self, f)[row, l])
            out.append(d)
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": [[LAYER_KINDS[k] for k in row] for row in self.kind.tolist()]}
        for f in SHAPE_FIELDS + BIT_FIELDS + ("mask",):
            d[f] = getattr(self, f).tolist()
        for f in ("input_hist", "weight_hist", "average_input_value", "average_weight_value"):
            v = getattr(self, f)
            if v is not None:
                d[f] = [[[None if math.isnan(x) else x for x in r] if isinstance(r, list) else (None if math.isnan(r) else r)
                         for r in row] for row in v.tolist()]
        if self.names is not None:
            d["names"] = list(self.names)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Workload":
        if "layers" in data and "kind" not in data:
            return cls.from_layers(data["layers"])
        missing = [f for f in ("kind",) + SHAPE_FIELDS + BIT_FIELDS if f not in data]
        if missing:
            raise WorkloadError(f"workload is missing keys {missing}")
        kinds = data["kind"]
        for row in kinds:
            for k in row:
                if k not in LAYER_KINDS:
                    raise WorkloadError(f"kind={k!r} is not allowed; allowed values: {list(LAYER_KINDS)}")
        out: dict[str, Any] = {"kind": torch.tensor([[LAYER_KINDS.index(k) for k in row] for row in kinds])}
        for f in SHAPE_FIELDS + BIT_FIELDS:
            out[f] = torch.tensor(data[f], dtype=torch.long)
        out["mask"] = torch.tensor(data["mask"], dtype=torch.bool) if "mask" in data else torch.ones_like(out["kind"], dtype=torch.bool)
        for f in ("input_hist", "weight_hist", "average_input_value", "average_weight_value"):
            if data.get(f) is not None:
                nan = float("nan")
                out[f] = torch.tensor(_none_to_nan(data[f], nan), dtype=torch.float32)
        out["names"] = data.get("names")
        return cls(**out)

    @classmethod
    def from_layers(cls, layers: list[dict[str, Any]], *, default_bits: int = 8) -> "Workload":
        """A B = 1 workload from a list of layer dicts (``kind, C, M, R, S, P, Q``; optional
        ``N, G, stride``, bits, ``input_hist``, ``weight_hist``, ``average_*_value``)."""
        if not layers:
            raise WorkloadError("a workload needs at least one layer")
        cols: dict[str, list] = {f: [] for f in _INT_FIELDS}
        ih, wh, ai, aw, names = [], [], [], [], []
        for i, layer in enumerate(layers):
            kind = layer.get("kind")
            if kind not in LAYER_KINDS:
                raise WorkloadError(f"layers[{i}].kind={kind!r} is not allowed; allowed values: {list(LAYER_KINDS)}")
            cols["kind"].append(LAYER_KINDS.index(kind))
            for f in SHAPE_FIELDS:
                default = 1 if f in ("N", "G", "stride", "R", "S", "P", "Q") else None
                v = layer.get(f, default)
                if v is None or int(v) != v or v < 1:
                    raise WorkloadError(f"layers[{i}].{f}={v!r} must be a positive integer")
                cols[f].append(int(v))
            for f in BIT_FIELDS:
                v = layer.get(f, default_bits)
                if not 1 <= v <= 8:
                    raise WorkloadError(f"layers[{i}].{f}={v!r} is not allowed; allowed values: 1..8")
                cols[f].append(int(v))
            ih.append(layer.get("input_hist"))
            wh.append(layer.get("weight_hist"))
            ai.append(layer.get("average_input_value", float("nan")))
            aw.append(layer.get("average_weight_value", float("nan")))
            names.append(str(layer.get("name", f"layer{i}")))
        out: dict[str, Any] = {f: torch.tensor([v], dtype=torch.long) for f, v in cols.items()}
        out["mask"] = torch.ones_like(out["kind"], dtype=torch.bool)
        for key, vals, default in (("input_hist", ih, DEFAULT_INPUT_HIST), ("weight_hist", wh, DEFAULT_WEIGHT_HIST)):
            if any(v is not None for v in vals):
                out[key] = torch.stack([normalize(torch.tensor(v if v is not None else default, dtype=torch.float32)) for v in vals]).unsqueeze(0)
        for key, vals in (("average_input_value", ai), ("average_weight_value", aw)):
            if any(not math.isnan(float(v)) for v in vals):
                out[key] = torch.tensor([[float(v) for v in vals]], dtype=torch.float32)
        out["names"] = names
        return cls(**out)


def _none_to_nan(x: Any, nan: float) -> Any:
    if isinstance(x, list):
        return [_none_to_nan(v, nan) for v in x]
    return nan if x is None else x


__all__ = [
    "LAYER_KINDS", "SHAPE_FIELDS", "BIT_FIELDS", "NBINS", "DEFAULT_INPUT_HIST", "DEFAULT_WEIGHT_HIST",
    "TYPICAL_HISTOGRAMS", "WorkloadError", "Workload",
]
