"""Import Once-for-All checkpoints as cimnas supernets, and export them back.

The public OFA supernets (``OFAProxylessNASNets``, ``OFAMobileNetV3``, ``OFAResNets`` of the
``ofa`` package, mit-han-lab/once-for-all) store every tensor at its largest size, exactly like
:class:`~cimnas.models.supernet.OFASupernet`; importing is a renaming of keys plus the matching
:class:`~cimnas.space.SearchSpace`:

============  =====================================================  ===============================
family        OFA network                                            cimnas space
============  =====================================================  ===============================
proxyless     ``OFAProxylessNASNets(width_mult, ks, e, d)``          ``ofa_proxyless_w1.0`` (w1.0,
                                                                     e {4,6}: ``apq_mbv2``'s fine-
                                                                     grained hidden widths, BN eps
                                                                     1e-3), ``ofa_proxyless_w1.3``
                                                                     (w1.3, e {3,4,6}), or derived
mbv3          ``OFAMobileNetV3(width_mult, ks, e, d)``               ``ofa_mbv3``, ``ofa_mbv3_w1.2``
resnet50      ``OFAResNets(d, e, width_mult_list)`` at width 1.0     ``ofa_resnet50_w1.0``
============  =====================================================  ===============================

Every tensor is mapped, including the elastic-kernel matrices ``7to5_matrix`` / ``5to3_matrix``
(:class:`~cimnas.models.dynamic_ops.DynamicDepthwiseConv` ``transforms``), BN statistics and
``num_batches_tracked``, SE convs and the ResNet shortcut convs; cimnas-only state (activation
quantizer ranges) keeps its fresh, uninitialised value. An unknown, missing or wrongly shaped
tensor fails with :class:`OFAImportError` naming it, its expected and its found shape, before
anything is written. OFA-ResNet50's elastic per-stage widths {0.65, 0.8} and the stem skip are not
searched by cimnas (``ofa_resnet50_w1.0``); their weights are slices of the full-width tensors, so
import and export keep them bit for bit.

Command line (writes a file :func:`~cimnas.models.supernet.load_supernet` reads)::

    python -m cimnas.models.ofa_import --checkpoint ofa_mbv3_d234_e346_k357_w1.0 --family mbv3 \\
        --out checkpoints/imagenet/ofa_mbv3_supernet.pt
    python -m cimnas.models.ofa_import --to-ofa --supernet supernet.pt --out ofa_state.pth

Nothing here imports the ``ofa`` package; it is only the reference of the tests.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from cimnas.io import atomic_torch_save
from cimnas.models.supernet import OFASupernet, load_supernet, save_supernet
from cimnas.space import PRESETS, Architecture, SearchSpace, SpaceError, StageSpec, get_space, make_divisible

FAMILIES = ("proxyless", "mbv3", "resnet50")
OFA_CLASSES = {"proxyless": "OFAProxylessNASNets", "mbv3": "OFAMobileNetV3", "resnet50": "OFAResNets"}
#: OFA-ResNet50 base depths per stage; OFA's depth choice d adds d blocks (drops the last 2-d).
RESNET_BASE_DEPTHS = (2, 2, 4, 2)
_DEFAULTS = {
    "proxyless": {"ks": (3, 5, 7), "expand": (3.0, 4.0, 6.0), "depth": (2, 3, 4), "width_mult": 1.3},
    "mbv3": {"ks": (3, 5, 7), "expand": (3.0, 4.0, 6.0), "depth": (2, 3, 4), "width_mult": 1.0},
    "resnet50": {"ks": (3,), "expand": (0.2, 0.25, 0.35), "depth": (0, 1, 2), "width_mult": 1.0},
}
#: Space fields OFA has no notion of (quantization search, resolutions to sample).
_NON_STRUCTURAL = ("name", "resolution_choices", "bit_choices", "fixed_bits")


class OFAImportError(ValueError):
    """An OFA checkpoint (or cimnas supernet) that does not fit the requested OFA network."""


# ---------------------------------------------------------------------- configuration / space


@dataclass(frozen=True)
class OFAConfig:
    """The constructor arguments of an OFA network, in OFA's own terms: ``ks`` kernel list,
    ``expand`` expand-ratio list, ``depth`` depth list (ResNet: extra blocks {0,1,2}),
    ``width_mult`` (ResNet: the largest entry of ``width_mult_list``, only 1.0)."""

    family: str
    width_mult: float
    ks: tuple[int, ...]
    expand: tuple[float, ...]
    depth: tuple[int, ...]
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise OFAImportError(f"family={self.family!r} is not allowed; allowed values: {list(FAMILIES)}")
        for name in ("ks", "expand", "depth"):
            values = tuple(sorted(set(getattr(self, name))))
            if not values:
                raise OFAImportError(f"{name} must not be empty")
            object.__setattr__(self, name, values)
        object.__setattr__(self, "expand", tuple(float(e) for e in self.expand))
        if self.family == "resnet50":
            if self.width_mult != 1.0:
                raise OFAImportError(f"family='resnet50': width_mult={self.width_mult} is not allowed; allowed "
                                     "values: [1.0] (the largest entry of OFA's width_mult_list)")
            if self.ks != (3,):
                raise OFAImportError(f"family='resnet50': ks={list(self.ks)} is not allowed; allowed values: [[3]]")
            if min(self.depth) < 0:
                raise OFAImportError(f"family='resnet50': depth={list(self.depth)} must be extra blocks >= 0")

    @classmethod
    def default(cls, family: str, **changes: Any) -> "OFAConfig":
        if family not in FAMILIES:
            raise OFAImportError(f"family={family!r} is not allowed; allowed values: {list(FAMILIES)}")
        values = {**_DEFAULTS[family], **{k: v for k, v in changes.items() if v is not None}}
        return cls(family=family, **values)

    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the ``ofa`` network class that holds the same tensors."""
        if self.family == "resnet50":
            return {"n_classes": self.num_classes, "depth_list": list(self.depth),
                    "expand_ratio_list": list(self.expand), "width_mult_list": [0.65, 0.8, 1.0]}
        return {"n_classes": self.num_classes, "width_mult": self.width_mult, "ks_list": list(self.ks),
                "expand_ratio_list": [_plain(e) for e in self.expand], "depth_list": list(self.depth)}


