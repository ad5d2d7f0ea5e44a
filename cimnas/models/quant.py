"""Fake quantization with straight-through gradients, and the static quantized layers.

Weights: symmetric linear quantization to the integer levels ``[-(2^(b-1)-1), 2^(b-1)-1]`` with
the range calibrated on the fly from ``max |w|`` (per output channel by default, per tensor on
request) — APQ §4.3 of ``ofa-predictor.md`` uses per-tensor ``max |w|``; per-channel scales are
what CIM arrays apply per column and keep 4-bit depthwise weights usable.

Activations (the *input* of every conv / linear, as in APQ): a learned clip ``alpha`` (PACT);
unsigned inputs (after ReLU / ReLU6) use the levels ``[0, 2^b - 1]`` on ``[0, alpha]``, signed
inputs (linear-bottleneck block inputs, images, h-swish outputs) ``[-(2^(b-1)-1), 2^(b-1)-1]`` on
``[-alpha, alpha]``. ``alpha`` is initialised from the data on the first quantized forward
(the 99.9 % quantile of ``|x|``, averaged over ranks under DDP) and then trained; rounding uses the
straight-through estimator, the clip passes gradients to ``alpha`` (PACT).

A layer whose bit width is :data:`FULL_PRECISION` (32) is not quantized.

The static layers :class:`QuantConv2d` / :class:`QuantLinear` are what exported subnets contain;
the hardware cost model reads ``weight_bits`` / ``input_bits`` and the integer levels returned by
``quantize_weight()`` / ``quantize_input(x)``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

FULL_PRECISION = 32
_ALPHA_QUANTILE = 0.999
_QUANTILE_MAX_SAMPLES = 1 << 18


def is_quantized(bits: int | None) -> bool:
    return bits is not None and bits < FULL_PRECISION


def check_bits(name: str, bits: int) -> int:
    if not (2 <= bits <= 8 or bits == FULL_PRECISION):
        raise ValueError(f"{name}={bits} is not allowed; allowed values: 2..8 or {FULL_PRECISION} (float)")
    return int(bits)


# ---------------------------------------------------------------------- weights


def weight_scale(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Step size of the symmetric weight grid (shape ``[C_out, 1, ...]`` or scalar); no grad."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().abs()
    amax = w.amax(dim=tuple(range(1, w.dim())), keepdim=True) if per_channel else w.max()
    return amax.clamp_min(1e-8) / qmax


def weight_levels(weight: torch.Tensor, bits: int, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (float tensor) and the scale, ``weight ≈ levels * scale``."""
    qmax = 2 ** (bits - 1) - 1
    scale = weight_scale(weight, bits, per_channel)
    return torch.round(weight.detach() / scale).clamp_(-qmax, qmax), scale


