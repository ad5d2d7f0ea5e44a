"""Dynamic ops vs static ops on sliced weights, supernet vs exported subnet, BN recalibration,
channel sorting, sampling, save/load."""

import pytest
import torch
import torch.nn.functional as F

from cimnas.models.dynamic_ops import DynamicBatchNorm, DynamicDepthwiseConv, DynamicPointwiseConv, DynamicSE
from cimnas.models.quant import QuantConv2d, QuantLinear
from cimnas.space import (
    Architecture,
    QuantPolicy,
    SpaceError,
    apq_mbv2_tiny,
    get_space,
    ofa_mbv3,
    ofa_resnet50,
    ofa_resnet50_tiny,
)
from cimnas.models.supernet import (
    OFASupernet,
    evaluate_accuracy,
    load_supernet,
    recalibrate_bn,
    save_supernet,
)
from cimnas.space import make_divisible



pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _small_mbv3():
    """OFA-MBv3 structure (SE, h-swish, final-expand head) at quarter width for CPU tests."""
    return ofa_mbv3(width_mult=0.25, channel_step=2, num_classes=10, resolution_choices=(32, 40),
                    head_width=64, final_expand_width=96)


def _small_resnet():
    """OFA-ResNet50 structure (ResNet-D stem, bottlenecks, elastic depth / hidden) at 1/8 width."""
    return ofa_resnet50(width_mult=0.125, num_classes=10, resolution_choices=(32, 40))


# ---------------------------------------------------------------------- dynamic ops


def test_dynamic_pointwise_equals_sliced_static_conv():
    torch.manual_seed(0)
    op = DynamicPointwiseConv(12, 20)
    x = torch.randn(2, 7, 5, 5)
    for c_out in (4, 13, 20):
        assert torch.allclose(op(x, c_out), F.conv2d(x, op.weight[:c_out, :7]), atol=1e-6)
    q = op(x, 13, weight_bits=4, input_bits=6)  # quantized path differs from float but stays close
    assert 0 < (q - op(x, 13)).abs().max() < 1.0