def _plain(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def ofa_space(config: OFAConfig) -> SearchSpace:
    """The cimnas search space of an OFA network: a shipped preset when one matches
    (``ofa_proxyless_w1.0`` for ProxylessNAS w1.0 e {4,6}, ``ofa_proxyless_w1.3``, ``ofa_mbv3``,
    ``ofa_mbv3_w1.2``, ``ofa_resnet50_w1.0``), otherwise a derived space named after the
    configuration."""
    c = config
    dmax = max(c.depth)
    if c.family == "resnet50":
        base = get_space("ofa_resnet50_w1.0")
        stages = tuple(StageSpec(s.width, s.stride, max_depth=b + dmax, act=s.act,
                                 depth_choices=tuple(b + d for d in c.depth))
                       for s, b in zip(base.stages, RESNET_BASE_DEPTHS))
        space = base.replace(stages=stages, expand_ratios=c.expand, num_classes=c.num_classes)
    elif c.family == "proxyless":
        base = get_space("apq_mbv2")
        stages = tuple(s if s.max_depth == 1 else StageSpec(s.width, s.stride, max_depth=dmax, act=s.act)
                       for s in base.stages)
        if c.width_mult == 1.0 and c.expand == (4.0, 6.0):  # APQ / CIMNAS: any hidden width in [4C, 6C]
            space = base.replace(stages=stages, kernel_choices=c.ks, depth_choices=c.depth, bn_eps=1e-3,
                                 num_classes=c.num_classes)
        else:
            space = base.replace(stages=stages, kernel_choices=c.ks, depth_choices=c.depth, bn_eps=1e-3,
                                 width_mult=c.width_mult, expand_ratios=c.expand, num_classes=c.num_classes)
    else:
        base = get_space("ofa_mbv3")
        stages = tuple(StageSpec(s.width, s.stride, max_depth=dmax, act=s.act, se=s.se) for s in base.stages)
        space = base.replace(stages=stages, kernel_choices=c.ks, depth_choices=c.depth, expand_ratios=c.expand,
                             width_mult=c.width_mult, num_classes=c.num_classes)
    for name, preset in PRESETS.items():
        candidate = preset(num_classes=c.num_classes)
        if not _structural_differences(space, candidate):
            return candidate
    fmt = lambda v: "".join(str(_plain(x)).replace(".", "") for x in v)  # noqa: E731
    return space.replace(name=f"ofa_{c.family}_w{_plain(c.width_mult)}_k{fmt(c.ks)}_e{fmt(c.expand)}_d{fmt(c.depth)}")


def _structural_differences(a: SearchSpace, b: SearchSpace) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in set(da) | set(db) if k not in _NON_STRUCTURAL and da.get(k) != db.get(k))


