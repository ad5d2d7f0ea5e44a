"""Dynamic (elastic) layers of the once-for-all supernet.

Every op allocates its weights at the largest size and slices views in ``forward`` (OFA §2.1 of
``docs/reference/ofa-predictor.md``):

- :class:`DynamicPointwiseConv` — 1×1 conv, ``W[:c_out, :c_in]`` (c_in from the input).
- :class:`DynamicDepthwiseConv` — k×k depthwise conv with OFA's kernel transformation: a smaller
  kernel is the centre of the next larger (already transformed) one times a learned
  ``k²×k²`` matrix (identity at init), applied cumulatively 7 → 5 → 3.
- :class:`DynamicBatchNorm` — one ``BatchNorm2d(C_max)`` used through slices of its affine
  parameters and running statistics; it also implements exact-statistics recalibration (§2.4).
- :class:`DynamicSE` — squeeze-excite whose reduce / expand convs are sliced to the active width.

Each op also carries the per-layer input quantizer and fake-quantizes its active weight when bit
widths are given, so quantization-aware training happens inside the supernet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.models.quant import ActQuantizer, fake_quant_weight
from cimnas.space import make_divisible


class DynamicConv2d(nn.Module):
    """k×k convolution (groups 1) whose input and output widths are elastic:
    ``W[:c_out, :c_in]`` with c_in from the input; 'same' padding."""

    def __init__(self, max_in_channels: int, max_out_channels: int, kernel_size: int = 1, stride: int = 1,
                 input_signed: bool = True, per_channel: bool = True, bias: bool = False):
        super().__init__()
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.per_channel = per_channel
        self.weight = nn.Parameter(torch.empty(max_out_channels, max_in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(max_out_channels)) if bias else None
        self.input_quantizer = ActQuantizer(input_signed)

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        return self.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int, weight_bits: int | None = None,
                input_bits: int | None = None) -> torch.Tensor:
        w = fake_quant_weight(self.active_weight(x.shape[1], out_channels), weight_bits, self.per_channel)
        bias = None if self.bias is None else self.bias[:out_channels]
        return F.conv2d(self.input_quantizer(x, input_bits), w, bias, self.stride, self.kernel_size // 2)


class DynamicPointwiseConv(DynamicConv2d):
    """1×1 convolution whose input and output widths are elastic."""

    def __init__(self, max_in_channels: int, max_out_channels: int, input_signed: bool = True,
                 per_channel: bool = True, bias: bool = False):
        super().__init__(max_in_channels, max_out_channels, 1, 1, input_signed, per_channel, bias)


class DynamicDepthwiseConv(nn.Module):
    """Depthwise k×k convolution with elastic channels and elastic kernel ('same' padding)."""

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int = 1,
                 kernel_transform: bool = True, input_signed: bool = False, per_channel: bool = True):
        super().__init__()
        self.max_channels = max_channels
        self.kernel_choices = tuple(sorted(set(kernel_choices)))
        self.max_kernel = self.kernel_choices[-1]
        self.stride = stride
        self.kernel_transform = kernel_transform
        self.per_channel = per_channel
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        # one k²×k² matrix per step down the kernel list (7to5: 25×25, 5to3: 9×9), identity init
        self.transforms = nn.ParameterDict()
        if kernel_transform:
            for big, small in zip(self.kernel_choices[::-1], self.kernel_choices[::-1][1:]):
                self.transforms[f"{big}to{small}"] = nn.Parameter(torch.eye(small * small))
        self.input_quantizer = ActQuantizer(input_signed)

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        if kernel not in self.kernel_choices:
            raise ValueError(f"kernel={kernel} is not allowed; allowed values: {list(self.kernel_choices)}")
        w = self.weight[:channels]
        current = self.max_kernel
        for small in self.kernel_choices[::-1][1:]:
            if small < kernel:
                break
            start = current // 2 - small // 2
            w = w[:, :, start:start + small, start:start + small]
            if self.kernel_transform:
                matrix = self.transforms[f"{current}to{small}"]
                w = F.linear(w.reshape(channels, small * small), matrix).reshape(channels, 1, small, small)
            current = small
        return w

    def forward(self, x: torch.Tensor, kernel: int, weight_bits: int | None = None,
                input_bits: int | None = None) -> torch.Tensor:
        c = x.shape[1]
        w = fake_quant_weight(self.active_weight(c, kernel), weight_bits, self.per_channel)
        return F.conv2d(self.input_quantizer(x, input_bits), w, None, self.stride, kernel // 2, 1, c)


class _BatchStats:
    """Running sums of exact per-batch mean / biased variance, weighted by batch size."""

    def __init__(self) -> None:
        self.mean_sum: torch.Tensor | None = None
        self.var_sum: torch.Tensor | None = None
        self.count = 0

    def add(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        if self.mean_sum is None or self.mean_sum.shape != mean.shape:
            if self.mean_sum is not None:
                raise RuntimeError("BN recalibration saw two channel counts for one layer; keep one subnet active")
            self.mean_sum, self.var_sum = torch.zeros_like(mean), torch.zeros_like(var)
        self.mean_sum += mean * n
        self.var_sum += var * n
        self.count += n


class DynamicBatchNorm(nn.Module):
    """BatchNorm over the first ``c`` channels of one ``BatchNorm2d(C_max)``.

    Slices of the running buffers are views, so training-mode updates land in the shared buffers.
    While ``calibration`` is set (by :func:`cimnas.models.supernet.recalibrate_bn`) the layer
    normalises with the exact batch statistics and accumulates them instead.
    """

    def __init__(self, max_channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.max_channels = max_channels
        self.bn = nn.BatchNorm2d(max_channels, momentum=momentum, eps=eps)
        self.calibration: _BatchStats | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        bn = self.bn
        if self.calibration is not None:
            mean = x.mean(dim=(0, 2, 3))
            var = (x - mean.view(1, -1, 1, 1)).pow(2).mean(dim=(0, 2, 3))
            self.calibration.add(mean.detach(), var.detach(), x.shape[0])
            return F.batch_norm(x, mean, var, bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps)
        if self.training:
            bn.num_batches_tracked.add_(1)
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            self.training, bn.momentum, bn.eps)

    def export(self, channels: int) -> nn.BatchNorm2d:
        out = nn.BatchNorm2d(channels, momentum=self.bn.momentum, eps=self.bn.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(out, name).copy_(getattr(self.bn, name)[:channels])
            out.num_batches_tracked.copy_(self.bn.num_batches_tracked)
        return out


class DynamicSE(nn.Module):
    """Squeeze-excite with elastic width: reduce ``[:mid, :c]``, expand ``[:c, :mid]``,
    ``mid = make_divisible(c // 4, divisor)`` of the active width; ReLU, hard-sigmoid gate."""

    def __init__(self, max_channels: int, divisor: int = 8, input_signed: bool = True,
                 per_channel: bool = True):
        super().__init__()
        self.divisor = divisor
        self.per_channel = per_channel
        max_mid = self.mid_channels(max_channels)
        self.reduce = DynamicPointwiseConv(max_channels, max_mid, input_signed, per_channel, bias=True)
        self.expand = DynamicPointwiseConv(max_mid, max_channels, False, per_channel, bias=True)

    def mid_channels(self, channels: int) -> int:
        return make_divisible(channels // 4, self.divisor)

    def forward(self, x: torch.Tensor, weight_bits: int | None = None, input_bits: int | None = None) -> torch.Tensor:
        c = x.shape[1]
        mid = self.mid_channels(c)
        s = x.mean(dim=(2, 3), keepdim=True)
        s = F.relu(self.reduce(s, mid, weight_bits, input_bits))
        s = self.expand(s, c, weight_bits, input_bits)
        return x * F.hardsigmoid(s)


__all__ = ["DynamicConv2d", "DynamicPointwiseConv", "DynamicDepthwiseConv", "DynamicBatchNorm", "DynamicSE"]
