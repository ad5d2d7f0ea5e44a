"""The preset search spaces and :func:`get_space` (name, dict or space -> :class:`SearchSpace`).

Sources: the APQ / CIMNAS MobileNetV2 space and the OFA-MobileNetV3 space as summarised in
``docs/reference/ofa-predictor.md`` §1.1–1.5 and ``cimnas-reference-code.md`` §1.3; the OFA
zoo's published supernets for the ``ofa_*_w*`` presets (docs/imagenet.md).
"""

from __future__ import annotations

from typing import Any

from cimnas.space.spec import SearchSpace, SpaceError, StageSpec

# ---------------------------------------------------------------------- presets

_APQ_STAGES = (
    StageSpec(24, 2), StageSpec(40, 2), StageSpec(80, 2), StageSpec(96, 1), StageSpec(192, 2),
    StageSpec(320, 1, max_depth=1),
)

_OFA_MBV3_STAGES = (
    StageSpec(24, 2, act="relu"), StageSpec(40, 2, act="relu", se=True),
    StageSpec(80, 2, act="hswish"), StageSpec(112, 1, act="hswish", se=True),
    StageSpec(160, 2, act="hswish", se=True),
)


def apq_mbv2(**overrides: Any) -> SearchSpace:
    """The APQ / CIMNAS MobileNetV2 space (ImageNet, 224 px, 21 elastic blocks)."""
    base = SearchSpace(name="apq_mbv2", stages=_APQ_STAGES)
    return base.replace(**overrides) if overrides else base


def ofa_mbv3(**overrides: Any) -> SearchSpace:
    """The OFA-MobileNetV3 space (d {2,3,4}, k {3,5,7}, e {3,4,6}, R 128..224)."""
    base = SearchSpace(
        name="ofa_mbv3", stages=_OFA_MBV3_STAGES, stem_width=16, stem_act="hswish",
        first_block_width=16, final_expand_width=960, head_width=1280, head_before_pool=False,
        expand_ratios=(3.0, 4.0, 6.0), resolution_choices=tuple(range(128, 225, 4)),
    )
    return base.replace(**overrides) if overrides else base


def apq_mbv2_tiny(**overrides: Any) -> SearchSpace:
    """A quarter-width APQ space for 28x28 grayscale data (Fashion-MNIST) on a CPU: stem stride
    1, 10 classes, hidden channels in steps of 2, a 256-wide feature mix."""
    base = apq_mbv2(
        name="apq_mbv2_tiny", width_mult=0.25, channel_step=2, stem_stride=1, in_channels=1,
        num_classes=10, resolution_choices=(28,), head_width=256,
    )
    return base.replace(**overrides) if overrides else base


_OFA_RESNET50_STAGES = (
    StageSpec(256, 1, max_depth=4, act="relu", depth_choices=(2, 3, 4)),
    StageSpec(512, 2, max_depth=4, act="relu", depth_choices=(2, 3, 4)),
    StageSpec(1024, 2, max_depth=6, act="relu", depth_choices=(4, 5, 6)),
    StageSpec(2048, 2, max_depth=4, act="relu", depth_choices=(2, 3, 4)),
)


def ofa_resnet50(**overrides: Any) -> SearchSpace:
    """The OFA-ResNet50 space (ResNet-50-D; ``ofa-predictor.md`` §1.2): depth per stage
    (base [2,2,4,2] + {0,1,2}), bottleneck hidden width {0.2, 0.25, 0.35} x output width,
    resolution 128..224. Not included: OFA's per-stage width multipliers {0.65, 0.8, 1.0} and the
    skippable middle stem conv. The 3x3 conv of a bottleneck uses the ``dw_*`` bit widths."""
    base = SearchSpace(
        name="ofa_resnet50", stages=_OFA_RESNET50_STAGES, block_type="bottleneck", stem_type="resnet_d",
        stem_width=64, stem_stride=2, stem_act="relu", first_block_width=64, head_width=0,
        kernel_choices=(3,), depth_choices=(2, 3, 4), expand_ratios=(0.2, 0.25, 0.35), expand_base="out",
        resolution_choices=tuple(range(128, 225, 4)),
    )
    return base.replace(**overrides) if overrides else base