@pytest.mark.parametrize("transform", [False, True])
def test_dynamic_depthwise_equals_static_conv(transform):
    torch.manual_seed(1)
    op = DynamicDepthwiseConv(16, (3, 5, 7), stride=2, kernel_transform=transform)
    if transform:  # non-trivial matrices so the chain 7 -> 5 -> 3 is actually exercised
        for p in op.transforms.values():
            p.data += 0.1 * torch.randn_like(p)
    x = torch.randn(2, 10, 9, 9)
    w7 = op.weight[:10]
    expected = {7: w7}
    w5 = w7[:, :, 1:6, 1:6]
    if transform:
        w5 = (w5.reshape(10, 25) @ op.transforms["7to5"].T).reshape(10, 1, 5, 5)
    expected[5] = w5
    w3 = w5[:, :, 1:4, 1:4]
    if transform:
        w3 = (w3.reshape(10, 9) @ op.transforms["5to3"].T).reshape(10, 1, 3, 3)
    expected[3] = w3
    for k, w in expected.items():
        ref = F.conv2d(x, w, stride=2, padding=k // 2, groups=10)
        assert torch.allclose(op(x, k), ref, atol=1e-5), k
    assert sum(p.numel() for p in op.transforms.values()) == (706 if transform else 0)  # OFA: 25² + 9²
    with pytest.raises(ValueError, match="kernel=4"):
        op(x, 4)


def test_identity_transform_is_centre_crop():
    op = DynamicDepthwiseConv(4, (3, 5, 7), kernel_transform=True)
    assert torch.equal(op.active_weight(4, 3), op.weight[:, :, 2:5, 2:5])


def test_dynamic_batchnorm_equals_static_bn_train_and_eval():
    torch.manual_seed(2)
    dyn = DynamicBatchNorm(12)
    with torch.no_grad():
        dyn.bn.weight.uniform_(0.5, 1.5)
        dyn.bn.bias.normal_()
        dyn.bn.running_mean.normal_()
        dyn.bn.running_var.uniform_(0.5, 2)
    ref = torch.nn.BatchNorm2d(7)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(ref, name).copy_(getattr(dyn.bn, name)[:7])
    x = torch.randn(4, 7, 3, 3)
    dyn.eval(), ref.eval()
    assert torch.allclose(dyn(x), ref(x), atol=1e-6)
    dyn.train(), ref.train()
    untouched = dyn.bn.running_mean[7:].clone()
    assert torch.allclose(dyn(x), ref(x), atol=1e-5)
    assert torch.allclose(dyn.bn.running_mean[:7], ref.running_mean, atol=1e-6)  # updates land in the shared buffer
    assert torch.allclose(dyn.bn.running_var[:7], ref.running_var, atol=1e-6)
    assert torch.equal(dyn.bn.running_mean[7:], untouched)
    exported = dyn.export(7).eval()
    dyn.eval()
    assert torch.allclose(exported(x), dyn(x), atol=1e-6)


def test_dynamic_se_equals_static_formula():
    torch.manual_seed(3)
    se = DynamicSE(32, divisor=8)
    with torch.no_grad():
        se.reduce.bias.normal_()
        se.expand.bias.normal_()
    x = torch.randn(2, 24, 4, 4)
    mid = make_divisible(24 // 4, 8)
    s = x.mean((2, 3), keepdim=True)
    s = F.relu(F.conv2d(s, se.reduce.weight[:mid, :24], se.reduce.bias[:mid]))
    s = F.conv2d(s, se.expand.weight[:24, :mid], se.expand.bias[:24])
    assert torch.allclose(se(x), x * F.hardsigmoid(s), atol=1e-6)


# ---------------------------------------------------------------------- supernet vs exported subnet


@pytest.mark.parametrize("space_fn", [apq_mbv2_tiny, _small_mbv3, _small_resnet, ofa_resnet50_tiny],
                         ids=["apq_mbv2_tiny", "ofa_mbv3_small", "ofa_resnet50_small", "ofa_resnet50_tiny"])
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "quant"])
def test_export_equals_supernet(space_fn, quantized):
    torch.manual_seed(4)
    space = space_fn()
    net = OFASupernet(space)
    gen = _gen(5)
    images = torch.randn(8, space.in_channels, 40, 40)
    configs = [(Architecture.largest(space), None), (Architecture.smallest(space), None)]
    configs += [net.sample_config(gen) for _ in range(2)]
    for arch, _ in configs:
        policy = QuantPolicy.random(space, gen) if quantized else None
        net.set_active(arch, policy)
        recalibrate_bn(net, images.split(4))  # also initialises the activation ranges
        net.eval()
        x = F.interpolate(images[:4], size=arch.resolution, mode="bilinear")
        sub = net.export_subnet().eval()
        assert torch.allclose(sub(x), net(x), atol=1e-5, rtol=1e-5)
        assert sub.config["arch"] == arch.to_dict()
        n_active = sum(arch.active_blocks(space))
        assert len(sub.blocks) == n_active


