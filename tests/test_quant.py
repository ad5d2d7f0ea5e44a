"""Quantizers: round trips, bit-width-monotone error, straight-through gradients, static layers."""

import pytest
import torch

from cimnas.models.quant import (
    FULL_PRECISION,
    ActQuantizer,
    QuantConv2d,
    QuantLinear,
    act_levels,
    fake_quant_act,
    fake_quant_act_reference,
    fake_quant_weight,
    weight_levels,
)


@pytest.fixture
def weight():
    return torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_levels_round_trip(weight, per_channel):
    for bits in range(2, 9):
        levels, scale = weight_levels(weight, bits, per_channel)
        qmax = 2 ** (bits - 1) - 1
        assert torch.equal(levels, levels.round())
        assert levels.abs().max() == qmax
        # dequantised weights re-quantise to the same levels (idempotent grid)
        again, _ = weight_levels(levels * scale, bits, per_channel)
        assert torch.equal(again, levels)
        # error at most half a step
        err = (levels * scale - weight).abs()
        assert torch.all(err <= scale / 2 + 1e-6)


def test_weight_error_monotone_in_bits(weight):
    errors = [(fake_quant_weight(weight, b) - weight).pow(2).mean().item() for b in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert torch.equal(fake_quant_weight(weight, FULL_PRECISION), weight)
    assert torch.equal(fake_quant_weight(weight, None), weight)


def test_act_error_monotone_and_levels():
    x = torch.rand(4096, generator=torch.Generator().manual_seed(1)) * 6
    alpha = torch.tensor(6.0)
    errors = [(fake_quant_act(x, alpha, b, signed=False) - x).abs().mean().item() for b in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    for bits, signed in [(4, False), (4, True), (8, True)]:
        lv = act_levels(x - 3, alpha, bits, signed)
        lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        assert lv.min() >= lo and lv.max() <= hi and torch.equal(lv, lv.round())
        step = alpha / (hi if signed else hi)
        assert torch.allclose(lv * step, fake_quant_act(x - 3, alpha, bits, signed), atol=1e-6)


def test_straight_through_and_pact_gradients():
    w = torch.randn(8, 4, requires_grad=True)
    fake_quant_weight(w, 4).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # STE: identity

    x = (torch.linspace(-2, 8, 101) + 0.013).requires_grad_()  # no value on a clip boundary
    alpha = torch.tensor(6.0, requires_grad=True)
    fake_quant_act(x, alpha, 4, signed=False).sum().backward()
    inside = (x > 0) & (x < 6)
    assert torch.equal(x.grad[inside], torch.ones(int(inside.sum())))
    assert torch.all(x.grad[~inside] == 0)
    assert alpha.grad == float((x.detach() >= 6).sum())  # PACT: clipped values push alpha


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_fused_act_quant_equals_composed_ops(bits, signed):
    """The one-node fake quantizer (training and no-grad paths) gives the composed ops' values
    and gradients (continuous data: no value exactly on a clip boundary)."""
    gen = torch.Generator().manual_seed(bits + 10 * signed)
    x0 = torch.randn(4, 6, 5, 5, generator=gen) * 3 + (0.0 if signed else 2.0)
    upstream = torch.randn(4, 6, 5, 5, generator=gen)
    grads = []
    for fn in (fake_quant_act, fake_quant_act_reference):
        x = x0.clone().requires_grad_()
        alpha = torch.tensor(2.5, requires_grad=True)
        out = fn(x, alpha, bits, signed)
        (out * upstream).sum().backward()
        grads.append((out.detach(), x.grad, alpha.grad))
    (out_f, gx_f, ga_f), (out_r, gx_r, ga_r) = grads
    assert torch.equal(out_f, out_r)
    assert torch.equal(gx_f, gx_r)
    assert torch.allclose(ga_f, ga_r, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(fake_quant_act(x0, torch.tensor(2.5), bits, signed), out_r)


def test_fake_quant_keeps_channels_last_strides():
    """Quantized weights and activations keep their input's exact strides (also where the shape
    is ambiguous between layouts), so NHWC supernets stay on oneDNN's NHWC kernels."""
    cl = torch.channels_last
    for shape in [(8, 1, 3, 3), (24, 4, 1, 1), (16, 8, 3, 3)]:
        w = torch.randn(*shape).contiguous(memory_format=cl).requires_grad_()
        assert fake_quant_weight(w, 4).stride() == w.stride()
        with torch.no_grad():
            assert fake_quant_weight(w, 4).stride() == w.stride()
    for shape in [(2, 1, 6, 6), (2, 5, 6, 6)]:
        x = torch.randn(*shape).contiguous(memory_format=cl).requires_grad_()
        q = fake_quant_act(x, torch.tensor(1.0, requires_grad=True), 4, signed=True)
        assert q.stride() == x.stride()
        q.sum().backward()
        assert x.grad.stride() == x.stride()


def test_act_quantizer_initialises_range_from_data():
    q = ActQuantizer(signed=True)
    x = torch.randn(10000, generator=torch.Generator().manual_seed(2)) * 2
    y = q(x, 8)
    assert bool(q.initialized)
    alpha = float(q.alpha.detach())
    assert 5.0 < alpha < 8.0  # 99.9 % quantile of |N(0, 2)| ≈ 6.6
    inside = x.abs() <= alpha
    assert 0.998 < inside.float().mean() < 1.0
    assert (y - x)[inside].abs().max() <= alpha / 127 / 2 + 1e-6  # half a step inside the clip
    before = alpha
    q(x * 10, 8)
    assert float(q.alpha.detach()) == before  # initialised once, then learned
    assert torch.equal(q(x, None), x)


def test_quant_conv_levels_reproduce_output():
    torch.manual_seed(3)
    conv = QuantConv2d(4, 6, 3, input_signed=True, weight_bits=4, input_bits=6)
    x = torch.randn(2, 4, 8, 8)
    y = conv(x)
    wl, xl = conv.quantize_weight(), conv.quantize_input(x)
    assert wl.abs().max() <= 7 and xl.abs().max() <= 31
    # the integer convolution times the two scales is the layer's output
    y_int = torch.nn.functional.conv2d(xl, wl, padding=1) * conv.input_scale() * conv.weight_scale().view(1, -1, 1, 1)
    assert torch.allclose(y, y_int, atol=1e-5)
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight_bits == 4 and conv.input_bits == 6


def test_quant_linear_and_bit_validation():
    lin = QuantLinear(5, 3, weight_bits=8, input_bits=8)
    x = torch.randn(4, 5)
    assert torch.allclose(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), atol=0.05)
    with pytest.raises(ValueError, match="weight_bits=9"):
        QuantLinear(5, 3, weight_bits=9)
    with pytest.raises(ValueError, match="input_bits=1"):
        lin.set_bits(8, 1)