def config_of_space(space: SearchSpace) -> OFAConfig:
    """The OFA configuration whose network holds exactly the tensors of ``space``'s supernet;
    :class:`OFAImportError` naming the differing fields when no OFA network does."""
    if space.block_type == "bottleneck":
        family = "resnet50"
        extra = sorted({d - b for s, b in zip(space.stages, RESNET_BASE_DEPTHS) for d in s.depth_choices}) \
            if len(space.stages) == len(RESNET_BASE_DEPTHS) else [0]
        config = OFAConfig("resnet50", 1.0, (3,), space.expand_ratios, tuple(extra), space.num_classes)
    else:
        family = "mbv3" if space.final_expand_width is not None else "proxyless"
        expand = space.expand_ratios or (space.expand_min, space.expand_max)
        try:
            config = OFAConfig(family, space.width_mult, space.kernel_choices, expand, space.depth_choices,
                               space.num_classes)
        except OFAImportError as err:
            raise OFAImportError(f"space {space.name!r}: {err}") from err
    diff = _structural_differences(space, ofa_space(config))
    if diff:
        raise OFAImportError(f"space {space.name!r} is no OFA {OFA_CLASSES[family]} network: it differs from "
                             f"the nearest one ({ofa_space(config).name!r}) in the fields {diff}")
    return config


# ---------------------------------------------------------------------- key mapping

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_MB_BLOCK_RULES = [
    (r"expand\.weight", "conv.inverted_bottleneck.conv.conv.weight"),
    (rf"bn1\.bn\.{_BN}", r"conv.inverted_bottleneck.bn.bn.\1"),
    (r"dw\.weight", "conv.depth_conv.conv.conv.weight"),
    (r"dw\.transforms\.(\d+to\d+)", r"conv.depth_conv.conv.\1_matrix"),
    (rf"bn2\.bn\.{_BN}", r"conv.depth_conv.bn.bn.\1"),
    (r"se\.(reduce|expand)\.(weight|bias)", r"conv.depth_conv.se.fc.\1.\2"),
    (r"project\.weight", "conv.point_linear.conv.conv.weight"),
    (rf"bn3\.bn\.{_BN}", r"conv.point_linear.bn.bn.\1"),
]
_MB_FIXED_RULES = [
    (r"stem\.conv\.weight", "first_conv.conv.weight"),
    (rf"stem\.bn\.bn\.{_BN}", r"first_conv.bn.\1"),
    (r"first_block\.depthwise\.conv\.weight", "blocks.0.conv.depth_conv.conv.weight"),
    (rf"first_block\.depthwise\.bn\.bn\.{_BN}", r"blocks.0.conv.depth_conv.bn.\1"),
    (r"first_block\.project\.conv\.weight", "blocks.0.conv.point_linear.conv.weight"),
    (rf"first_block\.project\.bn\.bn\.{_BN}", r"blocks.0.conv.point_linear.bn.\1"),
    (r"head\.final_expand\.conv\.weight", "final_expand_layer.conv.weight"),
    (rf"head\.final_expand\.bn\.bn\.{_BN}", r"final_expand_layer.bn.\1"),
    (r"head\.feature_mix\.conv\.weight", "feature_mix_layer.conv.weight"),
    (rf"head\.feature_mix\.bn\.bn\.{_BN}", r"feature_mix_layer.bn.\1"),
    (r"head\.classifier\.(weight|bias)", r"classifier.linear.\1"),
]
_RES_BLOCK_RULES = [
    (r"conv([123])\.weight", r"conv\1.conv.conv.weight"),
    (rf"bn([123])\.bn\.{_BN}", r"conv\1.bn.bn.\2"),
    (r"downsample\.weight", "downsample.conv.conv.weight"),
    (rf"downsample_bn\.bn\.{_BN}", r"downsample.bn.bn.\1"),
]
_RES_FIXED_RULES = [
    (r"stem\.([02])\.conv\.weight", r"input_stem.\1.conv.conv.weight"),
    (rf"stem\.([02])\.bn\.bn\.{_BN}", r"input_stem.\1.bn.bn.\2"),
    (r"stem\.1\.conv\.weight", "input_stem.1.conv.conv.conv.weight"),
    (rf"stem\.1\.bn\.bn\.{_BN}", r"input_stem.1.conv.bn.bn.\1"),
    (r"head\.classifier\.(weight|bias)", r"classifier.linear.linear.\1"),
]
#: cimnas-only state: activation-quantizer ranges (no counterpart in a float OFA network).
_CIMNAS_ONLY = re.compile(r".*\.input_quantizer\.(alpha|initialized)$")


