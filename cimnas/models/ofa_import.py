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

Nothing here imports the ``ofa`` package; it is only the reference of the tests. The OFA
configuration, its space and architectures are :mod:`cimnas.models.ofa_config`; the key renaming is
:mod:`cimnas.models.ofa_keys`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from cimnas.io import atomic_torch_save
from cimnas.models.ofa_config import FAMILIES, OFA_CLASSES, OFAConfig, OFAImportError, config_of_space, ofa_space
from cimnas.models.ofa_keys import key_map, normalise_key
from cimnas.models.supernet import OFASupernet, load_supernet, save_supernet


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
        found.setdefault(normalise_key(key, expected), (key, value))
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
    Unset options take the released networks' values (``cimnas.models.ofa_config._DEFAULTS``); ``num_classes``
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


__all__ = ["export_ofa", "import_ofa", "main", "ofa_state_dict", "read_checkpoint", "supernet_from_ofa_state"]
