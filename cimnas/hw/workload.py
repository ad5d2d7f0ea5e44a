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

Two builders: :func:`workload_from_module` (forward hooks on a real network, histograms from
calibration images) and :func:`workload_from_arch` (batched, from the search space's
architecture encoding, no network needed).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cimnas.hw.histogram import integer_histogram, normalize, reference_lossy_histogram
from cimnas.space import ArchBatch, SearchSpace, make_divisible

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


# ---------------------------------------------------------------------- from a module


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


# ---------------------------------------------------------------------- from an architecture


@dataclass
class _SlotTable:
    """Per-space static description of the layer slots (cached on the space)."""

    kind: torch.Tensor
    C: torch.Tensor
    M: torch.Tensor
    R: torch.Tensor
    G: torch.Tensor
    stride: torch.Tensor
    P_by_res: torch.Tensor  # [n_res, L]
    resolutions: torch.Tensor  # [n_res]
    block: torch.Tensor  # elastic block of each slot, -1 for fixed slots
    role: torch.Tensor  # 0 fixed, 1 expand, 2 se_reduce, 3 se_expand, 4 dw, 5 project
    se_lut: torch.Tensor  # hidden -> SE channels
    names: list[str]
    typical_input_hist: torch.Tensor  # [1, L, 31] per-slot typical histograms
    typical_weight_hist: torch.Tensor


_SLOT_CACHE: dict[Any, _SlotTable] = {}
ROLE_FIXED, ROLE_EXPAND, ROLE_SE_REDUCE, ROLE_SE_EXPAND, ROLE_DW, ROLE_PROJECT, ROLE_MID, ROLE_SHORTCUT = range(8)


