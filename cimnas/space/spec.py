"""Search spaces and architectures as data.

A :class:`SearchSpace` is a parametric description of a MobileNet-style once-for-all space
(stem, fixed first block, elastic stages, head). An :class:`Architecture` is one choice of
depths, depthwise kernels, hidden (expansion) channels and input resolution in that space, and a
:class:`QuantPolicy` its per-block bit widths. Both are plain dataclasses that round-trip through
JSON and are validated against the space with errors naming the field and the allowed values.

The batched form used by the search (one row per candidate) is :class:`ArchBatch`: tensors
``depths [B, S]``, ``kernels [B, NB]``, ``hidden [B, NB]``, ``resolution [B]`` and
``bits [B, NB, 4]`` (``pw_w, pw_a, dw_w, dw_a`` in :data:`BIT_FIELDS` order). Every other
part of the project (supernet, predictor encoding, cost-model workload, genome decode) builds on
this module, so it stays free of torch.nn and of any hardware notion.

Sources: the APQ / CIMNAS MobileNetV2 space and the OFA-MobileNetV3 space as summarised in
``docs/reference/ofa-predictor.md`` §1.1–1.5 and ``cimnas-reference-code.md`` §1.3.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence


#: Order of the four per-block bit-width fields (APQ / CIMNAS convention).
BIT_FIELDS: tuple[str, ...] = ("pw_w_bits", "pw_a_bits", "dw_w_bits", "dw_a_bits")

ACTIVATIONS = ("relu", "relu6", "hswish")
BLOCK_TYPES = ("mbconv", "bottleneck")
STEM_TYPES = ("conv", "resnet_d")
EXPAND_BASES = ("in", "out")


class SpaceError(ValueError):
    """An architecture, policy or space description that does not fit its space."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``), never
    going below 90 % of ``value`` (the MobileNet / OFA convention)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise SpaceError(f"{name}={value!r} is not allowed; allowed values: {list(allowed)}")


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: ``max_depth`` blocks of output width ``width`` (before the width
    multiplier); the first block has stride ``stride``. ``depth_choices`` overrides the space's
    depth choices for this stage (OFA-ResNet50: {2,3,4} or {4,5,6}); empty = the space's."""

    width: int
    stride: int
    max_depth: int = 4
    act: str = "relu6"
    se: bool = False
    depth_choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth_choices", tuple(self.depth_choices))
        for d in self.depth_choices:
            if not 1 <= d <= self.max_depth:
                raise SpaceError(f"stage depth_choices entry {d} must be in 1..max_depth={self.max_depth}")
        if self.width <= 0:
            raise SpaceError(f"stage width={self.width} must be positive")
        _check_choice("stage stride", self.stride, (1, 2))
        if self.max_depth < 1:
            raise SpaceError(f"stage max_depth={self.max_depth} must be >= 1")
        _check_choice("stage act", self.act, ACTIVATIONS)


