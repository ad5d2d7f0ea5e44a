"""Once-for-All networks in OFA's own terms, and their cimnas search spaces and architectures.

:class:`OFAConfig` holds the constructor arguments of an OFA network (``OFAProxylessNASNets``,
``OFAMobileNetV3``, ``OFAResNets`` of mit-han-lab/once-for-all); :func:`ofa_space` gives the cimnas
:class:`~cimnas.space.SearchSpace` of its supernet (a shipped preset when one matches) and
:func:`config_of_space` the way back. :func:`arch_from_ofa` / :func:`arch_to_ofa` translate OFA's
``set_active_subnet(ks, e, d)`` arguments. Only :mod:`cimnas.space` is needed (no network is
built here); the checkpoint import and export are :mod:`cimnas.models.ofa_import`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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


__all__ = ["FAMILIES", "OFA_CLASSES", "RESNET_BASE_DEPTHS", "OFAConfig", "OFAImportError", "arch_from_ofa",
           "arch_to_ofa", "config_of_space", "ofa_space"]
