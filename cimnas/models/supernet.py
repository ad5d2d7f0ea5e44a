"""The once-for-all MobileNet supernet built from a :class:`~cimnas.space.SearchSpace`.

One set of weights at the largest size; :meth:`OFASupernet.set_active` selects a subnet
(depth per stage, kernel and hidden width per block) and optionally its per-block bit widths;
``forward`` runs that subnet by slicing (``docs/reference/ofa-predictor.md`` §2).

Typical use (how the predictor measures accuracies)::

    net = load_supernet("cimnas/artifacts/fmnist/supernet.pt")
    net.set_active(arch, policy)           # policy None = full precision
    recalibrate_bn(net, train_batches)     # exact BN statistics of this subnet (OFA §2.4)
    top1 = evaluate_accuracy(net, val_batches)

:meth:`OFASupernet.export_subnet` turns the active choice into a static ``nn.Module``
(:class:`~cimnas.models.static.StaticSubnet`) whose eval forward equals the supernet's.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.models.dynamic_ops import (
    DynamicBatchNorm,
    DynamicConv2d,
    DynamicDepthwiseConv,
    DynamicPointwiseConv,
    DynamicSE,
    _BatchStats,
)
from cimnas.models.quant import FULL_PRECISION, QuantConv2d, QuantLinear
from cimnas.models.workload_trace import workload_from_module
from cimnas.space import Architecture, QuantPolicy, SearchSpace, SpaceError, get_space
from cimnas.space.layers import layer_plan
from cimnas.models.static import (
    ClassifierHead,
    ConvBNAct,
    StaticBottleneck,
    StaticMBConv,
    StaticSE,
    StaticSubnet,
    make_act,
    shortcut,
    signed_after,
)

SUPERNET_FORMAT = "cimnas.supernet/1"

# ---------------------------------------------------------------------- sampling constraints

HIDDEN_MODES = ("max", "upper", "all")
#: How a phase picks the subnets of one training step (see :class:`PhaseSpec`).
SAMPLERS = ("sandwich", "random")


@dataclass
class PhaseSpec:
    """One progressive-shrinking phase: which part of the space is sampled, and how it trains.

    ``kernels`` / ``depths`` restrict the space's choices (None = all); ``hidden`` is ``max``
    (largest hidden width only), ``upper`` (the upper half of each block's choices) or ``all``;
    ``quantize`` samples bit widths together with architectures. ``subnets_per_step`` subnets
    are trained per batch: ``sampler='sandwich'`` takes the phase's largest and smallest, then
    random ones; ``sampler='random'`` takes them all at random (OFA's ``dynamic_batch_size``: 1,
    2 and 4 random subnets per step in the kernel, depth and width phases, no sandwich; OFA
    §3.1, docs/reference/ofa-predictor.md). ``kd`` distils each non-largest subnet from the
    phase's largest one (with ``random``, a no-grad forward of the largest gives the targets). ``sort_channels`` re-sorts hidden channels by
    importance when the phase starts (OFA §2.3). ``lr`` is the peak learning rate, decayed by a
    cosine over the phase after ``warmup_epochs`` of linear warm-up.
    """

    name: str
    epochs: int = 1
    kernels: list[int] | None = None
    depths: list[int] | None = None
    hidden: str = "all"
    quantize: bool = False
    subnets_per_step: int = 1
    kd: bool = True
    sort_channels: bool = False
    lr: float = 0.05
    warmup_epochs: float = 0.0
    sampler: str = "sandwich"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"phase {self.name!r}: sampler={self.sampler!r} is not allowed; allowed values: {list(SAMPLERS)}")
        if self.hidden not in HIDDEN_MODES:
            raise ValueError(f"phase {self.name!r}: hidden={self.hidden!r} is not allowed; allowed values: {list(HIDDEN_MODES)}")
        if self.epochs < 0:
            raise ValueError(f"phase {self.name!r}: epochs={self.epochs} must be >= 0")
        if self.subnets_per_step < 1:
            raise ValueError(f"phase {self.name!r}: subnets_per_step={self.subnets_per_step} must be >= 1")


def default_phases() -> list[PhaseSpec]:
    """The progressive-shrinking order (full → kernel → depth → width → quantization-aware),
    one epoch each; configs scale epochs and learning rates."""
    return [
        PhaseSpec("full", kernels=[7], depths=[4], hidden="max", subnets_per_step=1, kd=False, lr=0.1),
        PhaseSpec("kernel", depths=[4], hidden="max", subnets_per_step=2, lr=0.03),
        PhaseSpec("depth", hidden="max", subnets_per_step=2, lr=0.03),
        PhaseSpec("width", hidden="all", subnets_per_step=4, sort_channels=True, lr=0.03),
        PhaseSpec("quant", hidden="all", subnets_per_step=4, quantize=True, lr=0.01),
    ]


def _phase_by_name(name: str) -> PhaseSpec:
    table = {p.name: p for p in default_phases()}
    if name not in table:
        raise ValueError(f"phase={name!r} is not allowed; allowed values: {sorted(table)}")
    return table[name]


# ---------------------------------------------------------------------- the elastic block


class DynamicMBConv(nn.Module):
    """Elastic inverted-residual block: 1×1 expand → k×k depthwise → [SE] → 1×1 project."""

    def __init__(self, in_channels: int, out_channels: int, max_hidden: int, kernel_choices: tuple[int, ...],
                 stride: int, act: str, se: bool, divisor: int, kernel_transform: bool = True,
                 per_channel: bool = True, bn_eps: float = 1e-5):
        super().__init__()
        self.in_channels, self.out_channels, self.max_hidden = in_channels, out_channels, max_hidden
        self.stride, self.act_name, self.divisor = stride, act, divisor
        self.expand = DynamicPointwiseConv(in_channels, max_hidden, True, per_channel)
        self.bn1 = DynamicBatchNorm(max_hidden, eps=bn_eps)
        self.dw = DynamicDepthwiseConv(max_hidden, kernel_choices, stride, kernel_transform,
                                       signed_after(act), per_channel)
        self.bn2 = DynamicBatchNorm(max_hidden, eps=bn_eps)
        self.se = DynamicSE(max_hidden, divisor, signed_after(act), per_channel) if se else None
        self.project = DynamicPointwiseConv(max_hidden, out_channels, signed_after(act), per_channel)
        self.bn3 = DynamicBatchNorm(out_channels, eps=bn_eps)
        self.act = make_act(act)
        self.residual = stride == 1 and in_channels == out_channels
        self.active_hidden = max_hidden
        self.active_kernel = max(kernel_choices)
        self.active_bits: tuple[int, int, int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pw_w, pw_a, dw_w, dw_a = self.active_bits or (None, None, None, None)
        h = self.act(self.bn1(self.expand(x, self.active_hidden, pw_w, pw_a)))
        h = self.act(self.bn2(self.dw(h, self.active_kernel, dw_w, dw_a)))
        if self.se is not None:
            h = self.se(h, pw_w, pw_a)
        h = self.bn3(self.project(h, self.out_channels, pw_w, pw_a))
        return h + x if self.residual else h

    def export(self) -> StaticMBConv:
        """Static copy of the active block (sliced / transformed weights, sliced BN)."""
        hid, k = self.active_hidden, self.active_kernel
        pw_w, pw_a, dw_w, dw_a = self.active_bits or (FULL_PRECISION,) * 4
        with torch.no_grad():
            expand = _static_conv(self.expand, self.expand.active_weight(self.in_channels, hid), 1, 1, pw_w, pw_a)
            dw = _static_conv(self.dw, self.dw.active_weight(hid, k), self.stride, hid, dw_w, dw_a)
            project = _static_conv(self.project, self.project.active_weight(hid, self.out_channels), 1, 1, pw_w, pw_a)
            se = None
            if self.se is not None:
                mid = self.se.mid_channels(hid)
                reduce = _static_conv(self.se.reduce, self.se.reduce.active_weight(hid, mid), 1, 1, pw_w, pw_a,
                                      bias=self.se.reduce.bias[:mid])
                expand_se = _static_conv(self.se.expand, self.se.expand.active_weight(mid, hid), 1, 1, pw_w, pw_a,
                                         bias=self.se.expand.bias[:hid])
                se = StaticSE(reduce, expand_se)
        return StaticMBConv(
            ConvBNAct(expand, self.bn1.export(hid), make_act(self.act_name)),
            ConvBNAct(dw, self.bn2.export(hid), make_act(self.act_name)),
            se,
            ConvBNAct(project, self.bn3.export(self.out_channels), None),
            self.residual,
        )

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Permute hidden channels by importance (L1 norm of their project-conv weights,
        descending) so that every hidden width keeps the most important ones (OFA §2.3).
        The block's function at every width that includes all channels is unchanged."""
        importance = self.project.weight.abs().sum(dim=(0, 2, 3))
        perm = torch.argsort(importance, descending=True)
        self.expand.weight.copy_(self.expand.weight[perm])
        self.dw.weight.copy_(self.dw.weight[perm])
        self.project.weight.copy_(self.project.weight[:, perm])
        for bn in (self.bn1, self.bn2):
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(bn.bn, name)
                t.copy_(t[perm])
        if self.se is not None:
            se = self.se
            se.reduce.weight.copy_(se.reduce.weight[:, perm])
            se.expand.weight.copy_(se.expand.weight[perm])
            se.expand.bias.copy_(se.expand.bias[perm])
            se_perm = torch.argsort(se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            se.reduce.weight.copy_(se.reduce.weight[se_perm])
            se.reduce.bias.copy_(se.reduce.bias[se_perm])
            se.expand.weight.copy_(se.expand.weight[:, se_perm])


class DynamicBottleneck(nn.Module):
    """Elastic ResNet bottleneck (OFA-ResNet50): 1×1 (in → hidden) → k×k stride s (hidden →
    hidden) → 1×1 (hidden → out), shortcut identity or ResNet-D avg-pool + 1×1 conv; ReLU.
    Bits: the 1×1 convs (and the shortcut conv) use the block's ``pw_*`` bits, the k×k conv the
    ``dw_*`` bits (it is the block's spatial conv)."""

    def __init__(self, in_channels: int, out_channels: int, max_hidden: int, kernel_size: int, stride: int,
                 act: str, per_channel: bool = True, bn_eps: float = 1e-5):
        super().__init__()
        self.in_channels, self.out_channels, self.max_hidden = in_channels, out_channels, max_hidden
        self.stride, self.act_name = stride, act
        signed = signed_after(act)  # the block input is the previous block's ReLU output
        self.conv1 = DynamicPointwiseConv(in_channels, max_hidden, signed, per_channel)
        self.bn1 = DynamicBatchNorm(max_hidden, eps=bn_eps)
        self.conv2 = DynamicConv2d(max_hidden, max_hidden, kernel_size, stride, signed, per_channel)
        self.bn2 = DynamicBatchNorm(max_hidden, eps=bn_eps)
        self.conv3 = DynamicPointwiseConv(max_hidden, out_channels, signed, per_channel)
        self.bn3 = DynamicBatchNorm(out_channels, eps=bn_eps)
        self.downsample = self.downsample_bn = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = DynamicPointwiseConv(in_channels, out_channels, signed, per_channel)
            self.downsample_bn = DynamicBatchNorm(out_channels, eps=bn_eps)
        self.act = make_act(act)
        self.active_hidden = max_hidden
        self.active_kernel = kernel_size
        self.active_bits: tuple[int, int, int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pw_w, pw_a, dw_w, dw_a = self.active_bits or (None, None, None, None)
        h = self.act(self.bn1(self.conv1(x, self.active_hidden, pw_w, pw_a)))
        h = self.act(self.bn2(self.conv2(h, self.active_hidden, dw_w, dw_a)))
        h = self.bn3(self.conv3(h, self.out_channels, pw_w, pw_a))
        down = None
        if self.downsample is not None:
            down = lambda t: self.downsample_bn(self.downsample(t, self.out_channels, pw_w, pw_a))  # noqa: E731
        return self.act(h + shortcut(x, down, self.stride))

    def export(self) -> StaticBottleneck:
        hid = self.active_hidden
        pw_w, pw_a, dw_w, dw_a = self.active_bits or (FULL_PRECISION,) * 4
        with torch.no_grad():
            c1 = _static_conv(self.conv1, self.conv1.active_weight(self.in_channels, hid), 1, 1, pw_w, pw_a)
            c2 = _static_conv(self.conv2, self.conv2.active_weight(hid, hid), self.stride, 1, dw_w, dw_a)
            c3 = _static_conv(self.conv3, self.conv3.active_weight(hid, self.out_channels), 1, 1, pw_w, pw_a)
            down = None
            if self.downsample is not None:
                d = _static_conv(self.downsample, self.downsample.active_weight(self.in_channels, self.out_channels),
                                 1, 1, pw_w, pw_a)
                down = ConvBNAct(d, self.downsample_bn.export(self.out_channels), None)
        return StaticBottleneck(
            ConvBNAct(c1, self.bn1.export(hid), make_act(self.act_name)),
            ConvBNAct(c2, self.bn2.export(hid), make_act(self.act_name)),
            ConvBNAct(c3, self.bn3.export(self.out_channels), None),
            down, self.stride)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Sort hidden channels by the L1 norm of their conv3 weights (descending)."""
        perm = torch.argsort(self.conv3.weight.abs().sum(dim=(0, 2, 3)), descending=True)
        self.conv1.weight.copy_(self.conv1.weight[perm])
        self.conv2.weight.copy_(self.conv2.weight[perm][:, perm])
        self.conv3.weight.copy_(self.conv3.weight[:, perm])
        for bn in (self.bn1, self.bn2):
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(bn.bn, name)
                t.copy_(t[perm])


class ResidualConvBNAct(ConvBNAct):
    """``x + act(BN(conv(x)))``: OFA-ResNet50's middle stem conv (``SearchSpace.stem_residual``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x


def _static_conv(src: nn.Module, weight: torch.Tensor, stride: int, groups: int, weight_bits: int,
                 input_bits: int, bias: torch.Tensor | None = None) -> QuantConv2d:
    out_ch, in_per_group, k, _ = weight.shape
    conv = QuantConv2d(in_per_group * groups, out_ch, k, stride=stride, groups=groups, bias=bias is not None,
                       input_signed=src.input_quantizer.signed, weight_bits=weight_bits,
                       input_bits=input_bits, per_channel=src.per_channel)
    conv.weight.copy_(weight)
    if bias is not None:
        conv.bias.copy_(bias)
    conv.input_quantizer.load_state_dict(src.input_quantizer.state_dict())
    return conv


def _export_fixed(module: nn.Module) -> nn.Module:
    """Deep copy of a fixed part with every DynamicBatchNorm turned into a BatchNorm2d."""
    out = copy.deepcopy(module)
    for name, child in list(out.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, DynamicBatchNorm):
                setattr(child, attr, sub.export(sub.max_channels))
    return out


# ---------------------------------------------------------------------- the supernet


class OFASupernet(nn.Module):
    """Weight-sharing supernet of a :class:`SearchSpace`.

    MobileNet spaces: stem conv (fixed), first block (fixed, depthwise + project),
    ``space.num_blocks`` elastic :class:`DynamicMBConv` blocks, head (final-expand for MBv3,
    feature-mix, classifier). ResNet spaces (``block_type='bottleneck'``): ResNet-D stem,
    elastic :class:`DynamicBottleneck` blocks, pool + classifier. Fixed layers are quantized at
    ``space.fixed_bits`` whenever a policy is active.
    """

    def __init__(self, space: SearchSpace | str | dict = "apq_mbv2", kernel_transform: bool = True,
                 per_channel_weights: bool = True, dropout: float = 0.1):
        super().__init__()
        space = get_space(space)
        self.space = space
        self.kernel_transform = kernel_transform
        self.per_channel_weights = per_channel_weights
        self.dropout_rate = dropout
        pc = per_channel_weights
        eps = space.bn_eps

        def bn(channels: int) -> DynamicBatchNorm:
            return DynamicBatchNorm(channels, eps=eps)

        stem_ch, fb_ch = space.stem_channels, space.first_block_channels
        fb_act = space.stages[0].act

        if space.stem_type == "resnet_d":
            # ResNet-D stem: 3x3 s2 (C/2) -> 3x3 (C/2) -> 3x3 (C) -> 3x3 s2 max-pool; no first block
            if fb_ch != stem_ch:
                raise SpaceError(f"stem_type='resnet_d' has no first block: first_block_width must give "
                                 f"{stem_ch} channels like the stem, got {fb_ch}")
            half = max(1, stem_ch // 2)
            act = space.stem_act
            self.stem = nn.Sequential(
                ConvBNAct(QuantConv2d(space.in_channels, half, 3, stride=space.stem_stride, input_signed=True,
                                      per_channel=pc), bn(half), make_act(act)),
                (ResidualConvBNAct if space.stem_residual else ConvBNAct)(
                    QuantConv2d(half, half, 3, input_signed=signed_after(act), per_channel=pc), bn(half), make_act(act)),
                ConvBNAct(QuantConv2d(half, stem_ch, 3, input_signed=signed_after(act), per_channel=pc),
                          bn(stem_ch), make_act(act)),
                nn.MaxPool2d(3, 2, 1))
            self.first_block = nn.Identity()
        else:
            self.stem = ConvBNAct(
                QuantConv2d(space.in_channels, stem_ch, 3, stride=space.stem_stride, input_signed=True, per_channel=pc),
                bn(stem_ch), make_act(space.stem_act))
            self.first_block = StaticMBConv(
                None,
                ConvBNAct(QuantConv2d(stem_ch, stem_ch, space.first_block_kernel, groups=stem_ch,
                                      input_signed=signed_after(space.stem_act), per_channel=pc),
                          bn(stem_ch), make_act(fb_act)),
                None,
                ConvBNAct(QuantConv2d(stem_ch, fb_ch, 1, input_signed=signed_after(fb_act), per_channel=pc),
                          bn(fb_ch), None),
                residual=stem_ch == fb_ch,
            )
        if space.block_type == "bottleneck" and len(space.kernel_choices) != 1:
            raise SpaceError(f"block_type='bottleneck' has a fixed kernel; kernel_choices={list(space.kernel_choices)} "
                             "must hold one value")
        blocks = []
        for blk in layer_plan(space).blocks:  # the one layer plan the cost-model lowering reads too
            if blk.kind == "bottleneck":
                blocks.append(DynamicBottleneck(blk.in_channels, blk.out_channels, blk.max_hidden,
                                                space.kernel_choices[0], blk.stride, blk.act, pc, eps))
            else:
                blocks.append(DynamicMBConv(blk.in_channels, blk.out_channels, blk.max_hidden, space.kernel_choices,
                                            blk.stride, blk.act, blk.se, space.divisor, kernel_transform, pc, eps))
        self.blocks = nn.ModuleList(blocks)

        head_act = space.stages[-1].act
        last = space.last_channels
        final_expand = None
        if space.final_expand_channels is not None:
            final_expand = ConvBNAct(QuantConv2d(last, space.final_expand_channels, 1, input_signed=True, per_channel=pc),
                                     bn(space.final_expand_channels), make_act(head_act))
            mix_in, mix_signed = space.final_expand_channels, signed_after(head_act)
        else:  # MBConv blocks end linearly (signed); bottlenecks end with their ReLU
            mix_in, mix_signed = last, space.block_type != "bottleneck" or signed_after(head_act)
        feature_mix = None
        if space.head_channels == 0:  # ResNet: pool -> classifier
            cls_in, cls_signed = mix_in, mix_signed
        elif space.head_before_pool:
            feature_mix = ConvBNAct(QuantConv2d(mix_in, space.head_channels, 1, input_signed=mix_signed, per_channel=pc),
                                    bn(space.head_channels), make_act(head_act))
            cls_in, cls_signed = space.head_channels, signed_after(head_act)
        else:  # MBv3: after pooling, no BN, no bias (OFA)
            feature_mix = ConvBNAct(QuantConv2d(mix_in, space.head_channels, 1, input_signed=mix_signed, per_channel=pc),
                                    None, make_act(head_act))
            cls_in, cls_signed = space.head_channels, signed_after(head_act)
        classifier = QuantLinear(cls_in, space.num_classes, input_signed=cls_signed, per_channel=pc)
        self.head = ClassifierHead(final_expand, feature_mix, space.head_before_pool, classifier, dropout)

        self._stage_blocks: list[list[int]] = [[] for _ in space.stages]
        for b, s in enumerate(space.block_stage):
            self._stage_blocks[s].append(b)
        self.active_depths = [max(space.stage_depth_choices(s)) for s in range(space.num_stages)]
        self.active_arch = Architecture.largest(space)
        self.active_policy: QuantPolicy | None = None
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> "OFASupernet":
        """Store conv weights and run activations in channels-last (NHWC) layout. Same results
        (to float rounding); on CPU training is 1.2-1.6x and evaluation 1.4-2.7x faster for the
        tiny space, because oneDNN's depthwise kernels prefer NHWC (see docs/supernet.md)."""
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        self.channels_last = enabled
        return self

    # ------------------------------------------------------------------ state
    def fixed_layers(self) -> list[QuantConv2d | QuantLinear]:
        layers = [m for m in (*self.stem.modules(), *self.first_block.modules(), *self.head.modules())
                  if isinstance(m, (QuantConv2d, QuantLinear))]
        return layers

    def set_active(self, arch: Architecture, policy: QuantPolicy | None = None) -> None:
        """Select a subnet (validated against the space) and its bit widths (None = float)."""
        arch.validate(self.space)
        if policy is not None:
            policy.validate(self.space)
        self.active_depths = list(arch.depths)
        for b, block in enumerate(self.blocks):
            block.active_hidden = arch.hidden[b]
            block.active_kernel = arch.kernels[b]
            block.active_bits = None if policy is None else policy.block_bits(b)
        fixed = FULL_PRECISION if policy is None else self.space.fixed_bits
        for layer in self.fixed_layers():
            layer.set_bits(fixed, fixed)
        self.active_arch = Architecture.from_dict(arch.to_dict())
        self.active_policy = None if policy is None else QuantPolicy.from_dict(policy.to_dict())

    def set_max(self) -> None:
        self.set_active(Architecture.largest(self.space), None)

    def set_min(self) -> None:
        self.set_active(Architecture.smallest(self.space), None)

    def active_config(self) -> tuple[Architecture, QuantPolicy | None]:
        policy = None if self.active_policy is None else QuantPolicy.from_dict(self.active_policy.to_dict())
        return Architecture.from_dict(self.active_arch.to_dict()), policy

    # ------------------------------------------------------------------ sampling
    def phase_choices(self, phase: PhaseSpec | str | None) -> dict[str, Any]:
        """Allowed choices per axis under a phase's constraints."""
        space = self.space
        phase = _phase_by_name(phase) if isinstance(phase, str) else phase
        kernels = list(space.kernel_choices)
        if phase is not None and phase.kernels is not None:
            kernels = [k for k in kernels if k in phase.kernels] or [max(space.kernel_choices)]
        depths = []
        for s in range(space.num_stages):
            allowed = list(space.stage_depth_choices(s))
            if phase is not None and phase.depths is not None:
                allowed = [d for d in allowed if d in phase.depths] or [max(allowed)]
            depths.append(allowed)
        hidden = []
        for b in range(space.num_blocks):
            choices = list(space.hidden_choices(b))
            mode = "all" if phase is None else phase.hidden
            if mode == "max":
                choices = choices[-1:]
            elif mode == "upper":
                choices = choices[len(choices) // 2:]
            hidden.append(choices)
        return {"kernels": kernels, "depths": depths, "hidden": hidden,
                "resolution": list(space.resolution_choices),
                "quantize": bool(phase is not None and phase.quantize)}

    def phase_extreme(self, phase: PhaseSpec | str | None, largest: bool) -> tuple[Architecture, QuantPolicy | None]:
        """Largest (float) or smallest (lowest bits when the phase quantizes) subnet of a phase."""
        c = self.phase_choices(phase)
        pick = max if largest else min
        arch = Architecture(
            depths=[pick(d) for d in c["depths"]], kernels=[pick(c["kernels"])] * self.space.num_blocks,
            hidden=[pick(h) for h in c["hidden"]], resolution=pick(c["resolution"]))
        policy = None
        if c["quantize"] and not largest:
            policy = QuantPolicy.uniform(self.space, min(self.space.bit_choices))
        return arch, policy

    def sample_config(self, generator: torch.Generator | None = None,
                      phase: PhaseSpec | str | None = None) -> tuple[Architecture, QuantPolicy | None]:
        c = self.phase_choices(phase)

        def pick(options: list[Any]) -> Any:
            return options[int(torch.randint(len(options), (1,), generator=generator))]

        arch = Architecture(
            depths=[pick(d) for d in c["depths"]],
            kernels=[pick(c["kernels"]) for _ in range(self.space.num_blocks)],
            hidden=[pick(h) for h in c["hidden"]], resolution=pick(c["resolution"]))
        policy = QuantPolicy.random(self.space, generator) if c["quantize"] else None
        return arch, policy

    def sample_active(self, generator: torch.Generator | None = None,
                      phase: PhaseSpec | str | None = None) -> tuple[Architecture, QuantPolicy | None]:
        """Sample a subnet uniformly within ``phase``'s constraints (None = the whole space,
        float), make it active and return it. Same generator state ⇒ same subnet (DDP ranks)."""
        arch, policy = self.sample_config(generator, phase)
        self.set_active(arch, policy)
        return arch, policy

    # ------------------------------------------------------------------ forward / export
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.first_block(self.stem(x))
        for s, blocks in enumerate(self._stage_blocks):
            for b in blocks[: self.active_depths[s]]:
                x = self.blocks[b](x)
        return self.head(x)

    def active_block_indices(self) -> list[int]:
        return [b for s, blocks in enumerate(self._stage_blocks) for b in blocks[: self.active_depths[s]]]

    def export_subnet(self, arch: Architecture | None = None, policy: QuantPolicy | None = None) -> StaticSubnet:
        """Static copy of a subnet (the active one when ``arch`` is None) with inherited
        weights; in eval mode its output equals the supernet's with the same config. BN
        statistics are copied as they are: recalibrate the supernet first."""
        if arch is not None:
            self.set_active(arch, policy)
        arch, policy = self.active_config()
        blocks = [self.blocks[b].export() for b in self.active_block_indices()]
        config = {"space": self.space.to_dict(), "arch": arch.to_dict(),
                  "policy": None if policy is None else policy.to_dict()}
        net = StaticSubnet(_export_fixed(self.stem), _export_fixed(self.first_block), blocks,
                           _export_fixed(self.head), config)
        return net.train(self.training)

    def sort_channels(self) -> None:
        for block in self.blocks:
            block.sort_channels()


# ---------------------------------------------------------------------- BN recalibration / eval


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


# ---------------------------------------------------------------------- save / load


def _options(model: OFASupernet) -> dict[str, Any]:
    return {"kernel_transform": model.kernel_transform, "per_channel_weights": model.per_channel_weights,
            "dropout": model.dropout_rate}


def supernet_record(model: OFASupernet) -> dict[str, Any]:
    """Plain-data description needed to rebuild ``model`` (space + constructor options)."""
    return {"format": SUPERNET_FORMAT, "space": model.space.to_dict(), "options": _options(model)}


def save_supernet(model: OFASupernet, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write the supernet (plain state dict + space as a dict, plus ``meta``: e.g. the validation
    metrics it was exported with, which ``python -m cimnas.promote`` compares) atomically;
    loadable with ``torch.load(weights_only=True)``."""
    from cimnas.io import atomic_torch_save

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    record = {**supernet_record(model), "state_dict": state}
    if meta:
        record["meta"] = dict(meta)
    return atomic_torch_save(path, record)


def supernet_from_record(record: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None,
                         source: str = "supernet") -> OFASupernet:
    """Rebuild a supernet; a state dict of another space / configuration fails with one line
    naming ``source`` and the first missing, unexpected or mis-shaped tensor."""
    from cimnas.inputs import InputError

    if record.get("format") != SUPERNET_FORMAT:
        raise InputError(f"{source}: unknown supernet format {record.get('format')!r}; expected {SUPERNET_FORMAT!r}")
    try:
        model = OFASupernet(SearchSpace.from_dict(record["space"]), **record.get("options", {}))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{source}: field 'space' / 'options' does not describe a supernet ({err})") from err
    if state_dict is not None:
        check_state_dict(model, state_dict, source)
        model.load_state_dict(state_dict)
    return model


def check_state_dict(model: torch.nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """``state_dict`` must hold exactly ``model``'s tensors with the same shapes."""
    from cimnas.inputs import InputError

    if not isinstance(state_dict, dict):
        raise InputError(f"{source}: field 'state_dict' must be a dict of tensors, found {type(state_dict).__name__}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise InputError(f"{source}: state_dict does not match its space ({len(missing)} tensors missing, e.g. "
                         f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
    for k, v in expected.items():
        found = state_dict[k]
        if not isinstance(found, torch.Tensor) or found.shape != v.shape:
            shape = list(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
            raise InputError(f"{source}: tensor {k!r} has shape {shape}, expected {list(v.shape)} (a checkpoint of "
                             "another supernet configuration?)")


def load_supernet_record(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[OFASupernet, dict[str, Any]]:
    """:func:`load_supernet` plus the file's ``meta`` (empty for files without one)."""
    from cimnas.inputs import InputError, load_torch_file

    source = f"supernet file {str(path)!r}"
    obj = load_torch_file(path, "supernet", map_location=map_location)
    if not isinstance(obj, dict):
        raise InputError(f"{source}: expected a dict written by save_supernet, found {type(obj).__name__}")
    if "format" in obj:
        if "state_dict" not in obj:
            raise InputError(f"{source}: field 'state_dict' missing")
        return supernet_from_record(obj, obj["state_dict"], source), dict(obj.get("meta") or {})
    if "cimnas_supernet" in obj and "state_dict" in obj:  # Lightning checkpoint of our module
        prefix = "supernet."
        state = {k[len(prefix):]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        return supernet_from_record(obj["cimnas_supernet"], state, source), {}
    raise InputError(f"{source}: neither a save_supernet file (field 'format' = {SUPERNET_FORMAT!r}) nor a Lightning "
                     f"checkpoint of OFASupernetModule (field 'cimnas_supernet'); found fields {sorted(map(str, obj))[:8]}")


def load_supernet(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> OFASupernet:
    """Load a file written by :func:`save_supernet`, or a Lightning checkpoint of
    :class:`cimnas.models.supernet_module.OFASupernetModule`; a bad file fails with one line
    (:class:`cimnas.inputs.InputError`) naming the file and the field or tensor."""
    return load_supernet_record(path, map_location)[0]


# ---------------------------------------------------------------------- hardware workload


def collect_workload(supernet: OFASupernet, arch: Architecture, policy: QuantPolicy | None,
                     images: torch.Tensor):
    """Per-layer shapes, bit widths and input / weight value histograms of one subnet in the
    cost model's workload format: exports the subnet and hands it to
    :func:`cimnas.models.workload_trace.workload_from_module`. Recalibrate BN first."""

    net = supernet.export_subnet(arch, policy).eval()
    images = fit_resolution(images.to(_model_device(net)), arch.resolution)
    return workload_from_module(net, images)


__all__ = [
    "PhaseSpec", "default_phases", "DynamicMBConv", "DynamicBottleneck", "ResidualConvBNAct", "OFASupernet", "recalibrate_bn",
    "evaluate_accuracy", "fit_resolution", "save_supernet", "load_supernet", "load_supernet_record", "supernet_record",
    "supernet_from_record", "check_state_dict",
    "collect_workload", "SUPERNET_FORMAT",
]
