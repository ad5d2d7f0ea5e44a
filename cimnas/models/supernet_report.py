"""How well a supernet's *interior* is trained: one report per phase (issue 18).

For a trained (or partly trained) :class:`~cimnas.models.supernet.OFASupernet` it measures, exactly
as the predictor's labels are measured (``set_active`` → BN recalibration on training images →
top-1 on the held-out split):

- the largest / median / smallest subnets of the whole space, in float and at the space's lowest
  bit width everywhere searchable (``w4a4`` on the tiny space);
- ``n_random`` random subnets of the whole space (drawn from their own seed, so the same subnets
  are measured after every phase and reports compare pairwise), each in float, at the lowest bit
  width and with a random quantization policy;
- the spread of those accuracies (mean, σ, min, max) and their Kendall τ with the subnets'
  capacity (MACs, parameters) and — for the random policies — with mean bits and bit-operations;
- whether largest ≥ median ≥ smallest holds.

A healthy once-for-all supernet ranks its subnets by capacity (OFA: larger subnets are more
accurate, τ(accuracy, MACs) clearly positive); an interior that is under-trained gives τ ≈ 0 and
a spread set by measurement noise.

Two ways in: :class:`PhaseReport` (a Lightning callback that writes
``<run folder>/phase_reports/<index>_<phase>.json`` at the end of every phase) and
``python -m cimnas.experiments.supernet_report`` (the same report of a saved supernet or a
Lightning checkpoint, e.g. each phase's last epoch).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from cimnas.models.evaluation import evaluate_accuracy, recalibrate_bn
from cimnas.models.predictor.features import CapacityFeatures
from cimnas.models.predictor.ranking import kendall_tau
from cimnas.space import Architecture, ArchBatch, QuantPolicy, SearchSpace

REPORT_FORMAT = "cimnas-supernet-report-v1"


def report_designs(space: SearchSpace, n_random: int, seed: int) -> list[tuple[Architecture, QuantPolicy]]:
    """The ``n_random`` random (architecture, random quantization policy) pairs of a report; the
    same ``seed`` gives the same designs."""
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    generator = torch.Generator().manual_seed(seed)
    return [(Architecture.random(space, generator), QuantPolicy.random(space, generator)) for _ in range(n_random)]


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def _tau(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 2:
        return math.nan
    return kendall_tau(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))


@torch.no_grad()
def report_supernet(net, calib_batches: list[Any], val_batches: Iterable[Any], *, n_random: int = 50,
                    seed: int = 2026, low_bits: int | None = None, random_policies: bool = True,
                    log_every: int = 0) -> dict[str, Any]:
    """The report (plain JSON data) of ``net``; see the module docstring. ``val_batches`` is read
    once per measurement (a list is best). ``low_bits``: default the space's lowest bit choice.
    The supernet's active subnet and BN statistics are changed: callers that keep training
    restore them (:class:`PhaseReport` does)."""
    space = net.space
    low = int(low_bits if low_bits is not None else min(space.bit_choices))
    low_tag = f"w{low}a{low}"
    val = list(val_batches)
    start = time.perf_counter()
    n_measured = 0

    def top1(arch: Architecture, policy: QuantPolicy | None) -> float:
        nonlocal n_measured
        net.set_active(arch, policy)
        recalibrate_bn(net, calib_batches)
        n_measured += 1
        return float(evaluate_accuracy(net, val))

    reference = {}
    for name, arch in (("largest", Architecture.largest(space)), ("median", Architecture.median(space)),
                       ("smallest", Architecture.smallest(space))):
        reference[name] = {"fp": top1(arch, None), low_tag: top1(arch, QuantPolicy.uniform(space, low))}
    designs = report_designs(space, n_random, seed)
    features = CapacityFeatures(space, bits=True)
    names = list(features.names)
    subnets = []
    for i, (arch, policy) in enumerate(designs):
        row: dict[str, Any] = {"arch": arch.to_dict(), "policy": policy.to_dict()}
        row["fp"] = top1(arch, None)
        row[low_tag] = top1(arch, QuantPolicy.uniform(space, low))
        if random_policies:
            row["random_bits"] = top1(arch, policy)
        f = features(ArchBatch.from_designs(space, [arch], [policy]))[0]
        row["macs"] = float(f[names.index("log_macs")].exp())
        row["params"] = float(f[names.index("log_params")].exp())
        row["bitops"] = float(f[names.index("log_bitops")].exp())
        row["mean_bits"] = float(statistics.fmean(policy.block_bits(b)[k] for b in range(space.num_blocks)
                                                  for k in range(4)))
        subnets.append(row)
        if log_every and (i + 1) % log_every == 0:
            rank_zero_info(f"supernet report: {i + 1}/{len(designs)} random subnets ({time.perf_counter() - start:.0f} s)")
    col = lambda key: [r[key] for r in subnets if key in r]  # noqa: E731
    tags = ["fp", low_tag] + (["random_bits"] if random_policies else [])
    summary = {tag: _stats(col(tag)) for tag in tags}
    tau = {}
    for tag in ("fp", low_tag):
        tau[f"{tag}_vs_macs"] = _tau(col(tag), col("macs"))
        tau[f"{tag}_vs_params"] = _tau(col(tag), col("params"))
    if random_policies:
        tau["random_bits_vs_mean_bits"] = _tau(col("random_bits"), col("mean_bits"))
        tau["random_bits_vs_bitops"] = _tau(col("random_bits"), col("bitops"))
    ordered = {tag: reference["largest"][tag] >= reference["median"][tag] >= reference["smallest"][tag]
               for tag in ("fp", low_tag)}
    return {"format": REPORT_FORMAT, "space": space.name, "n_random": n_random, "seed": seed,
            "low_bits": low, "val_images": sum(int(b[1].shape[0]) for b in val),
            "calib_images": sum(int((b[0] if isinstance(b, (tuple, list)) else b).shape[0]) for b in calib_batches),
            "reference": reference, "random": summary, "kendall_tau": tau, "ordered": ordered,
            "measurements": n_measured, "wall_s": time.perf_counter() - start, "subnets": subnets}


def report_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines of a report (percent)."""
    low_tag = f"w{report['low_bits']}a{report['low_bits']}"
    ref = report["reference"]
    lines = []
    for tag in ("fp", low_tag):
        r = report["random"][tag]
        lines.append(f"{tag:6s} largest {100 * ref['largest'][tag]:.2f}  median {100 * ref['median'][tag]:.2f}  "
                     f"smallest {100 * ref['smallest'][tag]:.2f}  | {r['n']} random: {100 * r.get('mean', math.nan):.2f}"
                     f" ± {100 * r.get('std', math.nan):.2f} [{100 * r.get('min', math.nan):.2f}, "
                     f"{100 * r.get('max', math.nan):.2f}]  τ(acc, MACs) {report['kendall_tau'][f'{tag}_vs_macs']:+.3f}"
                     f"  τ(acc, params) {report['kendall_tau'][f'{tag}_vs_params']:+.3f}")
    if "random_bits" in report["random"]:
        r = report["random"]["random_bits"]
        lines.append(f"random bits: {100 * r.get('mean', math.nan):.2f} ± {100 * r.get('std', math.nan):.2f}  "
                     f"τ(acc, mean bits) {report['kendall_tau']['random_bits_vs_mean_bits']:+.3f}  "
                     f"τ(acc, bit-ops) {report['kendall_tau']['random_bits_vs_bitops']:+.3f}")
    lines.append(f"largest >= median >= smallest: {report['ordered']}  ({report['measurements']} measurements, "
                 f"{report['wall_s']:.0f} s)")
    return lines