def test_exported_layers_carry_bits_in_contract_order():
    space = apq_mbv2_tiny()
    net = OFASupernet(space)
    arch = Architecture.random(space, _gen(6))
    policy = QuantPolicy.random(space, _gen(7))
    net.set_active(arch, policy)
    sub = net.export_subnet().eval()
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in sub.modules()
             if isinstance(m, (QuantConv2d, QuantLinear))]
    sub(torch.randn(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    fixed = space.fixed_bits
    expected = [(fixed, fixed, "stem"), (fixed, fixed, "dw"), (fixed, fixed, "pw")]
    for b, active in enumerate(arch.active_blocks(space)):
        if active:
            pw_w, pw_a, dw_w, dw_a = policy.block_bits(b)
            expected += [(pw_w, pw_a, "pw"), (dw_w, dw_a, "dw"), (pw_w, pw_a, "pw")]
    expected += [(fixed, fixed, "pw"), (fixed, fixed, "linear")]
    assert len(calls) == len(expected)
    for layer, (wb, ab, kind) in zip(calls, expected):
        assert (layer.weight_bits, layer.input_bits) == (wb, ab)
        if kind == "dw":
            assert layer.groups == layer.in_channels > 1
        if kind == "linear":
            assert isinstance(layer, torch.nn.Linear)
        levels = layer.quantize_weight()
        assert torch.equal(levels, levels.round()) and levels.abs().max() <= 2 ** (wb - 1) - 1


def test_skipped_blocks_get_no_gradient_and_depth_keeps_first_blocks():
    space = apq_mbv2_tiny()
    net = OFASupernet(space)
    arch = Architecture.smallest(space)
    net.set_active(arch)
    net(torch.randn(2, 1, 28, 28)).sum().backward()
    for b, active in enumerate(arch.active_blocks(space)):
        grad = net.blocks[b].expand.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) if active else grad is None
    assert net.active_block_indices() == [b for b, a in enumerate(arch.active_blocks(space)) if a]


@pytest.mark.parametrize("space_fn", [_small_mbv3, _small_resnet], ids=["ofa_mbv3_small", "ofa_resnet50_small"])
def test_sort_channels_keeps_largest_subnet_function(space_fn):
    torch.manual_seed(8)
    space = space_fn()
    net = OFASupernet(space).eval()
    with torch.no_grad():  # give BN non-trivial statistics so permutation errors would show
        for m in net.modules():
            if isinstance(m, DynamicBatchNorm):
                m.bn.running_mean.normal_(0, 0.1)
                m.bn.running_var.uniform_(0.5, 1.5)
    net.set_max()
    x = torch.randn(2, 3, 40, 40)
    before = net(x)
    net.sort_channels()
    assert torch.allclose(net(x), before, atol=1e-5 * float(before.abs().max()), rtol=1e-5)  # float summation order
    last = net.blocks[0].project if hasattr(net.blocks[0], "project") else net.blocks[0].conv3
    imp = last.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp[:-1] >= imp[1:])


def test_recalibrate_bn_sets_exact_statistics():
    torch.manual_seed(9)
    space = apq_mbv2_tiny()
    net = OFASupernet(space)
    net.set_active(Architecture.random(space, _gen(10)))
    data = torch.randn(24, 1, 28, 28)
    seen = recalibrate_bn(net, [data[:8], data[8:16], (data[16:], None)])
    assert seen == 24
    stem_out = net.stem.conv(data)
    assert torch.allclose(net.stem.bn.bn.running_mean, stem_out.mean((0, 2, 3)), atol=1e-5)
    # OFA: the variance is the batch-size-weighted mean of the exact per-batch (biased) variances
    per_batch_var = torch.stack([b.var((0, 2, 3), unbiased=False) for b in stem_out.split(8)]).mean(0)
    assert torch.allclose(net.stem.bn.bn.running_var, per_batch_var, atol=1e-5)
    # a skipped block's statistics are left alone
    skipped = [b for b, a in enumerate(net.active_arch.active_blocks(space)) if not a]
    if skipped:
        assert torch.equal(net.blocks[skipped[0]].bn1.bn.running_mean, torch.zeros(net.blocks[skipped[0]].max_hidden))


def test_sampling_is_seeded_and_respects_phase():
    net = OFASupernet(apq_mbv2_tiny())
    a1 = net.sample_active(_gen(11), phase="kernel")
    a2 = net.sample_active(_gen(11), phase="kernel")
    assert a1[0] == a2[0] and a1[1] is None
    arch, _ = a1
    assert arch.depths == [max(net.space.stage_depth_choices(s)) for s in range(net.space.num_stages)]
    assert arch.hidden == [net.space.max_hidden(b) for b in range(net.space.num_blocks)]
    arch, policy = net.sample_active(_gen(12), phase="quant")
    assert policy is not None and net.active_config() == (arch, policy)
    with pytest.raises(ValueError, match="phase='nope'"):
        net.sample_active(_gen(1), phase="nope")


def test_invalid_architecture_names_field():
    net = OFASupernet(apq_mbv2_tiny())
    arch = Architecture.largest(net.space)
    arch.kernels[3] = 4
    with pytest.raises(SpaceError, match=r"kernels\[3\]=4"):
        net.set_active(arch)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(13)
    space = apq_mbv2_tiny()
    net = OFASupernet(space)
    arch, policy = Architecture.median(space), QuantPolicy.uniform(space, 4)
    net.set_active(arch, policy)
    images = torch.randn(8, 1, 28, 28)
    recalibrate_bn(net, [images])
    path = save_supernet(net, tmp_path / "sn.pt")
    assert path.stat().st_size < 5e6
    raw = torch.load(path, weights_only=True)
    assert raw["space"]["name"] == "apq_mbv2_tiny"
    loaded = load_supernet(path)
    loaded.set_active(arch, policy)
    net.eval(), loaded.eval()
    assert torch.equal(loaded(images), net(images))
    labels = net(images).argmax(1)
    assert evaluate_accuracy(loaded, [(images, labels)]) == 1.0


