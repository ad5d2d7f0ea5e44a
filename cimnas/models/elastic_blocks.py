"""The elastic blocks of the supernet (MBConv with elastic kernel / width / SE, the ResNet
bottleneck with elastic width) and their export to static layers."""

from __future__ import annotations

import copy

import torch
from torch import nn

from cimnas.models.dynamic_ops import (DynamicBatchNorm, DynamicConv2d, DynamicDepthwiseConv,
                                      DynamicPointwiseConv, DynamicSE)
from cimnas.models.quant import FULL_PRECISION, QuantConv2d
from cimnas.models.static import (ConvBNAct, StaticBottleneck, StaticMBConv, StaticSE, make_act, shortcut,
                                 signed_after)


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