def ofa_key(space: SearchSpace, cimnas_key: str) -> str | None:
    """OFA state-dict key of a cimnas supernet key (None for cimnas-only state)."""
    if _CIMNAS_ONLY.match(cimnas_key):
        return None
    resnet = space.block_type == "bottleneck"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", cimnas_key)
    if m:
        b, rest = int(m.group(1)), m.group(2)
        for pattern, repl in (_RES_BLOCK_RULES if resnet else _MB_BLOCK_RULES):
            if re.fullmatch(pattern, rest):
                return f"blocks.{b if resnet else b + 1}." + re.sub(pattern, repl, rest)
    else:
        for pattern, repl in (_RES_FIXED_RULES if resnet else _MB_FIXED_RULES):
            if re.fullmatch(pattern, cimnas_key):
                return re.sub(pattern, repl, cimnas_key)
    raise OFAImportError(f"cimnas tensor {cimnas_key!r} has no OFA counterpart (space {space.name!r})")


def key_map(model: OFASupernet) -> dict[str, str]:
    """``{ofa_key: cimnas_key}`` for every tensor the two networks share."""
    out = {}
    for ck in model.state_dict():
        ok = ofa_key(model.space, ck)
        if ok is not None:
            out[ok] = ck
    return out


def _normalise_key(key: str, expected: set[str]) -> str:
    """The key names of released OFA checkpoints (older ``mobile_inverted_conv`` blocks, BN /
    conv / linear wrappers with or without their dynamic ``.bn.bn`` / ``.conv.conv`` level), as
    OFA's own ``load_state_dict`` accepts them."""
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    if key in expected:
        return key
    for old, new in ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."),
                     (".linear.", ".linear.linear."), ("bn.", "bn.bn."), ("conv.weight", "conv.conv.weight")):
        if old in key and key.replace(old, new) in expected:
            return key.replace(old, new)
    return key


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