@dataclass(frozen=True)
class SearchSpace:
    """A MobileNet-style once-for-all search space.

    Hidden (middle) channels of elastic block ``i`` are chosen either from ``expand_ratios``
    times the block's input width (OFA: {3, 4, 6}) or, when ``expand_ratios`` is empty, from
    ``[expand_min * C_in, expand_max * C_in]`` in steps of ``channel_step`` channels (APQ /
    CIMNAS fine-grained pruning axis: 5, 7, 11, 21, 25, 49 choices at width 1.0).
    """

    name: str
    stages: tuple[StageSpec, ...]
    stem_width: int = 32
    stem_stride: int = 2
    stem_act: str = "relu6"
    first_block_width: int = 16
    first_block_kernel: int = 3
    final_expand_width: int | None = None  # MBv3: 1x1 conv before pooling (960)
    head_width: int = 1280  # feature-mix 1x1 conv
    head_before_pool: bool = True  # MBv2 mixes before pooling, MBv3 after
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    depth_choices: tuple[int, ...] = (2, 3, 4)
    expand_ratios: tuple[float, ...] = ()
    expand_min: float = 4.0
    expand_max: float = 6.0
    channel_step: int = 8
    width_mult: float = 1.0
    in_channels: int = 3
    num_classes: int = 1000
    resolution_choices: tuple[int, ...] = (224,)
    bit_choices: tuple[int, ...] = (4, 6, 8)
    fixed_bits: int = 8  # stem, first block, head and classifier are not searched
    # ResNet family (OFA-ResNet50): bottleneck blocks (1x1 -> kxk -> 1x1, hidden = ratio x OUTPUT
    # width with expand_base="out"), ResNet-D stem (three 3x3 convs + max-pool, no first block),
    # head_width=0 (no feature-mix conv). Defaults keep the MobileNet spaces.
    block_type: str = "mbconv"
    stem_type: str = "conv"
    expand_base: str = "in"
    # Faithfulness to imported Once-for-All checkpoints (cimnas.models.ofa_import): the BN epsilon
    # of every BN layer (OFA-ProxylessNAS uses 1e-3) and, for the ResNet-D stem, an identity
    # shortcut around the middle 3x3 conv (OFA-ResNet50). Defaults keep the existing spaces.
    bn_eps: float = 1e-5
    stem_residual: bool = False

    def __post_init__(self) -> None:
        if not self.bn_eps > 0:
            raise SpaceError(f"bn_eps={self.bn_eps} must be positive")
        if self.stem_residual and self.stem_type != "resnet_d":
            raise SpaceError(f"stem_residual=True needs stem_type='resnet_d', got stem_type={self.stem_type!r}")
        _check_choice("block_type", self.block_type, BLOCK_TYPES)
        _check_choice("stem_type", self.stem_type, STEM_TYPES)
        _check_choice("expand_base", self.expand_base, EXPAND_BASES)
        if self.expand_base == "out" and not self.expand_ratios:
            raise SpaceError("expand_base='out' needs expand_ratios (hidden = ratio x output width)")
        if not self.stages:
            raise SpaceError("a search space needs at least one stage")
        for k in self.kernel_choices:
            if k % 2 != 1 or k < 1:
                raise SpaceError(f"kernel_choices entry {k} must be an odd positive integer")
        if not self.depth_choices or min(self.depth_choices) < 1:
            raise SpaceError(f"depth_choices={list(self.depth_choices)} must be positive integers")
        for b in (*self.bit_choices, self.fixed_bits):
            if not 2 <= b <= 8:
                raise SpaceError(f"bit width {b} is not allowed; allowed values: 2..8")
        if not self.expand_ratios and not 0 < self.expand_min <= self.expand_max:
            raise SpaceError(
                f"expand_min={self.expand_min}, expand_max={self.expand_max}: need 0 < min <= max"
            )
        if self.width_mult <= 0:
            raise SpaceError(f"width_mult={self.width_mult} must be positive")
        _check_choice("stem_act", self.stem_act, ACTIVATIONS)

    # ------------------------------------------------------------------ derived structure
    @property
    def divisor(self) -> int:
        """Channel rounding unit: 8 at full width, smaller for narrow CPU variants."""
        return 8 if self.width_mult >= 1.0 else max(1, min(8, self.channel_step))

    def scaled(self, width: int) -> int:
        return make_divisible(width * self.width_mult, self.divisor)

    @property
    def stem_channels(self) -> int:
        return self.scaled(self.stem_width)

    @property
    def first_block_channels(self) -> int:
        return self.scaled(self.first_block_width)

    @property
    def stage_widths(self) -> list[int]:
        return [self.scaled(s.width) for s in self.stages]

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def num_blocks(self) -> int:
        return sum(s.max_depth for s in self.stages)

    @property
    def block_stage(self) -> list[int]:
        """Stage index of each elastic block."""
        return [si for si, s in enumerate(self.stages) for _ in range(s.max_depth)]

    @property
    def block_index_in_stage(self) -> list[int]:
        return [j for s in self.stages for j in range(s.max_depth)]

    @property
    def block_in_channels(self) -> list[int]:
        """Input width of each elastic block (independent of depth: a skipped block never
        changes the width seen by the next stage)."""
        out, prev = [], self.first_block_channels
        for width, s in zip(self.stage_widths, self.stages):
            for j in range(s.max_depth):
                out.append(prev if j == 0 else width)
            prev = width
        return out

    @property
    def block_out_channels(self) -> list[int]:
        return [self.stage_widths[si] for si in self.block_stage]

    @property
    def block_stride(self) -> list[int]:
        return [s.stride if j == 0 else 1 for s in self.stages for j in range(s.max_depth)]

    @property
    def last_channels(self) -> int:
        return self.stage_widths[-1]

    @property
    def final_expand_channels(self) -> int | None:
        return None if self.final_expand_width is None else self.scaled(self.final_expand_width)

    @property
    def head_channels(self) -> int:
        """Feature-mix width; 0 = no feature-mix conv (ResNet)."""
        if self.head_width == 0:
            return 0
        return self.scaled(self.head_width) if self.width_mult > 1.0 else self.head_width

    def stage_depth_choices(self, stage: int) -> tuple[int, ...]:
        """Depth choices of ``stage``, clipped to its ``max_depth`` (a 1-block stage is fixed)."""
        spec = self.stages[stage]
        if spec.depth_choices:
            return tuple(sorted(set(spec.depth_choices)))
        m = spec.max_depth
        return tuple(sorted({min(d, m) for d in self.depth_choices}))

    def hidden_choices(self, block: int) -> tuple[int, ...]:
        """Allowed hidden (middle) channel counts of elastic block ``block``."""
        c_in = self.block_in_channels[block]
        if self.expand_ratios:
            base = self.block_out_channels[block] if self.expand_base == "out" else c_in
            return tuple(sorted({make_divisible(base * r, self.divisor) for r in self.expand_ratios}))
        lo = int(round(self.expand_min * c_in))
        hi = int(round(self.expand_max * c_in))
        step = max(1, self.channel_step)
        values = list(range(lo, hi + 1, step))
        if values[-1] != hi:
            values.append(hi)
        return tuple(values)

    def max_hidden(self, block: int) -> int:
        return max(self.hidden_choices(block))

    def stem_resolution(self, resolution: int) -> int:
        return math.ceil(resolution / self.stem_stride)

    def trunk_input_resolution(self, resolution: int) -> int:
        """Input size of the first elastic block (after the ResNet-D stem's stride-2 max-pool)."""
        h = self.stem_resolution(resolution)
        return math.ceil(h / 2) if self.stem_type == "resnet_d" else h

    def block_input_resolution(self, resolution: int) -> list[int]:
        """Spatial size (H = W) of the input of each elastic block; 'same' padding, so a
        stride-s layer maps H to ceil(H / s)."""
        h = self.trunk_input_resolution(resolution)
        out = []
        for s in self.block_stride:
            out.append(h)
            h = math.ceil(h / s)
        return out

    def final_resolution(self, resolution: int) -> int:
        h = self.trunk_input_resolution(resolution)
        for s in self.block_stride:
            h = math.ceil(h / s)
        return h

    # ------------------------------------------------------------------ choices
    def check_bits(self, name: str, bits: int) -> None:
        _check_choice(name, bits, self.bit_choices)

    def space_size(self, genome_encoding: bool = True) -> float:
        """Number of (architecture, quantization) points. With ``genome_encoding`` (the
        reference genome's count) every stage carries a full depth gene and inactive blocks
        keep their genes; otherwise a single-block stage's depth is counted once."""
        n = float(len(self.resolution_choices))
        for si in range(self.num_stages):
            n *= len(self.depth_choices) if genome_encoding else len(self.stage_depth_choices(si))
        for b in range(self.num_blocks):
            n *= len(self.kernel_choices) * len(self.hidden_choices(b))
            n *= len(self.bit_choices) ** len(BIT_FIELDS)
        return n

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpaceError(f"unknown search-space keys {unknown}; allowed keys: {sorted(known)}")
        data["stages"] = tuple(
            s if isinstance(s, StageSpec) else StageSpec(**s) for s in data.get("stages", ())
        )
        for key in ("kernel_choices", "depth_choices", "expand_ratios", "resolution_choices",
                    "bit_choices"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def replace(self, **changes: Any) -> "SearchSpace":
        return dataclasses.replace(self, **changes)
