"""Per-slot layer value statistics for the search's cost model (``value_stats.pt``).

The search prices every candidate with ``cimnas.search.lowering.workload_from_arch(space, arch,
value_stats=...)``, which takes one 31-bin input and weight histogram per layer *slot* of the
space (``[L, 31]`` each, in ``cimnas.space.layers.layer_plan(space)`` order). This module measures
them once on the trained supernet: the largest subnet (every slot active) at the space's largest
bit width runs calibration images, ``workload_from_module`` records each layer's histograms, and
the histograms are averaged over the images.

    python -m cimnas.search.value_stats --supernet cimnas/artifacts/fmnist/supernet.pt \\
        [--out runs/value_stats/<timestamp>/value_stats.pt] [--images 8]

The output never goes into the shipped artifacts; ``python -m cimnas.promote --kind value_stats``
copies it over the default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser

from cimnas.space import Architecture, QuantPolicy, SearchSpace

VALUE_STATS_FORMAT = "cimnas.value_stats/1"


@torch.no_grad()
def measure_value_stats(supernet: Any, images: torch.Tensor, recalibration: torch.Tensor | None = None) -> dict[str, Any]:
    """``{"input_hist": [L, 31], "weight_hist": [L, 31], ...}`` of the largest subnet of
    ``supernet`` over ``images [N, C, H, W]``."""
    from cimnas.models.workload_trace import workload_from_module
    from cimnas.space.layers import layer_plan
    from cimnas.models.supernet import recalibrate_bn

    space: SearchSpace = supernet.space
    arch = Architecture.largest(space)
    policy = QuantPolicy.uniform(space, max(space.bit_choices))
    supernet.set_active(arch, policy)
    if recalibration is not None:
        recalibrate_bn(supernet, [recalibration])
    net = supernet.export_subnet(arch, policy).eval()
    wl = workload_from_module(net, images)  # histograms over all calibration images
    n_slots = len(layer_plan(space).names)
    if wl.num_layers != n_slots:
        raise ValueError(f"the largest subnet ran {wl.num_layers} layers but space {space.name!r} has "
                         f"{n_slots} layer slots; the slot order contract of cimnas.hw.workload is broken")
    input_hist, weight_hist = wl.input_hist[0].float(), wl.weight_hist[0].float()
    return {
        "format": VALUE_STATS_FORMAT, "space": space.name,
        "input_hist": input_hist / input_hist.sum(-1, keepdim=True),
        "weight_hist": weight_hist / weight_hist.sum(-1, keepdim=True),
        "num_images": int(images.shape[0]),
    }


NUM_BINS = 31


def check_value_stats(data: Any, path: str | os.PathLike, space: SearchSpace | None = None) -> dict[str, torch.Tensor]:
    """Validate a loaded statistics dict: both histograms ``[L, 31]`` (L = the space's layer
    slots), finite, non-negative, each row summing to 1; the recorded space must match."""
    from cimnas.inputs import InputError, check_tensor, require_mapping

    require_mapping(data, path, "value statistics", ("input_hist", "weight_hist"))
    if space is not None and data.get("space", space.name) != space.name:
        raise InputError(f"value statistics file {str(path)!r}: field 'space' is {data.get('space')!r}, but the "
                         f"search space is {space.name!r}")
    slots = None
    if space is not None:
        from cimnas.space.layers import layer_plan

        slots = len(layer_plan(space).names)
    for key in ("input_hist", "weight_hist"):
        value = data[key]
        check_tensor(value, path, "value statistics", key, [slots, NUM_BINS])
        if bool((value < 0).any()):
            raise InputError(f"value statistics file {str(path)!r}: tensor {key} has negative entries; expected "
                             "histograms (non-negative, rows summing to 1)")
        sums = value.double().sum(-1)
        if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
            raise InputError(f"value statistics file {str(path)!r}: rows of tensor {key} sum to "
                             f"{float(sums.min()):.4g}..{float(sums.max()):.4g}, expected 1 (normalised histograms)")
    return {k: data[k] for k in ("input_hist", "weight_hist")}


def load_value_stats(path: str | os.PathLike, space: SearchSpace | None = None) -> dict[str, torch.Tensor]:
    """Read a ``value_stats.pt`` file (weights_only) and return the tensors ``workload_from_arch``
    takes; a file of another space or shape fails with one line naming file and tensor."""
    from cimnas.inputs import load_torch_file

    return check_value_stats(load_torch_file(path, "value statistics"), path, space)


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(prog="python -m cimnas.search.value_stats", allow_abbrev=False,
                                 description="Measure per-slot layer value statistics for the search.")
    ap.add_argument("--supernet", default="cimnas/artifacts/fmnist/supernet.pt")
    ap.add_argument("--out", default=None, help="output file (default runs/value_stats/<timestamp>/value_stats.pt)")
    ap.add_argument("--images", type=int, default=8, help="calibration images (held-out split)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import datetime as _dt

    from cimnas.data.fashion_mnist import FashionMNISTDataModule
    from cimnas.inputs import InputError, refuse_shipped_output
    from cimnas.io import atomic_torch_save
    from cimnas.models.supernet import load_supernet

    if args.images <= 0:
        raise InputError(f"--images={args.images} must be a positive number of images")
    if args.out is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        args.out = f"runs/value_stats/{stamp}/value_stats.pt"
    refuse_shipped_output(args.out, "--out")

    supernet = load_supernet(args.supernet)
    space = supernet.space
    dm = FashionMNISTDataModule(batch_size=max(args.images, 64), val_subset=max(args.images, 256),
                                train_subset=256, seed=args.seed, resolution=max(space.resolution_choices),
                                channels=space.in_channels)
    dm.setup("fit")
    images = next(iter(dm.val_dataloader()))[0]
    stats = measure_value_stats(supernet, images[: args.images], recalibration=images)
    out = atomic_torch_save(args.out, stats)
    print(f"wrote {out}: {tuple(stats['input_hist'].shape)} input / weight histograms from {args.images} images")


if __name__ == "__main__":
    import sys

    from cimnas.inputs import run_user_main

    sys.exit(run_user_main(main))