def _dequantized_weight(weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``levels * scale`` with exactly the weight's strides (no autograd)."""
    levels, scale = weight_levels(weight, bits, per_channel)
    return torch.mul(levels, scale, out=torch.empty_like(weight))


class _FakeQuantWeight(torch.autograd.Function):
    """``levels * scale`` forward, identity gradient (straight-through) backward. The result has
    exactly the weight's strides, so a channels-last weight stays channels-last even where the
    shape is ambiguous (``C_in = 1`` or 1x1 kernels) and oneDNN keeps the fast NHWC kernels."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
        return _dequantized_weight(weight, bits, per_channel)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def fake_quant_weight(weight: torch.Tensor, bits: int | None, per_channel: bool = True) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient (identity); keeps the weight's strides."""
    if not is_quantized(bits):
        return weight
    if not torch.is_grad_enabled() or not weight.requires_grad:
        return _dequantized_weight(weight, bits, per_channel)
    return _FakeQuantWeight.apply(weight, bits, per_channel)


# ---------------------------------------------------------------------- activations


def _act_grid(bits: int, signed: bool) -> int:
    return 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1


def _clip(x: torch.Tensor, alpha: torch.Tensor, signed: bool) -> torch.Tensor:
    # min/max against the parameter (not clamp with a float) so alpha receives the PACT gradient
    lower = -alpha if signed else torch.zeros_like(alpha)
    return torch.minimum(torch.maximum(x, lower), alpha)


def _dequantized_act(x: torch.Tensor, alpha: torch.Tensor, grid: int, signed: bool) -> torch.Tensor:
    """``round(clip(x) / step) * step`` with exactly ``x``'s strides (no autograd)."""
    a = alpha.to(x.dtype)
    step = a / grid
    out = torch.clamp(x, min=-a if signed else torch.zeros_like(a), max=a, out=torch.empty_like(x))
    return out.div_(step).round_().mul_(step)


class _FakeQuantAct(torch.autograd.Function):
    """PACT fake quantization in one node: forward ``round(clip(x) / step) * step``; backward
    straight-through inside the clip range, and ``alpha`` collects the gradient of the clipped
    elements (``+g`` above ``alpha``, ``-g`` below ``-alpha`` when signed). Same values and
    gradients as the composed ops (:func:`fake_quant_act_reference`) except on exact ties
    ``x == ±alpha``, where those split the gradient half-half; fewer passes over memory, no
    intermediate tensors kept for backward, and the output has exactly ``x``'s strides (a
    channels-last activation stays channels-last: QAT on CPU is dominated by these ops)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, grid: int, signed: bool) -> torch.Tensor:
        ctx.save_for_backward(x, alpha)
        ctx.signed = signed
        return _dequantized_act(x, alpha.detach(), grid, signed)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, alpha = ctx.saved_tensors
        a = alpha.to(x.dtype)
        above = x >= a
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            ga = grad.masked_fill(~above, 0).sum()
            if ctx.signed:
                ga = ga - grad.masked_fill(x > -a, 0).sum()
            grad_alpha = ga.to(alpha.dtype).reshape(alpha.shape)
        grad_x = None
        if ctx.needs_input_grad[0]:
            outside = above | (x <= -a) if ctx.signed else above | (x <= 0)
            grad_x = grad.masked_fill(outside, 0)
        return grad_x, grad_alpha, None, None


def fake_quant_act_reference(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """:func:`fake_quant_act` written as composed autograd ops (the definition it is tested against)."""
    step = alpha / _act_grid(bits, signed)
    clipped = _clip(x, alpha, signed)
    return clipped + (torch.round(clipped / step) * step - clipped).detach()


def fake_quant_act(x: torch.Tensor, alpha: torch.Tensor, bits: int | None, signed: bool) -> torch.Tensor:
    """Quantize-dequantize an activation on the ``bits``-bit grid of ``[0, alpha]`` (unsigned) or
    ``[-alpha, alpha]`` (signed); straight-through gradient to ``x``, PACT gradient to ``alpha``."""
    if not is_quantized(bits):
        return x
    grid = _act_grid(bits, signed)
    if not torch.is_grad_enabled() or not (x.requires_grad or alpha.requires_grad):
        return _dequantized_act(x, alpha.detach(), grid, signed)
    return _FakeQuantAct.apply(x, alpha, grid, signed)


def act_levels(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    step = alpha.detach() / _act_grid(bits, signed)
    return torch.round(_clip(x.detach(), alpha.detach(), signed) / step)


class ActQuantizer(nn.Module):
    """Input quantizer of one layer: a learned clip ``alpha`` shared by every bit width."""

    def __init__(self, signed: bool, init_alpha: float = 6.0):
        super().__init__()
        self.signed = bool(signed)
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha)))
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"signed={self.signed}"

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Set ``alpha`` to the 99.9 % quantile of ``|x|`` (of ``x`` for unsigned inputs)."""
        values = (x.detach().abs() if self.signed else x.detach().clamp_min(0)).flatten().float()
        if values.numel() > _QUANTILE_MAX_SAMPLES:
            gen = torch.Generator(device="cpu").manual_seed(values.numel())
            idx = torch.randint(values.numel(), (_QUANTILE_MAX_SAMPLES,), generator=gen).to(values.device)
            values = values[idx]
        alpha = torch.quantile(values, _ALPHA_QUANTILE).clamp_min(1e-3)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(alpha)
            alpha /= dist.get_world_size()
        self.alpha.copy_(alpha.to(self.alpha))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor, bits: int | None) -> torch.Tensor:
        if not is_quantized(bits):
            return x
        if not bool(self.initialized):
            self.init_from(x)
        return fake_quant_act(x, self.alpha, bits, self.signed)

    def levels(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        if not bool(self.initialized):
            self.init_from(x)
        return act_levels(x, self.alpha, bits, self.signed)


# ---------------------------------------------------------------------- static quantized layers


class _QuantizedLayer:
    """What :class:`QuantConv2d` and :class:`QuantLinear` share: the bit widths, the input
    quantizer and the integer levels / step sizes the hardware sees (mixed in before the
    ``nn`` layer class; ``self.weight`` is the layer's float weight)."""

    def _init_quant(self, input_signed: bool, weight_bits: int, input_bits: int, per_channel: bool) -> None:
        self.weight_bits = check_bits("weight_bits", weight_bits)
        self.input_bits = check_bits("input_bits", input_bits)
        self.per_channel = per_channel
        self.input_quantizer = ActQuantizer(input_signed)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, input_bits={self.input_bits}"

    def set_bits(self, weight_bits: int, input_bits: int) -> None:
        self.weight_bits = check_bits("weight_bits", weight_bits)
        self.input_bits = check_bits("input_bits", input_bits)

    def quantized_weight(self) -> torch.Tensor:
        return fake_quant_weight(self.weight, self.weight_bits, self.per_channel)

    def quantize_weight(self) -> torch.Tensor:
        if not is_quantized(self.weight_bits):
            return self.weight.detach()
        return weight_levels(self.weight, self.weight_bits, self.per_channel)[0]

    def weight_scale(self) -> torch.Tensor:
        return weight_scale(self.weight, self.weight_bits, self.per_channel)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if not is_quantized(self.input_bits):
            return x.detach()
        return self.input_quantizer.levels(x, self.input_bits)

    def input_scale(self) -> torch.Tensor:
        return self.input_quantizer.alpha.detach() / _act_grid(self.input_bits, self.input_quantizer.signed)


class QuantConv2d(_QuantizedLayer, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights and inputs.

    ``weight_bits`` / ``input_bits`` are ints (:data:`FULL_PRECISION` = not quantized).
    ``quantize_weight()`` and ``quantize_input(x)`` return the integer levels the hardware stores /
    receives (float tensors); ``weight_scale()`` / ``input_scale()`` the matching step sizes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False, input_signed: bool = True,
                 weight_bits: int = FULL_PRECISION, input_bits: int = FULL_PRECISION,
                 per_channel: bool = True):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                           padding=kernel_size // 2, groups=groups, bias=bias)
        self._init_quant(input_signed, weight_bits, input_bits, per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x, self.input_bits)
        return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class QuantLinear(_QuantizedLayer, nn.Linear):
    """``nn.Linear`` with fake-quantized weights and inputs (same interface as QuantConv2d)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, input_signed: bool = True,
                 weight_bits: int = FULL_PRECISION, input_bits: int = FULL_PRECISION,
                 per_channel: bool = True):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_quant(input_signed, weight_bits, input_bits, per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x, self.input_bits)
        return F.linear(x, self.quantized_weight(), self.bias)


__all__ = [
    "FULL_PRECISION", "is_quantized", "check_bits", "weight_scale", "weight_levels",
    "fake_quant_weight", "fake_quant_act", "act_levels", "ActQuantizer", "QuantConv2d",
    "QuantLinear",
]