def flat_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """Scalar figures of a report for a logger (``<prefix>/...``)."""
    out: dict[str, float] = {}
    for name, accs in report["reference"].items():
        for tag, v in accs.items():
            out[f"{prefix}/{name}_{tag}"] = v
    for tag, s in report["random"].items():
        for k in ("mean", "std", "min", "max"):
            if k in s:
                out[f"{prefix}/random_{tag}_{k}"] = s[k]
    for k, v in report["kendall_tau"].items():
        out[f"{prefix}/tau_{k}"] = v
    return out


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    from cimnas.io import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1, allow_nan=True))
    return path


class PhaseReport(L.Callback):
    """After every phase of :class:`~cimnas.models.supernet_module.OFASupernetModule`,
    :func:`report_supernet` on the validation split with the module's BN-calibration set; writes
    ``<run folder>/phase_reports/<index>_<phase>.json`` (atomically), logs the scalar figures
    (``report/<phase>/...``) and restores the training BN statistics afterwards.

    A phase is reported at the start of the next epoch (before the module enters the next phase,
    e.g. sorts channels) and the last phase when training ends — so the phase's last checkpoint
    is already written when the ~half-hour report runs, and a run cut during the report resumes
    and reports again (a phase whose report file exists is not reported twice).

    Args:
        n_random / seed / low_bits / random_policies: as :func:`report_supernet`.
        dirname: folder under ``trainer.default_root_dir``.
    """

    def __init__(self, n_random: int = 50, seed: int = 2026, low_bits: int | None = None,
                 random_policies: bool = True, dirname: str = "phase_reports") -> None:
        if n_random < 0:
            raise ValueError(f"PhaseReport: n_random must be >= 0, got {n_random}")
        self.n_random, self.seed, self.low_bits = n_random, seed, low_bits
        self.random_policies, self.dirname = random_policies, dirname

    def path_for(self, trainer: L.Trainer, index: int, name: str) -> Path:
        return Path(trainer.default_root_dir) / self.dirname / f"{index}_{name}.json"

    @staticmethod
    def _ended_phase(pl_module: L.LightningModule, epochs_done: int) -> int | None:
        """The phase whose last epoch is epoch ``epochs_done - 1`` (None: no phase ends there)."""
        end = 0
        for index, phase in enumerate(pl_module.phases):
            end += phase.epochs
            if end == epochs_done and phase.epochs > 0:
                return index
        return None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_report(trainer, pl_module, trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_report(trainer, pl_module, trainer.current_epoch)

    def _maybe_report(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs_done: int) -> None:
        index = self._ended_phase(pl_module, epochs_done)
        if index is None or epochs_done == 0:
            return
        phase = pl_module.phases[index]
        path = self.path_for(trainer, index, phase.name)
        if trainer.is_global_zero and not path.exists():
            saved_bn = pl_module._bn_state()
            was_training = pl_module.training
            pl_module.eval()
            try:
                dm = trainer.datamodule
                val = dm.val_dataloader() if dm is not None else trainer.val_dataloaders
                if val is None:
                    raise RuntimeError("PhaseReport needs validation images: a datamodule with val_dataloader() "
                                       "or val_dataloaders passed to fit")
                report = report_supernet(pl_module.supernet, pl_module.calibration_batches(), val,
                                         n_random=self.n_random, seed=self.seed, low_bits=self.low_bits,
                                         random_policies=self.random_policies, log_every=10)
            finally:
                pl_module._load_bn_state(saved_bn)
                pl_module.train(was_training)
            report.update({"phase": phase.name, "phase_index": index, "epoch": epochs_done - 1,
                           "global_step": int(trainer.global_step)})
            write_report(report, path)
            for logger in trainer.loggers:
                logger.log_metrics(flat_metrics(report, f"report/{phase.name}"), step=trainer.global_step)
            rank_zero_info("\n".join([f"phase {index} '{phase.name}' report ({path}):"] + report_lines(report)))
        trainer.strategy.barrier()


__all__ = ["PhaseReport", "report_supernet", "report_designs", "report_lines", "flat_metrics", "write_report",
           "REPORT_FORMAT"]