def ofa_resnet50_tiny(**overrides: Any) -> SearchSpace:
    """A 1/8-width OFA-ResNet50 space for 28x28 grayscale data (Fashion-MNIST) on a CPU: the
    structure of :func:`ofa_resnet50` (ResNet-D stem, 18 bottleneck blocks, depth per stage
    {2,3,4} / {4,5,6}, hidden = {0.2, 0.25, 0.35} x output width, one 3x3 kernel, per-block bit
    widths) with stage widths 32/64/128/256, an 8-wide stem, 10 classes and one resolution, 28.
    Channels round to multiples of 2 (``channel_step=2``), so every block keeps three distinct
    hidden widths (6/8/12 ... 52/64/90; multiples of 8 would merge the two smaller ratios).
    Spatial size: 28 -> 14 (stem) -> 7 (max-pool) -> stages at 7, 4, 2, 1. About 0.72 M
    parameters."""
    base = ofa_resnet50(
        name="ofa_resnet50_tiny", width_mult=0.125, channel_step=2, in_channels=1, num_classes=10,
        resolution_choices=(28,),
    )
    return base.replace(**overrides) if overrides else base


def ofa_proxyless_w10(**overrides: Any) -> SearchSpace:
    """The OFA-ProxylessNAS supernet at width 1.0 with expand ratios {4, 6} (APQ's ``imagenet-OFA``
    supernet, CIMNAS's network): the ``apq_mbv2`` space (any hidden width in [4 C_in, 6 C_in]) with
    OFA-ProxylessNAS's BN epsilon 1e-3."""
    base = apq_mbv2(name="ofa_proxyless_w1.0", bn_eps=1e-3)
    return base.replace(**overrides) if overrides else base


def ofa_proxyless_w13(**overrides: Any) -> SearchSpace:
    """The released OFA-ProxylessNAS supernet ``ofa_proxyless_d234_e346_k357_w1.3``: the APQ
    stage widths (``apq_mbv2``) at width 1.3, expand ratios {3, 4, 6}, OFA's BN epsilon 1e-3.
    Import its checkpoint with ``python -m cimnas.models.ofa_import`` (docs/imagenet.md)."""
    base = apq_mbv2(name="ofa_proxyless_w1.3", width_mult=1.3, expand_ratios=(3.0, 4.0, 6.0), bn_eps=1e-3)
    return base.replace(**overrides) if overrides else base


def ofa_mbv3_w12(**overrides: Any) -> SearchSpace:
    """The released OFA-MobileNetV3 supernet ``ofa_mbv3_d234_e346_k357_w1.2`` (width 1.2,
    resolutions 160..224)."""
    base = ofa_mbv3(name="ofa_mbv3_w1.2", width_mult=1.2, resolution_choices=tuple(range(160, 225, 4)))
    return base.replace(**overrides) if overrides else base


def ofa_resnet50_w10(**overrides: Any) -> SearchSpace:
    """The released OFA-ResNet50 supernet at its largest width multiplier (1.0): the structure of
    :func:`ofa_resnet50` plus OFA's identity shortcut around the middle stem conv. OFA's smaller
    per-stage widths {0.65, 0.8} and the stem skip are not searched (their weights are slices of
    these tensors, so an import / export round trip keeps them)."""
    base = ofa_resnet50(name="ofa_resnet50_w1.0", stem_residual=True)
    return base.replace(**overrides) if overrides else base


PRESETS = {"apq_mbv2": apq_mbv2, "ofa_mbv3": ofa_mbv3, "apq_mbv2_tiny": apq_mbv2_tiny,
           "ofa_resnet50": ofa_resnet50, "ofa_resnet50_tiny": ofa_resnet50_tiny,
           "ofa_proxyless_w1.0": ofa_proxyless_w10, "ofa_proxyless_w1.3": ofa_proxyless_w13, "ofa_mbv3_w1.2": ofa_mbv3_w12,
           "ofa_resnet50_w1.0": ofa_resnet50_w10}


def get_space(name_or_space: "str | SearchSpace | dict", **overrides: Any) -> SearchSpace:
    """Resolve a preset name, a dict (e.g. from YAML) or a space into a :class:`SearchSpace`."""
    if isinstance(name_or_space, SearchSpace):
        return name_or_space.replace(**overrides) if overrides else name_or_space
    if isinstance(name_or_space, dict):
        return SearchSpace.from_dict({**name_or_space, **overrides})
    if name_or_space not in PRESETS:
        raise SpaceError(f"space={name_or_space!r} is not a preset; allowed values: {sorted(PRESETS)}")
    return PRESETS[name_or_space](**overrides)