def slot_table(space: SearchSpace) -> _SlotTable:
    """Layer slots of a space in execution order: MobileNet (stem, first block, MBConv blocks,
    head) or ResNet-D (three stem convs, bottlenecks conv1/conv2/conv3[/downsample], classifier)."""
    if space in _SLOT_CACHE:
        return _SLOT_CACHE[space]
    k = {name: i for i, name in enumerate(LAYER_KINDS)}
    rows: list[tuple] = []  # (kind, C, M, R, G, stride, block, role, name, res_fn)
    stem = space.stem_channels
    stem_res = lambda r: space.stem_resolution(r)  # noqa: E731
    if getattr(space, "stem_type", "conv") == "resnet_d":
        half = max(1, stem // 2)
        rows.append((k["conv"], space.in_channels, half, 3, 1, space.stem_stride, -1, ROLE_FIXED, "stem", stem_res))
        rows.append((k["conv"], half, half, 3, 1, 1, -1, ROLE_FIXED, "stem.conv2", stem_res))
        rows.append((k["conv"], half, stem, 3, 1, 1, -1, ROLE_FIXED, "stem.conv3", stem_res))
    else:
        rows.append((k["conv"], space.in_channels, stem, 3, 1, space.stem_stride, -1, ROLE_FIXED, "stem", stem_res))
        rows.append((k["depthwise"], 1, 1, space.first_block_kernel, stem, 1, -1, ROLE_FIXED, "first.dw", stem_res))
        rows.append((k["pointwise"], stem, space.first_block_channels, 1, 1, 1, -1, ROLE_FIXED, "first.project",
                     stem_res))
    cin, cout, strides = space.block_in_channels, space.block_out_channels, space.block_stride
    bottleneck = getattr(space, "block_type", "mbconv") == "bottleneck"
    for b in range(space.num_blocks):
        st = space.stages[space.block_stage[b]]
        res_in = (lambda r, b=b: space.block_input_resolution(r)[b])
        res_out = (lambda r, b=b: math.ceil(space.block_input_resolution(r)[b] / strides[b]))
        if bottleneck:  # conv1 1x1 -> conv2 kxk (stride) -> conv3 1x1 [-> downsample 1x1 on the shortcut]
            kind2 = k["pointwise"] if space.kernel_choices[0] == 1 else k["conv"]
            rows.append((k["pointwise"], cin[b], 0, 1, 1, 1, b, ROLE_EXPAND, f"blocks.{b}.conv1", res_in))
            rows.append((kind2, 0, 0, 0, 1, strides[b], b, ROLE_MID, f"blocks.{b}.conv2", res_out))
            rows.append((k["pointwise"], 0, cout[b], 1, 1, 1, b, ROLE_PROJECT, f"blocks.{b}.conv3", res_out))
            if strides[b] != 1 or cin[b] != cout[b]:
                rows.append((k["pointwise"], cin[b], cout[b], 1, 1, 1, b, ROLE_SHORTCUT, f"blocks.{b}.downsample", res_out))
            continue
        rows.append((k["pointwise"], cin[b], 0, 1, 1, 1, b, ROLE_EXPAND, f"blocks.{b}.expand", res_in))
        rows.append((k["depthwise"], 1, 1, 0, 0, strides[b], b, ROLE_DW, f"blocks.{b}.dw", res_out))
        if st.se:  # MobileNetV3 order: expand -> depthwise -> SE -> project (as the supernet runs it)
            rows.append((k["pointwise"], 0, 0, 1, 1, 1, b, ROLE_SE_REDUCE, f"blocks.{b}.se_reduce", lambda r: 1))
            rows.append((k["pointwise"], 0, 0, 1, 1, 1, b, ROLE_SE_EXPAND, f"blocks.{b}.se_expand", lambda r: 1))
        rows.append((k["pointwise"], 0, cout[b], 1, 1, 1, b, ROLE_PROJECT, f"blocks.{b}.project", res_out))
    last = space.last_channels
    final = lambda r: space.final_resolution(r)  # noqa: E731
    if space.final_expand_channels is not None:
        rows.append((k["pointwise"], last, space.final_expand_channels, 1, 1, 1, -1, ROLE_FIXED, "final_expand", final))
        last = space.final_expand_channels
    if space.head_channels:
        rows.append((k["pointwise"], last, space.head_channels, 1, 1, 1, -1, ROLE_FIXED, "feature_mix",
                     final if space.head_before_pool else (lambda r: 1)))
        last = space.head_channels
    rows.append((k["linear"], last, space.num_classes, 1, 1, 1, -1, ROLE_FIXED, "classifier", lambda r: 1))
    res = list(space.resolution_choices)
    t = lambda i: torch.tensor([r[i] for r in rows], dtype=torch.long)  # noqa: E731
    max_hidden = max(space.max_hidden(b) for b in range(space.num_blocks))
    se_lut = torch.tensor([make_divisible(h // 4, space.divisor) if h > 0 else 0 for h in range(max_hidden + 1)])
    names = [r[8] for r in rows]

    def typical_role(name: str) -> str:
        if name == "stem":
            return "stem"
        if bottleneck or name.startswith("stem."):  # ResNet layers all read post-ReLU activations
            return "project"
        if name.endswith(".dw"):
            return "depthwise"
        if name.endswith("project") or name == "classifier":
            return "project"
        return "expand"

    roles = [typical_role(n) for n in names]
    table = _SlotTable(
        typical_input_hist=torch.tensor([TYPICAL_HISTOGRAMS[r][0] for r in roles]).unsqueeze(0),
        typical_weight_hist=torch.tensor([TYPICAL_HISTOGRAMS[r][1] for r in roles]).unsqueeze(0),
        kind=t(0), C=t(1), M=t(2), R=t(3), G=t(4), stride=t(5),
        P_by_res=torch.tensor([[r[9](x) for r in rows] for x in res], dtype=torch.long),
        resolutions=torch.tensor(res, dtype=torch.long), block=t(6), role=t(7), se_lut=se_lut,
        names=names,
    )
    _SLOT_CACHE[space] = table
    return table


def workload_from_arch(space: SearchSpace, arch: ArchBatch, *,
                       value_stats: dict[str, torch.Tensor] | str | None = "typical") -> Workload:
    """Shapes and bit widths of B architectures as one ``[B, L]`` workload (no Python loop over
    candidates). ``value_stats``: ``"typical"`` (default: per-slot role histograms of CIMNAS's
    shipped MobileNetV2 workload, :data:`TYPICAL_HISTOGRAMS`), ``None`` (the cost model's generic
    default), or a dict with per-slot ``input_hist`` / ``weight_hist`` ``[L, 31]`` (or ``[B, L,
    31]``) and/or ``average_input_value`` / ``average_weight_value`` ``[L]``."""
    table = slot_table(space)
    dev = arch.device
    B, L = arch.batch_size, len(table.names)
    block = table.block.to(dev)
    role = table.role.to(dev)
    blk = block.clamp(min=0).unsqueeze(0).expand(B, L)
    hidden = arch.hidden.gather(1, blk)  # [B, L]
    kernel = arch.kernels.gather(1, blk)
    se = table.se_lut.to(dev)[hidden.clamp(max=len(table.se_lut) - 1)]
    zero = torch.zeros_like(hidden)

    def pick(static: torch.Tensor, **by_role: torch.Tensor) -> torch.Tensor:
        out = static.to(dev).unsqueeze(0).expand(B, L)
        for name, value in by_role.items():
            r = {"expand": ROLE_EXPAND, "se_reduce": ROLE_SE_REDUCE, "se_expand": ROLE_SE_EXPAND,
                 "dw": ROLE_DW, "project": ROLE_PROJECT, "mid": ROLE_MID}[name]
            out = torch.where(role == r, value, out)
        return out

    C = pick(table.C, se_reduce=hidden, se_expand=se, project=hidden, mid=hidden)
    M = pick(table.M, expand=hidden, se_reduce=se, se_expand=hidden, mid=hidden)
    R = pick(table.R, dw=kernel, mid=kernel)
    G = pick(table.G, dw=hidden)
    res_index = torch.searchsorted(table.resolutions.to(dev), arch.resolution.contiguous())
    P = table.P_by_res.to(dev)[res_index.clamp(max=len(table.resolutions) - 1)]
    active = arch.active_blocks(space)
    mask = torch.where(block.unsqueeze(0) < 0, torch.ones_like(P, dtype=torch.bool), active.gather(1, blk))
    bits = arch.bits  # [B, NB, 4] pw_w, pw_a, dw_w, dw_a
    is_dw = ((role == ROLE_DW) | (role == ROLE_MID)).unsqueeze(0)  # the block's spatial conv uses dw_* bits
    w_bits = torch.where(is_dw, bits[:, :, 2].gather(1, blk), bits[:, :, 0].gather(1, blk))
    a_bits = torch.where(is_dw, bits[:, :, 3].gather(1, blk), bits[:, :, 1].gather(1, blk))
    fixed = (block < 0).unsqueeze(0)
    fb = torch.full_like(w_bits, space.fixed_bits)
    w_bits = torch.where(fixed, fb, w_bits)
    a_bits = torch.where(fixed, fb, a_bits)
    ones = torch.ones_like(P)
    out = dict(
        kind=table.kind.to(dev).unsqueeze(0).expand(B, L), N=ones, C=C, M=M, R=R, S=R, P=P, Q=P, G=G,
        stride=table.stride.to(dev).unsqueeze(0).expand(B, L), input_bits=a_bits, weight_bits=w_bits,
        output_bits=torch.full_like(P, 8), mask=mask, names=list(table.names),
    )
    if isinstance(value_stats, str):
        if value_stats != "typical":
            raise WorkloadError(f"value_stats={value_stats!r} is not allowed; allowed values: 'typical', None or a dict")
        value_stats = {"input_hist": table.typical_input_hist, "weight_hist": table.typical_weight_hist}
    if value_stats:
        for key in ("input_hist", "weight_hist"):
            if key in value_stats and value_stats[key] is not None:
                h = value_stats[key].to(dev).float()
                out[key] = (h if h.dim() == 3 else h.unsqueeze(0))
        for key in ("average_input_value", "average_weight_value"):
            if key in value_stats and value_stats[key] is not None:
                out[key] = value_stats[key].to(dev).float().expand(B, L)
    del zero
    return Workload(**out)


__all__ = [
    "LAYER_KINDS", "SHAPE_FIELDS", "BIT_FIELDS", "NBINS", "DEFAULT_INPUT_HIST", "DEFAULT_WEIGHT_HIST",
    "TYPICAL_HISTOGRAMS",
    "WorkloadError", "Workload", "workload_from_module", "workload_from_arch", "slot_table",
]
