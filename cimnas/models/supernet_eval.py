"""Accuracy of reference subnets of a trained supernet (largest / median / smallest, float and
low-bit), measured exactly as the predictor measures: ``set_active`` → BN recalibration on
training images → top-1 on the held-out split.

``python -m cimnas.models.supernet_eval --supernet cimnas/artifacts/fmnist/supernet.pt``
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from jsonargparse import auto_cli

from cimnas.data import FashionMNISTDataModule
from cimnas.space import Architecture, QuantPolicy
from cimnas.models.supernet import evaluate_accuracy, load_supernet, recalibrate_bn
from cimnas.io import atomic_write_text


def fmnist_evaluation_inputs(supernet: str, data_dir: str | None = None, val_size: int = 5000,
                             val_subset: int | None = None, calib_images: int = 2000, calib_batch_size: int = 200,
                             eval_batch_size: int = 500, seed: int = 0, channels_last: bool = True):
    """``(supernet in eval mode, BN-calibration batches, held-out batches)`` on the embedded
    Fashion-MNIST split, as the predictor's labels are measured (``val_size`` / ``seed`` must match
    the training data module)."""
    net = load_supernet(supernet)
    if channels_last:
        net.use_channels_last()
    net.eval()
    space = net.space
    dm = FashionMNISTDataModule(data_dir=data_dir, eval_batch_size=eval_batch_size, val_size=val_size,
                                val_subset=val_subset, seed=seed, resolution=max(space.resolution_choices),
                                channels=space.in_channels)
    return net, dm.calibration_batches(calib_images, calib_batch_size, seed=seed), list(dm.val_dataloader())


def evaluate_reference_subnets(
    supernet: str = "cimnas/artifacts/fmnist/supernet.pt",
    data_dir: str | None = None,
    val_size: int = 5000,
    val_subset: int | None = None,
    calib_images: int = 2000,
    calib_batch_size: int = 200,
    eval_batch_size: int = 500,
    bits: list[int] = [8, 4],
    seed: int = 0,
    threads: int = 1,
    channels_last: bool = True,
    out: str | None = None,
) -> dict[str, float]:
    """Top-1 (fraction) of the largest, median and smallest subnets in float and at each of
    ``bits`` bits everywhere searchable (keys ``<subnet>_fp``, ``<subnet>_w<b>a<b>``), on Fashion-MNIST's held-out split (``val_size`` / ``seed`` must
    match the training data module). ``threads``: torch intra-op threads (1 on a shared CPU:
    OpenMP barriers make small convs much slower with more threads than free cores). Writes
    JSON to ``out`` when given. ``channels_last``: NHWC evaluation (faster on CPU)."""
    from cimnas.inputs import refuse_shipped_output

    refuse_shipped_output(out, "out")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net, calib, val = fmnist_evaluation_inputs(supernet, data_dir, val_size, val_subset, calib_images,
                                               calib_batch_size, eval_batch_size, seed, channels_last)
    space = net.space
    results: dict[str, float] = {}
    for name, arch in (("largest", Architecture.largest(space)), ("median", Architecture.median(space)),
                       ("smallest", Architecture.smallest(space))):
        policies = [("fp", None)] + [(f"w{b}a{b}", QuantPolicy.uniform(space, b)) for b in bits]
        for tag, policy in policies:
            start = time.perf_counter()
            net.set_active(arch, policy)
            recalibrate_bn(net, calib)
            results[f"{name}_{tag}"] = evaluate_accuracy(net, val)
            print(f"{name:8s} {tag:6s} top-1 {results[f'{name}_{tag}']:.4f} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(results, indent=2))
    return results


def _one_line_parser() -> type:
    from jsonargparse import ArgumentParser

    from cimnas.inputs import one_line_errors

    return one_line_errors(ArgumentParser)


def main(argv: list[str] | None = None) -> int:
    """``python -m cimnas.models.supernet_eval``; user errors as one line (``--debug``: traceback)."""
    from cimnas.inputs import run_user_main

    return run_user_main(lambda args: auto_cli(evaluate_reference_subnets, args=args, allow_abbrev=False,
                                                 parser_class=_one_line_parser()) and 0, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