def test_parameter_count_of_ofa_mbv3_matches_paper():
    n = sum(p.numel() for p in OFASupernet(ofa_mbv3()).parameters())
    # OFA paper: 7.7 M shared parameters (incl. 706 transform parameters per elastic block and
    # our per-layer activation clips)
    assert 7.6e6 < n < 7.8e6


def test_median_architecture_is_valid():
    for name in ("apq_mbv2", "ofa_mbv3", "apq_mbv2_tiny"):
        space = get_space(name)
        arch = Architecture.median(space).validate(space)
        assert arch.kernels[0] == 5
    space = ofa_resnet50()
    assert Architecture.median(space).validate(space).depths == [3, 3, 5, 3]


def test_resnet50_space_structure():
    space = ofa_resnet50()
    assert space.num_blocks == 18 and space.stage_widths == [256, 512, 1024, 2048]
    assert [space.stage_depth_choices(s) for s in range(4)] == [(2, 3, 4), (2, 3, 4), (4, 5, 6), (2, 3, 4)]
    # hidden = make_divisible(ratio x output width, 8) for ratios 0.2 / 0.25 / 0.35 (OFA)
    assert space.hidden_choices(0) == (48, 64, 88) and space.hidden_choices(17) == (408, 512, 720)
    assert space.final_resolution(224) == 7
    net = OFASupernet(_small_resnet())
    net.set_active(Architecture.smallest(net.space))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(SpaceError, match="kernel_choices"):
        OFASupernet(ofa_resnet50(kernel_choices=(3, 5)))
    with pytest.raises(SpaceError, match="block_type='resnet'"):
        ofa_resnet50(block_type="resnet")


def test_resnet50_tiny_space_at_28px():
    """The Fashion-MNIST ResNet preset: OFA-ResNet50's structure at 1/8 width, 28 px never
    shrinks to nothing, three distinct hidden widths per block, and the named networks order
    by size (largest strictly more MACs and parameters than median and smallest)."""
    from cimnas.search.lowering import workload_from_arch
    from cimnas.space import ArchBatch
    from cimnas.search.designs import named_network

    space = get_space("ofa_resnet50_tiny")
    assert space.num_blocks == 18 and space.stage_widths == [32, 64, 128, 256] and space.in_channels == 1
    assert [space.stage_depth_choices(s) for s in range(4)] == [(2, 3, 4), (2, 3, 4), (4, 5, 6), (2, 3, 4)]
    assert all(len(space.hidden_choices(b)) == 3 for b in range(space.num_blocks))
    assert min(space.block_input_resolution(28)) >= 1 and space.final_resolution(28) == 1
    torch.manual_seed(20)
    net = OFASupernet(space)
    images = torch.randn(4, 1, 28, 28)
    sizes = {}
    for name, arch in (("largest", Architecture.largest(space)), ("median", Architecture.median(space)),
                       ("smallest", Architecture.smallest(space))):
        arch.validate(space)
        policy = QuantPolicy.uniform(space, 8)
        net.set_active(arch, policy)
        recalibrate_bn(net, [images])
        net.eval()
        sub = net.export_subnet().eval()
        assert sub(images).shape == (4, 10)
        macs = workload_from_arch(space, ArchBatch.from_designs(space, [arch], [policy])).macs().sum()
        sizes[name] = (int(macs), sum(p.numel() for p in sub.parameters()))
    for i in range(2):
        assert sizes["largest"][i] > sizes["median"][i] > sizes["smallest"][i], sizes
    for name in ("baseline_like", "largest", "smallest"):
        named_network(space, name)  # valid for the search's network / experts fields


