"""The once-for-all supernet built from a :class:`~cimnas.space.SearchSpace`.

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

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas.models.dynamic_ops import DynamicBatchNorm
from cimnas.models.elastic_blocks import DynamicBottleneck, DynamicMBConv, ResidualConvBNAct, _export_fixed
from cimnas.models.evaluation import _model_device, evaluate_accuracy, fit_resolution, recalibrate_bn
from cimnas.models.phases import HIDDEN_MODES, SAMPLERS, PhaseSpec, _phase_by_name, default_phases
from cimnas.models.quant import FULL_PRECISION, QuantConv2d, QuantLinear
from cimnas.models.static import ClassifierHead, ConvBNAct, StaticMBConv, StaticSubnet, make_act, signed_after
from cimnas.models.workload_trace import workload_from_module
from cimnas.space import Architecture, QuantPolicy, SearchSpace, SpaceError, get_space
from cimnas.space.layers import layer_plan

SUPERNET_FORMAT = "cimnas.supernet/1"

# ---------------------------------------------------------------------- sampling constraints


# ---------------------------------------------------------------------- the elastic block


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
    "PhaseSpec", "default_phases", "HIDDEN_MODES", "SAMPLERS", "DynamicMBConv", "DynamicBottleneck", "ResidualConvBNAct", "OFASupernet", "recalibrate_bn",
    "evaluate_accuracy", "fit_resolution", "save_supernet", "load_supernet", "load_supernet_record", "supernet_record",
    "supernet_from_record", "check_state_dict",
    "collect_workload", "SUPERNET_FORMAT",
]
