"""ImageNet-style evaluation of an (imported) supernet: BN-recalibrated subnet accuracy on an
ImageFolder tree, and the per-slot layer value statistics the search's cost model reads.

:mod:`cimnas.models.supernet_eval` and ``python -m cimnas.search.value_stats`` are wired to the
embedded Fashion-MNIST data; this job does the same steps (``set_active`` -> BN recalibration on
un-augmented training images -> top-1; :func:`cimnas.search.value_stats.measure_value_stats`) on
``root/train`` / ``root/val`` class folders, each subnet at its own resolution (resize to
``r / 0.875``, centre crop ``r``, as OFA evaluates)::

    python -m cimnas.experiments.ofa_eval --supernet checkpoints/imagenet/ofa_mbv3.pt --root /data/imagenet \\
        --subnets '[largest, median, smallest]' --archs subnets.json --value_stats_out value_stats.pt \\
        --out results/ofa_mbv3_eval.json

``archs``: a JSON list of architectures, each either cimnas's (``depths``, ``kernels``,
``hidden``, ``resolution``) or OFA's ``set_active_subnet`` form (``ks``, ``e``, ``d``, optional
``image_size``; see :func:`cimnas.models.ofa_config.arch_from_ofa`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from jsonargparse import auto_cli

from cimnas.data.image_folder import ImageFolderDataModule
from cimnas.io import atomic_torch_save, atomic_write_json
from cimnas.models.ofa_config import arch_from_ofa
from cimnas.models.supernet import evaluate_accuracy, load_supernet, recalibrate_bn
from cimnas.space import Architecture, SearchSpace
from cimnas.search.value_stats import measure_value_stats  # the search owns the per-slot format

NAMED = {"largest": Architecture.largest, "median": Architecture.median, "smallest": Architecture.smallest}


def _arch(space: SearchSpace, entry: dict[str, Any], where: str) -> Architecture:
    if {"ks", "e", "d"} <= set(entry):
        return arch_from_ofa(space, entry["ks"], entry["e"], entry["d"], entry.get("image_size"))
    try:
        return Architecture.from_dict(entry).validate(space)
    except Exception as err:
        raise ValueError(f"{where}: {err}") from err


def evaluate_imagefolder(
    supernet: str,
    root: str,
    subnets: list[str] = ["largest", "median", "smallest"],
    archs: str | None = None,
    split: str = "test",
    calib_images: int = 2000,
    calib_batch_size: int = 200,
    eval_images: int | None = None,
    eval_batch_size: int = 250,
    val_size: int = 10000,
    num_workers: int = 8,
    device: str = "auto",
    value_stats_out: str | None = None,
    value_stats_images: int = 8,
    seed: int = 0,
    out: str | None = None,
) -> dict[str, Any]:
    """Top-1 (fraction) of each subnet (``subnets`` by name, then every entry of ``archs``),
    float, after BN recalibration on ``calib_images`` training images; ``split``: ``test`` =
    the ``val/`` folder (official validation set), ``val`` = the ``val_size`` images held out of
    ``train/``. ``value_stats_out``: also write the cost model's value statistics (largest
    subnet, 8-bit, ``value_stats_images`` held-out images, BN recalibrated on at most 256
    training images, on the CPU). Writes JSON to ``out``."""
    if split not in ("test", "val"):
        raise ValueError(f"split={split!r} is not allowed; allowed values: ['test', 'val']")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    torch.manual_seed(seed)
    net = load_supernet(supernet).to(dev)
    space = net.space
    todo: list[tuple[str, Architecture]] = []
    for name in subnets:
        if name not in NAMED:
            raise ValueError(f"subnets entry {name!r} is not allowed; allowed values: {sorted(NAMED)}")
        todo.append((name, NAMED[name](space)))
    if archs is not None:
        entries = json.loads(Path(archs).read_text())
        if not isinstance(entries, list):
            raise ValueError(f"{archs}: expected a JSON list of architectures, found {type(entries).__name__}")
        todo += [(f"arch{i}", _arch(space, e, f"{archs}[{i}]")) for i, e in enumerate(entries)]

    modules: dict[int, ImageFolderDataModule] = {}

    def data(resolution: int) -> ImageFolderDataModule:
        if resolution not in modules:
            modules[resolution] = ImageFolderDataModule(
                root, batch_size=eval_batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                resolution=resolution, channels=space.in_channels, val_size=val_size,
                val_subset=eval_images if split == "val" else None,
                test_subset=eval_images if split == "test" else None, seed=seed)
        return modules[resolution]

    results: dict[str, Any] = {"supernet": supernet, "space": space.name, "split": split, "subnets": {}}
    for name, arch in todo:
        start = time.perf_counter()
        dm = data(arch.resolution)
        net.set_active(arch, None)
        recalibrate_bn(net, dm.calibration_batches(calib_images, calib_batch_size, seed=seed))
        loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
        top1 = evaluate_accuracy(net, loader)
        results["subnets"][name] = {"architecture": arch.to_dict(), "top1": top1}
        print(f"{name:10s} r={arch.resolution:3d} top-1 {top1:.4f} ({time.perf_counter() - start:.1f} s)", flush=True)
    if value_stats_out is not None:
        dm = data(max(space.resolution_choices))
        calib = torch.cat(dm.calibration_batches(min(calib_images, 256), calib_batch_size, seed=seed))  # on CPU
        images = torch.cat([x for x, _ in dm.val_dataloader()])[:value_stats_images]
        stats = measure_value_stats(net.cpu(), images, recalibration=calib)
        path = atomic_torch_save(value_stats_out, stats)
        results["value_stats"] = str(path)
        print(f"wrote {path}: {tuple(stats['input_hist'].shape)} input / weight histograms", flush=True)
    if out:
        atomic_write_json(out, results)
    return results


if __name__ == "__main__":  # pragma: no cover
    auto_cli(evaluate_imagefolder, as_positional=False)


__all__ = ["evaluate_imagefolder"]