# ---------------------------------------------------------------------- import


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an OFA ``.pth`` (a bare state dict or ``{"state_dict": ...}``),
    loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise OFAImportError(f"checkpoint {str(path)!r} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or not a torch file
        raise OFAImportError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise OFAImportError(f"{path}: expected a state dict or {{'state_dict': ...}}, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise OFAImportError(f"{path}: entries {bad[:5]} are not tensors; expected a state dict of tensors")
    return obj


def supernet_from_ofa_state(state: dict[str, torch.Tensor], config: OFAConfig, source: str = "checkpoint",
                            resolutions: Sequence[int] | None = None) -> OFASupernet:
    """A cimnas supernet holding the tensors of an OFA state dict (all checks before any copy);
    ``resolutions`` replaces the space's resolution choices (OFA nets are fully convolutional)."""
    space = ofa_space(config)
    if resolutions:
        space = space.replace(resolution_choices=tuple(sorted({int(r) for r in resolutions})))
    with torch.random.fork_rng(devices=[]):
        model = OFASupernet(space)
    mapping = key_map(model)
    target = model.state_dict()
    expected = set(mapping)
    found = {}
    for key, value in state.items():
        found.setdefault(_normalise_key(key, expected), (key, value))
    problems = []
    unknown = sorted(k for k in found if k not in expected)
    if unknown:
        problems.append(f"unknown tensors {[found[k][0] for k in unknown][:8]}"
                        f"{' (+%d more)' % (len(unknown) - 8) if len(unknown) > 8 else ''}")
    missing = sorted(k for k in expected if k not in found and not k.endswith("num_batches_tracked"))
    if missing:
        problems.append(f"missing tensors {[(k, list(target[mapping[k]].shape)) for k in missing[:8]]}"
                        f"{' (+%d more)' % (len(missing) - 8) if len(missing) > 8 else ''}")
    for key in mapping:  # in network order
        if key not in found:
            continue
        name, value = found[key]
        want = target[mapping[key]]
        if tuple(value.shape) != tuple(want.shape):
            problems.append(f"tensor {name!r}: expected shape {list(want.shape)}, found {_shape(value)}")
    if problems:
        raise OFAImportError(f"{source} does not fit {OFA_CLASSES[config.family]}"
                             f"({', '.join(f'{k}={v}' for k, v in config.constructor_kwargs().items())}): "
                             + "; ".join(problems[:12]) + (f"; (+{len(problems) - 12} more)" if len(problems) > 12 else ""))
    for key in expected & set(found):
        target[mapping[key]] = found[key][1].to(target[mapping[key]].dtype)
    model.load_state_dict(target, strict=True)
    return model


def import_ofa(checkpoint: str | os.PathLike, family: str, out: str | os.PathLike | None = None,
               width_mult: float | None = None, ks: Sequence[int] | None = None,
               expand: Sequence[float] | None = None, depth: Sequence[int] | None = None,
               num_classes: int | None = None, resolutions: Sequence[int] | None = None) -> OFASupernet:
    """Read an OFA checkpoint, map it into a cimnas supernet and (when ``out`` is given) write
    it with :func:`~cimnas.models.supernet.save_supernet` (atomic; nothing is written on error).
    Unset options take the released networks' values (:data:`_DEFAULTS`); ``num_classes``
    defaults to the checkpoint's classifier, ``resolutions`` to the space's."""
    state = read_checkpoint(checkpoint)
    if num_classes is None:
        cls = [v for k, v in state.items() if re.search(r"classifier\.linear\.(linear\.)?weight$", k)]
        num_classes = int(cls[0].shape[0]) if len(cls) == 1 and cls[0].dim() == 2 else 1000
    config = OFAConfig.default(family, width_mult=width_mult, ks=tuple(ks) if ks else None,
                               expand=tuple(expand) if expand else None, depth=tuple(depth) if depth else None,
                               num_classes=num_classes)
    model = supernet_from_ofa_state(state, config, source=str(checkpoint), resolutions=resolutions)
    if out is not None:
        save_supernet(model, out)
    return model


# ---------------------------------------------------------------------- export back


def ofa_state_dict(model: OFASupernet) -> dict[str, torch.Tensor]:
    """The OFA state dict of a cimnas supernet of an OFA-representable space; the network
    ``ofa`` builds from :meth:`OFAConfig.constructor_kwargs` loads it with ``strict=True``."""
    config_of_space(model.space)
    state = model.state_dict()
    return {ok: state[ck].detach().cpu().clone() for ok, ck in key_map(model).items()}


def export_ofa(model: OFASupernet | str | os.PathLike, out: str | os.PathLike) -> tuple[Path, OFAConfig]:
    """Write ``{"state_dict": ...}`` (how OFA distributes its supernets) atomically; returns the
    path and the OFA configuration to construct the network with."""
    if not isinstance(model, OFASupernet):
        model = load_supernet(model)
    config = config_of_space(model.space)
    state = ofa_state_dict(model)
    return atomic_torch_save(out, {"state_dict": state}), config


# ---------------------------------------------------------------------- architectures


def arch_from_ofa(space: SearchSpace, ks: Sequence[int] | int, e: Sequence[float] | float,
                  d: Sequence[int] | int, resolution: int | None = None) -> Architecture:
    """The cimnas :class:`Architecture` of OFA's ``set_active_subnet(ks, e, d)`` (lists per
    block / per stage as OFA takes them; ResNet: ``d`` has the stem entry first, which must be
    the largest (cimnas does not skip the stem), and ``ks`` is ignored)."""
    nb, ns = space.num_blocks, space.num_stages
    es = [e] * nb if isinstance(e, (int, float)) else list(e)
    resnet = space.block_type == "bottleneck"
    if resnet:
        ds = [d] * (ns + 1) if isinstance(d, int) else list(d)
        if len(ds) != ns + 1:
            raise SpaceError(f"d has {len(ds)} entries; OFA-ResNet takes {ns + 1} (stem + stages)")
        extra_max = max(s.max_depth - b for s, b in zip(space.stages, RESNET_BASE_DEPTHS))
        if ds[0] != extra_max:
            raise SpaceError(f"d[0]={ds[0]} (stem skip) is not allowed; allowed values: [{extra_max}] "
                             "(cimnas does not skip the middle stem conv)")
        depths = [b + x for b, x in zip(RESNET_BASE_DEPTHS, ds[1:])]
        kernels = [space.kernel_choices[0]] * nb
        bases = space.block_out_channels
    else:
        ds = [d] * ns if isinstance(d, int) else list(d)
        if len(ds) != ns:
            raise SpaceError(f"d has {len(ds)} entries; the space has {ns} stages")
        depths = [min(x, s.max_depth) for x, s in zip(ds, space.stages)]
        kernels = [ks] * nb if isinstance(ks, int) else list(ks)
        bases = space.block_in_channels
    if len(es) != nb:
        raise SpaceError(f"e has {len(es)} entries; the space has {nb} blocks")
    hidden = [make_divisible(round(c * r), 8) for c, r in zip(bases, es)]
    res = max(space.resolution_choices) if resolution is None else resolution
    return Architecture(depths=depths, kernels=kernels, hidden=hidden, resolution=res).validate(space)


def arch_to_ofa(space: SearchSpace, arch: Architecture) -> dict[str, list]:
    """OFA's ``set_active_subnet`` arguments of a cimnas architecture (``ks``, ``e``, ``d``;
    ResNet also ``w``, the largest width everywhere). A hidden width no OFA expand ratio of the
    space gives (APQ's fine-grained widths) raises :class:`OFAImportError`."""
    arch.validate(space)
    config = config_of_space(space)
    resnet = space.block_type == "bottleneck"
    bases = space.block_out_channels if resnet else space.block_in_channels
    e = []
    for b, (c, h) in enumerate(zip(bases, arch.hidden)):
        ratios = [r for r in config.expand if make_divisible(round(c * r), 8) == h]
        if not ratios:
            raise OFAImportError(f"hidden[{b}]={h} is no OFA expand ratio of {c} channels; allowed values: "
                                 f"{sorted({make_divisible(round(c * r), 8) for r in config.expand})}")
        e.append(_plain(ratios[0]))
    if resnet:
        extra_max = max(config.depth)
        d = [extra_max] + [x - b for x, b in zip(arch.depths, RESNET_BASE_DEPTHS)]
        return {"d": d, "e": e, "w": [2] * (space.num_stages + 2)}
    return {"ks": list(arch.kernels), "e": e, "d": list(arch.depths)}


# ---------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cimnas.models.ofa_import`` (import by default, ``--to-ofa`` to export)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="python -m cimnas.models.ofa_import",
                            description="Import an Once-for-All checkpoint as a cimnas supernet, or export back.")
    parser.add_argument("--checkpoint", type=str | None, default=None, help="OFA .pth to import")
    parser.add_argument("--family", type=str | None, default=None, help=f"one of {list(FAMILIES)}")
    parser.add_argument("--width-mult", type=float | None, default=None)
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="kernel list, e.g. 3 5 7")
    parser.add_argument("--expand", type=float, nargs="+", default=None, help="expand-ratio list, e.g. 3 4 6")
    parser.add_argument("--depth", type=int, nargs="+", default=None,
                        help="depth list, e.g. 2 3 4 (ResNet50: extra blocks 0 1 2)")
    parser.add_argument("--num-classes", type=int | None, default=None)
    parser.add_argument("--resolutions", type=int, nargs="+", default=None,
                        help="input resolutions of the space (default: the preset's, e.g. 224 or 128..224)")
    parser.add_argument("--to-ofa", action="store_true", help="export --supernet as an OFA state dict")
    parser.add_argument("--supernet", type=str | None, default=None, help="cimnas supernet file (with --to-ofa)")
    parser.add_argument("--out", type=str, required=True)
    args = parser.parse_args(argv)
    if args.to_ofa:
        if args.supernet is None:
            parser.error("--to-ofa needs --supernet FILE")
        path, config = export_ofa(args.supernet, args.out)
        kwargs = ", ".join(f"{k}={v!r}" for k, v in config.constructor_kwargs().items())
        print(f"wrote {path}: load with ofa's {OFA_CLASSES[config.family]}({kwargs}).load_state_dict("
              f"torch.load({str(path)!r})['state_dict'], strict=True)")
        return 0
    if args.checkpoint is None or args.family is None:
        parser.error("import needs --checkpoint FILE and --family (or --to-ofa --supernet FILE)")
    model = import_ofa(args.checkpoint, args.family, args.out, args.width_mult, args.ks, args.expand, args.depth,
                       args.num_classes, args.resolutions)
    print(f"wrote {args.out}: space {model.space.name!r}, "
          f"{sum(p.numel() for n, p in model.named_parameters() if '.input_quantizer.' not in n):,} parameters")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["FAMILIES", "OFAConfig", "OFAImportError", "ofa_space", "config_of_space", "ofa_key", "key_map",
           "read_checkpoint", "supernet_from_ofa_state", "import_ofa", "ofa_state_dict", "export_ofa",
           "arch_from_ofa", "arch_to_ofa", "main"]
