"""The one layer plan of a search space: every layer slot a subnet of the space can execute.

A slot is a convolution or linear layer in execution order: MobileNet (stem, fixed first block,
MBConv expand / depthwise / [SE] / project per elastic block, final expand, feature mix,
classifier) or ResNet-D (three stem convs, bottleneck conv1 / conv2 / conv3 [/ downsample],
classifier). Channels that depend on the architecture are 0 in the plan and filled from the
architecture by the block's ``role``; slots of a block a shallower depth skips are masked by the
lowering. The cost-model lowering (:mod:`cimnas.search.lowering`) reads this plan; tests hold the
supernet's traced layers against it slot for slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cimnas.space.spec import SearchSpace, make_divisible

#: Layer kinds of the plan (the cost model's ``LAYER_KINDS`` use the same names).
KINDS: tuple[str, ...] = ("conv", "depthwise", "pointwise", "linear")

ROLE_FIXED, ROLE_EXPAND, ROLE_SE_REDUCE, ROLE_SE_EXPAND, ROLE_DW, ROLE_PROJECT, ROLE_MID, ROLE_SHORTCUT = range(8)
#: The architecture-dependent roles by name (the lowering fills their channels / kernels).
ROLES: dict[str, int] = {"expand": ROLE_EXPAND, "se_reduce": ROLE_SE_REDUCE, "se_expand": ROLE_SE_EXPAND,
                         "dw": ROLE_DW, "project": ROLE_PROJECT, "mid": ROLE_MID}
#: The statistics class of each slot's values (stem image input, expand / feature-mix inputs,
#: depthwise inputs, project / post-ReLU inputs); names of :data:`cimnas.hw.workload.TYPICAL_HISTOGRAMS`.
VALUE_ROLES: tuple[str, ...] = ("stem", "expand", "depthwise", "project")


@dataclass(frozen=True)
class BlockPlan:
    """One elastic block of the space: what the supernet builds and the lowering prices."""

    index: int
    stage: int
    index_in_stage: int
    in_channels: int
    out_channels: int
    stride: int
    max_hidden: int
    act: str
    se: bool
    kind: str  # "mbconv" | "bottleneck"
    has_shortcut_conv: bool  # a bottleneck whose shortcut needs a 1x1 projection


def block_plans(space: SearchSpace) -> list[BlockPlan]:
    """The elastic blocks of ``space`` in execution order (the supernet's ``blocks``)."""
    cin, cout, strides = space.block_in_channels, space.block_out_channels, space.block_stride
    kind = getattr(space, "block_type", "mbconv")
    out = []
    for b in range(space.num_blocks):
        st = space.stages[space.block_stage[b]]
        out.append(BlockPlan(index=b, stage=space.block_stage[b], index_in_stage=space.block_index_in_stage[b],
                             in_channels=cin[b], out_channels=cout[b], stride=strides[b], max_hidden=space.max_hidden(b),
                             act=st.act, se=bool(st.se), kind=kind,
                             has_shortcut_conv=kind == "bottleneck" and (strides[b] != 1 or cin[b] != cout[b])))
    return out


@dataclass
class LayerPlan:
    """Per-space static description of the layer slots (cached per space), ``[L]`` tensors."""

    kind: torch.Tensor  # index into KINDS
    C: torch.Tensor
    M: torch.Tensor
    R: torch.Tensor
    G: torch.Tensor
    stride: torch.Tensor
    P_by_res: torch.Tensor  # [n_res, L] output size at each resolution choice
    resolutions: torch.Tensor  # [n_res]
    block: torch.Tensor  # elastic block of each slot, -1 for fixed slots
    role: torch.Tensor  # ROLE_*
    se_lut: torch.Tensor  # hidden -> SE channels
    names: list[str]
    value_roles: list[str]  # one of VALUE_ROLES per slot
    blocks: list[BlockPlan]  # the elastic blocks the slots belong to

    @property
    def num_slots(self) -> int:
        return len(self.names)


_PLAN_CACHE: dict[Any, LayerPlan] = {}


def layer_plan(space: SearchSpace) -> LayerPlan:
    """The layer slots of ``space`` in execution order (cached)."""
    if space in _PLAN_CACHE:
        return _PLAN_CACHE[space]
    k = {name: i for i, name in enumerate(KINDS)}
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
    blocks = block_plans(space)
    bottleneck = getattr(space, "block_type", "mbconv") == "bottleneck"
    for blk in blocks:
        b, cin, cout, stride = blk.index, blk.in_channels, blk.out_channels, blk.stride
        res_in = (lambda r, b=b: space.block_input_resolution(r)[b])
        res_out = (lambda r, b=b, s=stride: math.ceil(space.block_input_resolution(r)[b] / s))
        if blk.kind == "bottleneck":  # conv1 1x1 -> conv2 kxk (stride) -> conv3 1x1 [-> downsample 1x1 on the shortcut]
            kind2 = k["pointwise"] if space.kernel_choices[0] == 1 else k["conv"]
            rows.append((k["pointwise"], cin, 0, 1, 1, 1, b, ROLE_EXPAND, f"blocks.{b}.conv1", res_in))
            rows.append((kind2, 0, 0, 0, 1, stride, b, ROLE_MID, f"blocks.{b}.conv2", res_out))
            rows.append((k["pointwise"], 0, cout, 1, 1, 1, b, ROLE_PROJECT, f"blocks.{b}.conv3", res_out))
            if blk.has_shortcut_conv:
                rows.append((k["pointwise"], cin, cout, 1, 1, 1, b, ROLE_SHORTCUT, f"blocks.{b}.downsample", res_out))
            continue
        rows.append((k["pointwise"], cin, 0, 1, 1, 1, b, ROLE_EXPAND, f"blocks.{b}.expand", res_in))
        rows.append((k["depthwise"], 1, 1, 0, 0, stride, b, ROLE_DW, f"blocks.{b}.dw", res_out))
        if blk.se:  # MobileNetV3 order: expand -> depthwise -> SE -> project (as the supernet runs it)
            rows.append((k["pointwise"], 0, 0, 1, 1, 1, b, ROLE_SE_REDUCE, f"blocks.{b}.se_reduce", lambda r: 1))
            rows.append((k["pointwise"], 0, 0, 1, 1, 1, b, ROLE_SE_EXPAND, f"blocks.{b}.se_expand", lambda r: 1))
        rows.append((k["pointwise"], 0, cout, 1, 1, 1, b, ROLE_PROJECT, f"blocks.{b}.project", res_out))
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

    def value_role(name: str) -> str:
        if name == "stem":
            return "stem"
        if bottleneck or name.startswith("stem."):  # ResNet layers all read post-ReLU activations
            return "project"
        if name.endswith(".dw"):
            return "depthwise"
        if name.endswith("project") or name == "classifier":
            return "project"
        return "expand"

    plan = LayerPlan(
        kind=t(0), C=t(1), M=t(2), R=t(3), G=t(4), stride=t(5),
        P_by_res=torch.tensor([[r[9](x) for r in rows] for x in res], dtype=torch.long),
        resolutions=torch.tensor(res, dtype=torch.long), block=t(6), role=t(7), se_lut=se_lut,
        names=names, value_roles=[value_role(n) for n in names], blocks=blocks,
    )
    _PLAN_CACHE[space] = plan
    return plan


__all__ = ["KINDS", "ROLES", "VALUE_ROLES", "BlockPlan", "block_plans", "LayerPlan", "layer_plan"] + [
    "ROLE_FIXED", "ROLE_EXPAND", "ROLE_SE_REDUCE", "ROLE_SE_EXPAND", "ROLE_DW", "ROLE_PROJECT", "ROLE_MID",
    "ROLE_SHORTCUT"]