def test_collect_workload_matches_cost_model_slots():
    from cimnas.search.lowering import workload_from_arch
    from cimnas.space import ArchBatch
    from cimnas.models.supernet import collect_workload

    torch.manual_seed(14)
    space = apq_mbv2_tiny()
    net = OFASupernet(space)
    arch, policy = Architecture.random(space, _gen(15)), QuantPolicy.random(space, _gen(16))
    images = torch.randn(4, 1, 28, 28)
    net.set_active(arch, policy)
    recalibrate_bn(net, [images])
    measured = collect_workload(net, arch, policy, images)
    predicted = workload_from_arch(space, ArchBatch.from_designs(space, [arch], [policy]))
    keep = predicted.mask[0]
    assert measured.num_layers == int(keep.sum())
    for f in ("kind", "C", "M", "R", "S", "P", "Q", "G", "stride", "input_bits", "weight_bits"):
        assert torch.equal(getattr(measured, f)[0], getattr(predicted, f)[0][keep]), f
    assert measured.input_hist is not None and torch.allclose(measured.input_hist.sum(-1), torch.ones(1))


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "quant"])
def test_channels_last_matches_default_layout_and_round_trips(tmp_path, quantized):
    """NHWC execution (the fast CPU path) computes the same function and gradients, and a
    supernet saved from it loads into the default layout unchanged."""
    torch.manual_seed(21)
    space = apq_mbv2_tiny()
    net = OFASupernet(space)
    images = torch.randn(16, 1, 28, 28)
    gen = _gen(22)
    arch, _ = net.sample_config(gen)
    policy = QuantPolicy.random(space, gen) if quantized else None
    net.set_active(arch, policy)
    recalibrate_bn(net, images.split(8))
    nhwc = load_supernet(save_supernet(net, tmp_path / "a.pt")).use_channels_last()
    nhwc.set_active(arch, policy)
    assert nhwc.blocks[0].dw.weight.is_contiguous(memory_format=torch.channels_last)
    net.eval(), nhwc.eval()
    ref, out = net(images), nhwc(images)
    # quantized: an activation that lands on a rounding boundary may take the other level
    assert (out - ref).abs().mean() < (1e-3 if quantized else 1e-5)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    net.train(), nhwc.train()
    losses = []
    for model in (net, nhwc):
        model.zero_grad()
        torch.manual_seed(23)  # same dropout mask
        losses.append(F.cross_entropy(model(images), torch.arange(16) % 10))
        losses[-1].backward()
    if quantized:  # rounding flips change single levels, so only the loss is comparable
        assert abs(float(losses[1]) - float(losses[0])) < 0.05 * float(losses[0])
    else:  # the head's gradients agree to rounding; deeper, float32 rounding is amplified by
        # train-mode BN over 2x2 maps (vs a float64 reference: NCHW 1e-6-8e-3, NHWC 2-4e-2)
        assert torch.allclose(nhwc.head.classifier.weight.grad, net.head.classifier.weight.grad, atol=1e-5)
        flat = [torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]) for m in (net, nhwc)]
        assert (flat[1] - flat[0]).norm() < 0.1 * flat[0].norm()
    back = load_supernet(save_supernet(nhwc, tmp_path / "b.pt"))
    saved = nhwc.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in back.state_dict().items())
    assert not back.channels_last and back.blocks[0].dw.weight.is_contiguous()


@pytest.mark.parametrize("name", ["apq_mbv2_tiny", "ofa_mbv3", "ofa_resnet50_tiny"])
def test_supernet_blocks_are_built_from_the_layer_plan(name):
    """One architecture description: the supernet's elastic blocks and the cost model's layer
    slots both come from cimnas.space.layers (same channels, strides, SE, widths)."""
    from cimnas.models.supernet import OFASupernet
    from cimnas.space import get_space
    from cimnas.space.layers import layer_plan

    space = get_space(name)
    plan = layer_plan(space)
    net = OFASupernet(space)
    assert len(net.blocks) == len(plan.blocks) == space.num_blocks
    for blk in plan.blocks:
        slots = [s for s, b in zip(plan.names, plan.block.tolist()) if b == blk.index]
        assert slots and all(s.startswith(f"blocks.{blk.index}.") for s in slots)
        weights = [p for n, p in net.blocks[blk.index].named_parameters() if p.dim() == 4]
        outs = [w.shape[0] for w in weights]
        ins = [w.shape[1] for w in weights]
        assert max(outs) == blk.max_hidden or blk.max_hidden in outs
        assert blk.in_channels in ins and blk.out_channels in outs
