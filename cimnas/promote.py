"""Promote a trained file to a shipped default artifact — the only command that writes there.

    python -m cimnas.promote --kind supernet     --from runs/supernet_fmnist/<ts>/supernet.pt
    python -m cimnas.promote --kind predictor_fp --from runs/predictor_fmnist_fp/<ts>/predictor_fp.pt
    python -m cimnas.promote --kind predictor    --from runs/predictor_fmnist_quant/<ts>/predictor.pt
    python -m cimnas.promote --kind value_stats  --from runs/value_stats/<ts>/value_stats.pt
    python -m cimnas.promote --kind records_quant --from runs/measure_fmnist/predictor_records_quant.jsonl

The candidate is validated (it must load, and be of the target's space), then compared with the
file it would replace by each file's own recorded validation metric:

* ``supernet``: ``meta.val_acc`` — held-out top-1 of the largest subnet, recorded by the
  end-of-fit export (``val/acc``); when either file has none (files exported before metrics were
  recorded) or the two were validated on different numbers of images, both are measured here the
  same way (BN recalibration + held-out top-1 of the largest subnet, ``--eval_images``).
* ``predictor`` / ``predictor_fp`` (APQ-layout MLPs, the transfer pipeline) and ``predictor_rank`` /
  ``predictor_rank_fp`` (the ranking predictors of ``rank_fit``, the default search's accuracy
  source): the recorded held-out Kendall tau (``meta.report[.metrics].kendall``).
* ``value_stats`` / ``records_fp`` / ``records_quant``: no quality metric; only validated.

A worse candidate (or an incumbent whose metric cannot be read) is refused with a message and exit
status 1 unless ``--force``; ``--check`` compares without writing (the artifact scripts check
every file of a set before promoting any, so the defaults never mix two trainings). The copy is atomic (temporary file in the target folder, fsync,
rename). ``--artifacts DIR`` names the artifacts folder (default: the package's
``cimnas/artifacts/<space folder>``); tests promote into temporary copies.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from jsonargparse import ArgumentParser

from cimnas.inputs import InputError, shipped_artifacts_dir

#: kind -> default file name inside the artifacts folder of a space.
KIND_FILES = {
    "supernet": "supernet.pt", "predictor": "predictor.pt", "predictor_fp": "predictor_fp.pt",
    "predictor_rank": "predictor_rank.pt", "predictor_rank_fp": "predictor_rank_fp.pt",
    "value_stats": "value_stats.pt", "records_fp": "predictor_records_fp.jsonl",
    "records_quant": "predictor_records_quant.jsonl",
}
#: space -> folder of cimnas/artifacts/ holding its defaults.
SPACE_FOLDERS = {"apq_mbv2_tiny": "fmnist", "ofa_resnet50_tiny": "fmnist_resnet"}


class PromotionRefused(Exception):
    """The candidate is worse than the file it would replace (or cannot be compared)."""


def _supernet_space(path: Path) -> str:
    from cimnas.models.supernet import load_supernet_record

    return load_supernet_record(path)[0].space.name


def _predictor_space(path: Path, quantized: bool, kind: str | None = None) -> str:
    from cimnas.models.predictor.predictor import AccuracyPredictor

    model = AccuracyPredictor.from_checkpoint(path)
    if model.quantized != quantized:
        want = "quantization-aware" if quantized else "full-precision"
        raise InputError(f"predictor file {str(path)!r} is {'quantization-aware' if model.quantized else 'full-precision'}; "
                         f"--kind {kind or ('predictor' if quantized else 'predictor_fp')} needs a {want} predictor")
    return model.space.name


def _value_stats_space(path: Path) -> str:
    from cimnas.inputs import load_torch_file
    from cimnas.search.value_stats import check_value_stats
    from cimnas.space import get_space

    data = load_torch_file(path, "value statistics")
    name = data.get("space") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise InputError(f"value statistics file {str(path)!r}: field 'space' missing")
    check_value_stats(data, path, get_space(name))
    return name


def _records_space(path: Path, quantized: bool) -> str:
    from cimnas.models.predictor.records import check_records, read_records

    records = read_records(path)
    if not records:
        raise InputError(f"records file {str(path)!r}: no records")
    check_records(records, path, None, quantized)
    spaces = {r.get("space") for r in records}
    if len(spaces) != 1 or None in spaces:
        raise InputError(f"records file {str(path)!r}: field 'space' must be the same in every record, found {sorted(map(str, spaces))}")
    if not quantized and any(r.get("policy") is not None for r in records):
        raise InputError(f"records file {str(path)!r}: holds quantized records; --kind records_fp needs policy null")
    return spaces.pop()


SPACE_OF: dict[str, Callable[[Path], str]] = {
    "supernet": _supernet_space,
    "predictor": lambda p: _predictor_space(p, True),
    "predictor_fp": lambda p: _predictor_space(p, False),
    "predictor_rank": lambda p: _predictor_space(p, True, "predictor_rank"),
    "predictor_rank_fp": lambda p: _predictor_space(p, False, "predictor_rank_fp"),
    "value_stats": _value_stats_space,
    "records_fp": lambda p: _records_space(p, False),
    "records_quant": lambda p: _records_space(p, True),
}


def recorded_metric(kind: str, path: Path) -> tuple[str, float | None, Any]:
    """(metric name, value or None, protocol) recorded in ``path`` (higher is better)."""
    import torch

    from cimnas.inputs import load_torch_file

    if kind == "supernet":
        data = load_torch_file(path, "supernet")
        meta = data.get("meta") or {} if isinstance(data, dict) else {}
        value = meta.get("val_acc")
        return "held-out top-1 of the largest subnet (val/acc)", None if value is None else float(value), meta.get("val_images")
    if kind in ("predictor", "predictor_fp", "predictor_rank", "predictor_rank_fp"):
        data = torch.load(path, map_location="cpu", weights_only=True)
        report = ((data.get("meta") or {}).get("report") or {}) if isinstance(data, dict) else {}
        # the APQ predictor's meta.report.metrics, or the ranking predictor's meta.report (rank_fit)
        value = (report.get("metrics") or report).get("kendall")
        if value is not None and not math.isfinite(float(value)):
            value = None
        return "held-out Kendall tau", None if value is None else float(value), None
    return "", None, None


def measure_supernet_accuracy(path: Path, eval_images: int, calib_images: int = 1000, seed: int = 0) -> float:
    """Held-out top-1 of the largest float subnet after BN recalibration (the supernet_eval protocol)."""
    from cimnas.data import FashionMNISTDataModule
    from cimnas.models.supernet import evaluate_accuracy, load_supernet, recalibrate_bn
    from cimnas.space import Architecture

    net = load_supernet(path)
    space = net.space
    dm = FashionMNISTDataModule(eval_batch_size=500, val_subset=eval_images, seed=seed,
                                resolution=max(space.resolution_choices), channels=space.in_channels)
    net.set_active(Architecture.largest(space), None)
    recalibrate_bn(net, dm.calibration_batches(calib_images, 250, seed=seed))
    return evaluate_accuracy(net, dm.val_dataloader())


def compare(kind: str, candidate: Path, incumbent: Path, eval_images: int) -> str:
    """Raise :class:`PromotionRefused` unless ``candidate`` is at least as good as ``incumbent``;
    returns a one-line account of the comparison."""
    name, new, new_protocol = recorded_metric(kind, candidate)
    if not name:
        return "no quality metric for this kind; validated only"
    _, old, old_protocol = recorded_metric(kind, incumbent)
    if kind == "supernet" and (new is None or old is None or new_protocol != old_protocol):
        print(f"measuring both supernets on {eval_images} held-out images (a recorded val/acc is missing or "
              "was validated on another image count) ...", flush=True)
        new, old = measure_supernet_accuracy(candidate, eval_images), measure_supernet_accuracy(incumbent, eval_images)
        name = f"held-out top-1 of the largest subnet ({eval_images} images, measured now)"
    if new is None:
        raise PromotionRefused(f"{candidate} records no {name}; cannot compare it with {incumbent} (--force to copy anyway)")
    if old is None:
        raise PromotionRefused(f"{incumbent} records no {name}; cannot compare (--force to copy anyway)")
    if new < old:
        raise PromotionRefused(f"{candidate} is worse than the {kind} it would replace: {name} {new:.4f} < {old:.4f} "
                               f"({incumbent}); --force to replace it anyway")
    return f"{name}: {new:.4f} (was {old:.4f})"


def promote(kind: str, source: str | Path, artifacts: str | Path | None = None, space: str | None = None,
            force: bool = False, eval_images: int = 5000, check: bool = False) -> Path:
    """Copy ``source`` over the default ``kind`` artifact of its space (see the module docstring);
    returns the target path. ``check``: validate and compare only, write nothing."""
    if kind not in KIND_FILES:
        raise InputError(f"--kind={kind!r} is not allowed; allowed values: {sorted(KIND_FILES)}")
    src = Path(source)
    if not src.is_file():
        raise FileNotFoundError(f"--from file {str(src)!r} not found")
    found_space = SPACE_OF[kind](src)
    if space is not None and space != found_space:
        raise InputError(f"--from file {str(src)!r} is of space {found_space!r}, not --space={space!r}")
    if artifacts is None:
        if found_space not in SPACE_FOLDERS:
            raise InputError(f"no shipped artifacts folder for space {found_space!r} (known: {sorted(SPACE_FOLDERS)}); "
                             "pass --artifacts DIR")
        folder = shipped_artifacts_dir() / SPACE_FOLDERS[found_space]
    else:
        folder = Path(artifacts)
    target = folder / KIND_FILES[kind]
    if target.exists() and target.resolve() == src.resolve():
        raise InputError(f"--from file {str(src)!r} is the target itself")
    account = "new file"
    if target.exists():
        target_space = SPACE_OF[kind](target)
        if target_space != found_space:
            raise InputError(f"--from file {str(src)!r} is of space {found_space!r}, but {target} is of space "
                             f"{target_space!r}")
        try:
            account = compare(kind, src, target, eval_images)
        except PromotionRefused:
            if not force:
                raise
            account = "forced"
    if check:
        print(f"would promote {src} -> {target} ({account})")
        return target
    from cimnas.io import atomic_write

    atomic_write(target, lambda tmp: shutil.copyfile(src, tmp))
    print(f"promoted {src} -> {target} ({account})")
    return target


def main(argv: list[str] | None = None) -> int:
    from cimnas.inputs import run_user_main

    def _run(args: list[str]) -> int:
        ap = ArgumentParser(prog="python -m cimnas.promote", allow_abbrev=False,
                                     description="Copy a trained file over a shipped default artifact if it is not worse.")
        ap.add_argument("--kind", required=True, choices=sorted(KIND_FILES))
        ap.add_argument("--from", dest="source", required=True, metavar="RUN_FILE", help="the trained file")
        ap.add_argument("--space", default=None, help="expected space (default: the file's own)")
        ap.add_argument("--artifacts", default=None, metavar="DIR",
                        help="artifacts folder to promote into (default: cimnas/artifacts/<space folder>)")
        ap.add_argument("--force", action="store_true", help="replace even a better or incomparable file")
        ap.add_argument("--check", action="store_true", help="validate and compare only; write nothing")
        ap.add_argument("--eval_images", type=int, default=5000,
                        help="held-out images when supernet accuracies must be measured")
        a = ap.parse_args(args)
        try:
            promote(a.kind, a.source, a.artifacts, a.space, a.force, a.eval_images, a.check)
        except PromotionRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        return 0

    return run_user_main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["promote", "compare", "recorded_metric", "measure_supernet_accuracy", "PromotionRefused", "KIND_FILES",
           "SPACE_FOLDERS", "main"]
