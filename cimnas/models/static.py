"""Static (fixed-architecture) building blocks: what an exported subnet is made of.

An exported subnet is a plain ``nn.Module`` of :class:`~cimnas.models.quant.QuantConv2d` /
:class:`~cimnas.models.quant.QuantLinear`, ``nn.BatchNorm2d`` and torch activations; it loads and
runs without the supernet. timm's ``InvertedResidual`` is not used because it rounds the hidden
width to a multiple of 8 (``make_divisible(in_chs * exp_ratio)``), which cannot express APQ's
fine-grained hidden widths nor the narrow CPU spaces; the blocks below compute exactly the same
function as timm's (conv → BN → act, identity shortcut when stride 1 and widths match).

Execution order of the convs of one block: expand 1×1, depthwise k×k, SE reduce / SE expand
(when the stage has SE), project 1×1.
"""

from __future__ import annotations

import torch
from torch import nn

from cimnas.models.quant import QuantConv2d, QuantLinear

_UNSIGNED_AFTER = ("relu", "relu6")


def make_act(name: str | None) -> nn.Module:
    """Activation module by name (``relu``, ``relu6``, ``hswish``; None = identity)."""
    if name is None:
        return nn.Identity()
    table = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}
    if name not in table:
        raise ValueError(f"act={name!r} is not allowed; allowed values: {sorted(table)}")
    return table[name]()


def signed_after(act: str | None) -> bool:
    """Whether the output of ``act`` can be negative (decides signed vs unsigned input grid)."""
    return act not in _UNSIGNED_AFTER


class ConvBNAct(nn.Module):
    """``conv → [BN] → [act]``."""

    def __init__(self, conv: QuantConv2d, bn: nn.Module | None, act: nn.Module | None):
        super().__init__()
        self.conv = conv
        self.bn = bn if bn is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class StaticSE(nn.Module):
    """Squeeze-excite: mean pool → 1×1 reduce (bias) → ReLU → 1×1 expand (bias) → hard-sigmoid gate."""

    def __init__(self, reduce: QuantConv2d, expand: QuantConv2d):
        super().__init__()
        self.reduce = reduce
        self.expand = expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self.expand(torch.relu(self.reduce(s)))
        return x * nn.functional.hardsigmoid(s)


class StaticMBConv(nn.Module):
    """Inverted-residual block: [expand] → depthwise → [SE] → project (+ identity shortcut)."""

    def __init__(self, expand: ConvBNAct | None, depthwise: ConvBNAct, se: StaticSE | None,
                 project: ConvBNAct, residual: bool):
        super().__init__()
        self.expand = expand
        self.depthwise = depthwise
        self.se = se
        self.project = project
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.expand is None else self.expand(x)
        h = self.depthwise(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        return h + x if self.residual else h


class StaticBottleneck(nn.Module):
    """ResNet bottleneck: 1×1 → k×k (stride) → 1×1, plus the shortcut (identity, or ResNet-D
    ``avg-pool → 1×1 conv → BN`` when the shape changes), then ReLU. Conv execution order:
    conv1, conv2, conv3, downsample."""

    def __init__(self, conv1: ConvBNAct, conv2: ConvBNAct, conv3: ConvBNAct, downsample: ConvBNAct | None,
                 stride: int):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = conv1, conv2, conv3
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(self.conv2(self.conv1(x)))
        return torch.relu(h + shortcut(x, self.downsample, self.stride))


def shortcut(x: torch.Tensor, downsample: nn.Module | None, stride: int) -> torch.Tensor:
    """ResNet-D shortcut: identity, or average pooling (when strided) then ``downsample``."""
    if downsample is None:
        return x
    if stride > 1:
        x = nn.functional.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False)
    return downsample(x)


class ClassifierHead(nn.Module):
    """MBv2 head (``feature_mix → pool → classifier``), MBv3 head
    (``final_expand → pool → feature_mix → classifier``) or ResNet head (``pool → classifier``)."""

    def __init__(self, final_expand: ConvBNAct | None, feature_mix: ConvBNAct | None, head_before_pool: bool,
                 classifier: QuantLinear, dropout: float = 0.0):
        super().__init__()
        self.final_expand = final_expand
        self.feature_mix = feature_mix
        self.head_before_pool = head_before_pool
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.final_expand is not None:
            x = self.final_expand(x)
        if self.head_before_pool and self.feature_mix is not None:
            x = self.feature_mix(x)
        x = x.mean(dim=(2, 3), keepdim=True)
        if not self.head_before_pool and self.feature_mix is not None:
            x = self.feature_mix(x)
        return self.classifier(self.dropout(torch.flatten(x, 1)))


class StaticSubnet(nn.Module):
    """A fixed network: stem → first block → blocks → head. ``config`` records the
    architecture / policy it was exported with (plain dicts)."""

    def __init__(self, stem: nn.Module, first_block: nn.Module, blocks: list[nn.Module],
                 head: ClassifierHead, config: dict | None = None):
        super().__init__()
        self.stem = stem
        self.first_block = first_block
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.config = config or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.first_block(self.stem(x))))


__all__ = ["make_act", "signed_after", "ConvBNAct", "StaticSE", "StaticMBConv", "StaticBottleneck", "shortcut",
           "ClassifierHead", "StaticSubnet"]
