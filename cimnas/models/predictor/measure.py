"""Measure (architecture, quantization policy) -> held-out top-1 records for the predictor.

    python -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist.yaml

For sample index ``i`` (``0 <= i < num_samples``) a design is drawn from a generator seeded with
``(seed, i)`` alone, so the set of designs does not depend on sharding or on interruptions. Each
design is made active on the supernet, its BN statistics are recalibrated on a fixed set of
training images (OFA: 2,000 in batches of 200) and its top-1 is measured on the data module's
``val`` split (held out of supernet training). Records go to an append-only JSONL file (see
:mod:`records`): a rerun skips every index already present and never writes one twice.

Ranks (Lightning Fabric: ``accelerator`` / ``devices`` / ``num_nodes``): rank ``r`` of ``W``
takes indices ``r::W`` and appends to ``<output>.rank<r>.jsonl``; at the end rank 0 merges the
shards into ``<output>`` (atomic rewrite, sorted by index) and removes them.

Full-precision records (``quantized: false``) have ``policy: null``: the supernet runs in float.
Quantized records draw per-block bit widths uniformly from the space's ``bit_choices``; the
accuracy is that of the fake-quantized subnet right after BN recalibration (no per-sample QAT:
evaluation only, like OFA's full-precision data; APQ fine-tuned each sample for ~0.2 GPU-h,
which a CPU default cannot afford).

Each record also carries ``accuracy_halves``: the top-1 on the first and on the second half of
the evaluation images (same BN calibration), from which
:func:`cimnas.models.predictor.diagnose.diagnose` bounds the label-noise ceiling of any predictor
at no extra cost (:mod:`agreement` measures the exact ceiling with independent calibrations).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from cimnas.data.splits import SplitDataModule
from cimnas.models.predictor.design_sets import DESIGN_SETS, design_at, set_size
from cimnas.models.predictor.records import RecordWriter, design_key, read_records, write_records_atomic
from cimnas.space import Architecture, QuantPolicy, SearchSpace

Evaluator = Callable[[Architecture, "QuantPolicy | None"], "float | dict[str, Any]"]
"""``(arch, policy)`` -> top-1, or a dict with ``accuracy`` and further record fields."""


def sample_design(space: SearchSpace, seed: int, index: int, quantized: bool) -> tuple[Architecture, QuantPolicy | None]:
    """The design of sample ``index``: uniform over the space, from a generator seeded by
    ``(seed, index)`` only (the ``uniform`` set of :mod:`design_sets`)."""
    return design_at(space, "uniform", seed, index, quantized)


def shard_path(output: str | os.PathLike, rank: int, world_size: int) -> Path:
    output = Path(output)
    if world_size == 1:
        return output
    return output.with_name(f"{output.stem}.rank{rank}{output.suffix}")


def _existing(paths: Iterable[Path]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for p in paths:
        for r in read_records(p):
            out.setdefault(int(r["index"]), r)
    return out


def measure_shard(evaluate: Evaluator, space: SearchSpace, output: str | os.PathLike, num_samples: int,
                  seed: int = 0, quantized: bool = True, rank: int = 0, world_size: int = 1,
                  extra: dict[str, Any] | None = None, log: Callable[[str], None] | None = print,
                  designs: str = "uniform", file_designs: list | None = None) -> int:
    """Measure the indices ``rank::world_size`` of ``range(num_samples)`` that are not yet in
    ``output`` or this rank's shard; returns the number of records written now. ``designs``:
    which set the indices address (:mod:`~cimnas.models.predictor.design_sets`; ``file`` reads
    ``file_designs``); a finite set caps ``num_samples`` at its size.

    A record already present for an index must describe the same design (same ``seed``, space
    and ``quantized``), otherwise this raises instead of mixing two data sets in one file."""
    if designs not in DESIGN_SETS:
        raise ValueError(f"designs={designs!r} is not allowed; allowed values: {list(DESIGN_SETS)}")
    size = set_size(space, designs, quantized, len(file_designs) if file_designs is not None else None)
    if size is not None and num_samples > size:
        if log is not None:
            log(f"num_samples={num_samples} capped at the {designs!r} set's {size} designs")
        num_samples = size
    if num_samples < 0:
        raise ValueError(f"num_samples={num_samples} must be >= 0")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    output = Path(output)
    shard = shard_path(output, rank, world_size)
    done = _existing({output, shard})
    todo = []
    for i in range(rank, num_samples, world_size):
        arch, policy = design_at(space, designs, seed, i, quantized, file_designs=file_designs)
        key = design_key(arch, policy)
        if i in done:
            if done[i].get("designs", "uniform") != designs:
                raise ValueError(f"{output}: record index {i} is of the {done[i].get('designs', 'uniform')!r} design "
                                 f"set, this run measures {designs!r}; use another output file")
            if done[i]["key"] != key:
                raise ValueError(f"{output}: record index {i} holds another design than seed={seed}, "
                                 f"space={space.name!r}, quantized={quantized} draws; use another output file")
            for field in ("supernet_sha256", "calibration_images", "eval_images", "calibration_seed", "eval_skip"):
                if field in (extra or {}) and field in done[i] and done[i][field] != extra[field]:
                    raise ValueError(f"{output}: record index {i} was measured with {field}={done[i][field]!r}, "
                                     f"this run has {field}={extra[field]!r}; use another output file")
            continue
        todo.append((i, arch, policy, key))
    written = 0
    start = time.perf_counter()
    with RecordWriter(shard) as writer:
        for n, (i, arch, policy, key) in enumerate(todo, 1):
            t0 = time.perf_counter()
            result = evaluate(arch, policy)
            fields = dict(result) if isinstance(result, dict) else {"accuracy": result}
            accuracy = float(fields.pop("accuracy"))
            record = {"index": i, "key": key, "space": space.name, "seed": seed, "designs": designs,
                      "arch": arch.to_dict(), "policy": None if policy is None else policy.to_dict(),
                      "accuracy": accuracy, **fields, "eval_s": round(time.perf_counter() - t0, 3), **(extra or {})}
            writer.write(record)
            written += 1
            if log is not None and (n % 10 == 0 or n == len(todo)):
                rate = n / (time.perf_counter() - start)
                log(f"[rank {rank}] {n}/{len(todo)} new records ({rate:.2f}/s), last acc {accuracy:.4f}")
    return written


def merge_shards(output: str | os.PathLike, world_size: int) -> list[dict[str, Any]]:
    """Merge ``output`` and its rank shards into ``output`` (sorted by index, one record per
    index; atomic rewrite), then delete the shards."""
    output = Path(output)
    shards = [shard_path(output, r, world_size) for r in range(world_size)] if world_size > 1 else []
    merged = _existing([output, *shards])
    records = [merged[i] for i in sorted(merged)]
    if world_size > 1 or not output.exists():
        write_records_atomic(output, records)
        for s in shards:
            if s.exists():
                s.unlink()
    return records


def reliability_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".reliability.json")


def write_reliability(output: str | os.PathLike, records: list[dict[str, Any]]) -> dict | None:
    """Record the label reliability of a data set beside it (``<output stem>.reliability.json``,
    atomic; :func:`~cimnas.models.predictor.agreement.split_half_reliability`, an upper bound)
    and print it; None (nothing written) with fewer than 10 records carrying halves."""
    import json

    from cimnas.io import atomic_write_text
    from cimnas.models.predictor.agreement import split_half_reliability

    result = split_half_reliability(records)
    if result is None:
        return None
    atomic_write_text(reliability_path(output), json.dumps(result, indent=2))
    print(f"{output}: label reliability (split-half, upper bound) {result['label_reliability']:.3f} on "
          f"{result['label_images']} images, Kendall ceiling {result['ceiling_kendall']:.3f} ({result['records']} records)")
    return result


class SupernetEvaluator:
    """``(arch, policy) -> {"accuracy", "accuracy_halves"}`` on fixed batches: set active,
    recalibrate BN, evaluate the first and the second half of the evaluation batches (split at
    the first batch boundary at or past the middle image; with a single batch there are no
    halves)."""

    def __init__(self, supernet: torch.nn.Module, calibration_batches: list[torch.Tensor],
                 eval_batches: list[tuple[torch.Tensor, torch.Tensor]]):
        if not calibration_batches or not eval_batches:
            raise ValueError("SupernetEvaluator needs at least one calibration and one evaluation batch")
        self.supernet = supernet
        self.calibration_batches = calibration_batches
        self.eval_batches = eval_batches

    def __call__(self, arch: Architecture, policy: QuantPolicy | None) -> float:
        from cimnas.models.supernet import evaluate_accuracy, recalibrate_bn

        self.supernet.set_active(arch, policy)
        recalibrate_bn(self.supernet, self.calibration_batches, sync_distributed=False)
        sizes = [len(y) for _, y in self.eval_batches]
        total = sum(sizes)
        # first batch boundary at or past the middle image
        cut = next(i + 1 for i, end in enumerate(itertools.accumulate(sizes)) if 2 * end >= total)
        halves = [self.eval_batches[:cut], self.eval_batches[cut:]]
        counts = [sum(sizes[:cut]), sum(sizes[cut:])]
        accs = [evaluate_accuracy(self.supernet, h) if h else None for h in halves]
        accuracy = sum(round(a * n) for a, n in zip(accs, counts) if a is not None) / total  # exact counts
        if None in accs:
            return {"accuracy": accuracy}
        return {"accuracy": accuracy, "accuracy_halves": accs, "half_images": counts}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def measure(
    supernet: str,
    data: SplitDataModule,
    output: str,
    num_samples: int = 200,
    quantized: bool = True,
    seed: int = 0,
    calibration_images: int = 2000,
    calibration_batch_size: int = 200,
    eval_images: int | None = None,
    eval_batch_size: int = 500,
    calibration_seed: int | None = None,
    eval_skip: int = 0,
    accelerator: str = "cpu",
    devices: int = 1,
    num_nodes: int = 1,
    num_threads: int | None = 1,
    channels_last: bool = True,
    designs: str = "uniform",
    designs_file: str | None = None,
) -> str:
    """Measure ``num_samples`` designs of the supernet at ``supernet`` into ``output``.

    Args:
        supernet: supernet checkpoint (``save_supernet`` file or Lightning checkpoint).
        data: a data module of the project (``cimnas.data.*DataModule``): calibration images
            come from its training split, accuracy from its ``val`` split.
        output: the JSONL record file (appended to; resumable).
        num_samples: designs to measure (indices ``0..num_samples-1``).
        quantized: draw per-block bit widths (quantized records) or measure in float.
        seed: design-sampling seed (a file holds one seed's designs).
        calibration_images / calibration_batch_size: BN recalibration set (OFA: 2000 / 200).
        eval_images: first N images of the ``val`` split (None: all of it).
        eval_batch_size: evaluation batch size.
        calibration_seed: seed of the calibration subset (None: ``seed``).
        eval_skip: skip the first N images of the ``val`` split (with ``calibration_seed``:
            an independent re-measurement of the same designs, for the label-noise ceiling).
        accelerator / devices / num_nodes: Lightning Fabric launch (one shard per rank).
        num_threads: torch CPU threads per rank (None: leave torch's default).
        channels_last: evaluate in NHWC layout (same accuracies up to float rounding; 1.4-2.7x
            faster on CPU).
        designs: which designs the indices address: ``uniform`` (default), ``stratified`` (size
            strata), ``grid`` (the 27 uniform designs), ``extremes`` or ``file``
            (``designs_file``: a search's ``population.csv`` / ``pareto.json`` / ``best.json``);
            see :mod:`cimnas.models.predictor.design_sets`.
    """
    import lightning as L

    from cimnas.inputs import check_device, refuse_shipped_output
    from cimnas.models.supernet import load_supernet

    refuse_shipped_output(output, "output")
    if designs not in DESIGN_SETS:
        raise ValueError(f"designs={designs!r} is not allowed; allowed values: {list(DESIGN_SETS)}")
    if (designs == "file") != (designs_file is not None):
        raise ValueError("designs_file is needed with designs='file' and only then")
    if accelerator in ("gpu", "cuda"):
        check_device("cuda", "accelerator")
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    fabric = L.Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    net = load_supernet(supernet, map_location="cpu").to(fabric.device).eval()
    if channels_last:
        net.use_channels_last()
    if hasattr(data, "prepare_data") and rank == 0:
        data.prepare_data()
    fabric.barrier()
    data.setup("validate")
    calibration_seed = seed if calibration_seed is None else calibration_seed
    calib = data.calibration_batches(calibration_images, calibration_batch_size, seed=calibration_seed)
    eval_batches, taken = [], 0
    if not 0 <= eval_skip < len(data.val_set):
        raise ValueError(f"eval_skip={eval_skip} must be in [0, {len(data.val_set)})")
    val_set = torch.utils.data.Subset(data.val_set, range(eval_skip, len(data.val_set)))
    loader = torch.utils.data.DataLoader(val_set, batch_size=eval_batch_size, shuffle=False)
    for x, y in loader:
        if eval_images is not None and taken >= eval_images:
            break
        if eval_images is not None and taken + len(y) > eval_images:
            x, y = x[: eval_images - taken], y[: eval_images - taken]
        eval_batches.append((x, y))
        taken += len(y)
    extra = {"supernet_sha256": file_sha256(supernet)[:16], "calibration_images": sum(len(c) for c in calib),
             "eval_images": taken, "eval_split": "val", "calibration_seed": calibration_seed,
             "eval_skip": eval_skip}
    # Initialise any activation clip the supernet's training never set, on every rank alike
    # (quantizers init lazily, with an all-reduce, on their first quantized input): with the
    # largest subnet at the widest bits, so no record depends on which design came first.
    with torch.no_grad():
        net.set_active(Architecture.largest(net.space), QuantPolicy.uniform(net.space, max(net.space.bit_choices)))
        net(calib[0].to(fabric.device))
    evaluator = SupernetEvaluator(net, [c.to(fabric.device) for c in calib],
                                  [(x.to(fabric.device), y.to(fabric.device)) for x, y in eval_batches])
    file_designs = None
    if designs_file is not None:
        from cimnas.models.design import load_designs

        file_designs = load_designs(designs_file, net.space)
        extra["designs_file"] = str(designs_file)
    written = measure_shard(evaluator, net.space, output, num_samples, seed, quantized, rank, world, extra,
                            designs=designs, file_designs=file_designs)
    fabric.barrier()
    if rank == 0:
        records = merge_shards(output, world)
        print(f"{output}: {len(records)} records ({written} new on rank 0, world size {world})")
        write_reliability(output, records)
    fabric.barrier()
    return output


def main(args: list[str] | None = None) -> None:
    from jsonargparse import CLI

    from jsonargparse import ArgumentParser

    from cimnas.inputs import check_config_files, one_line_errors

    import sys

    check_config_files(sys.argv[1:] if args is None else args)
    CLI(measure, args=args, as_positional=False, allow_abbrev=False, parser_class=one_line_errors(ArgumentParser))


if __name__ == "__main__":
    import sys

    from cimnas.inputs import run_user_main

    sys.exit(run_user_main(main))


__all__ = ["measure", "measure_shard", "write_reliability", "reliability_path", "merge_shards", "sample_design", "shard_path", "SupernetEvaluator"]
