"""``python -m cimnas.experiments.variation``: device-variation measurements, the retention-model
fit and noise-free vs noise-aware comparisons (the model: :mod:`cimnas.models.variation`; the
noise-aware accuracy source of the search: :mod:`cimnas.search.accuracy`).

``measure`` writes Monte-Carlo accuracies of recalibrated subnets under RRAM variation,
``fit`` the model file a search reads (``variation: <file>`` in a search config), ``compare`` /
``fronts`` compare the designs of noise-free and noise-aware searches.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from jsonargparse import ArgumentParser
from torch import nn

from cimnas.models.variation import RetentionModel, VariationConfig, accuracy, fit_retention, noisy_accuracy
from cimnas.search.accuracy import network_noise_feature


def load_fmnist_batches(eval_images: int, calibration_images: int, batch_size: int = 250, seed: int = 0
                        ) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """(calibration image batches from the training split, held-out ``val`` batches)."""
    from cimnas.data import FashionMNISTDataModule

    dm = FashionMNISTDataModule(resolution=28, channels=1, augment=False, val_size=5000, seed=0)
    dm.setup("validate")
    calib = dm.calibration_batches(calibration_images, batch_size, seed=seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dm.val_set, list(range(eval_images))),
                                         batch_size=batch_size, shuffle=False)
    return calib, [(x, y) for x, y in loader]


def subnet(supernet: Any, arch: Any, policy: Any, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """Recalibrated, exported static subnet of ``supernet`` (eval mode)."""
    from cimnas.models.supernet import recalibrate_bn

    supernet.set_active(arch, policy)
    recalibrate_bn(supernet, calibration, sync_distributed=False)
    return supernet.export_subnet().eval()


def measure(supernet_path: str, output: str, num_designs: int = 12, bits_per_cell: Sequence[int] = (1, 2, 4, 8),
            scales: Sequence[float] = (1.0,), samples: int = 2, eval_images: int = 1000,
            calibration_images: int = 500, seed: int = 3, config: VariationConfig | None = None) -> list[dict[str, Any]]:
    """Monte-Carlo noisy accuracy of ``num_designs`` random quantized subnets of the supernet at
    every (bits per cell, σ scale); appends JSON lines to ``output`` (resumable by design index)."""
    from cimnas.models.predictor.measure import sample_design
    from cimnas.models.supernet import load_supernet

    torch.set_num_threads(1)
    config = config or VariationConfig()
    out = Path(output)
    done = set()
    if out.exists():
        done = {json.loads(line)["index"] for line in out.read_text().splitlines() if line.strip()}
    net = load_supernet(supernet_path).eval()
    calib, batches = load_fmnist_batches(eval_images, calibration_images)
    records = []
    for i in range(num_designs):
        if i in done:
            continue
        t0 = time.perf_counter()
        arch, policy = sample_design(net.space, seed, i, quantized=True)
        static = subnet(net, arch, policy, calib)
        clean = accuracy(static, batches)
        rec: dict[str, Any] = {"index": i, "seed": seed, "arch": arch.to_dict(), "policy": policy.to_dict(),
                               "clean": clean, "eval_images": eval_images, "variation": asdict(config), "noisy": []}
        for c in bits_per_cell:
            for s in scales:
                mean, std = noisy_accuracy(static, batches, c, config.scaled(s), samples, seed=1000 * i + c)
                rec["noisy"].append({"bits_per_cell": c, "scale": s, "mean": mean, "std": std})
        rec["eval_s"] = round(time.perf_counter() - t0, 2)
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        records.append(rec)
        print(f"design {i}: clean {clean:.4f} " + " ".join(
            f"c{r['bits_per_cell']}x{r['scale']:g}={r['mean']:.3f}" for r in rec["noisy"]), flush=True)
    return records


def fit(records_path: str, output: str, scale: float = 1.0, chance: float = 0.1) -> RetentionModel:
    """Fit :class:`RetentionModel` on every measurement (all σ scales: the feature already carries
    the σ of its record); the model file's variation (what a search applies) is the records'
    configuration times ``scale``."""
    from cimnas.space import ArchBatch, Architecture, QuantPolicy, get_space

    rows = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{records_path}: no records")
    base = VariationConfig(**rows[0]["variation"])
    space = get_space("apq_mbv2_tiny")
    feats, ratios = [], []
    for r in rows:
        ab = ArchBatch.from_designs(space, [Architecture.from_dict(r["arch"])], [QuantPolicy.from_dict(r["policy"])])
        for n in r["noisy"]:
            config = VariationConfig(**r["variation"]).scaled(n["scale"])
            f = network_noise_feature(space, ab, torch.tensor([n["bits_per_cell"]]), config)
            feats.append(float(f[0]))
            ratios.append(n["mean"] / max(r["clean"], 1e-9))
    model = fit_retention(feats, ratios, chance, base.scaled(scale))
    model.save(output)
    print(json.dumps(model.to_dict()))
    return model


def _active_weight_bits(space: Any, arch: Any, policy: Any) -> tuple[float, float]:
    active = arch.active_blocks(space)
    pw = [b for b, a in zip(policy.pw_w_bits, active) if a]
    dw = [b for b, a in zip(policy.dw_w_bits, active) if a]
    return sum(pw) / max(len(pw), 1), sum(dw) / max(len(dw), 1)


def compare_runs(result_dirs: Sequence[str], model_path: str, predictor: str | None = None,
                 aware: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Best design and final-population statistics of search results folders, each best design
    scored with and without variation. Accuracy: the run's own recorded accuracy (noise-free for
    ordinary runs; under variation for the runs listed in ``aware``, whose clean value is
    recovered by dividing by the retention), or a ``predictor`` re-scoring every design."""
    from cimnas.space import ArchBatch, Architecture, QuantPolicy, get_space
    from cimnas.search.accuracy import load_predictor

    model = RetentionModel.load(model_path)
    base = load_predictor(predictor) if predictor else None
    rows = []
    for d in result_dirs:
        best = json.loads((Path(d) / "best.json").read_text())
        space = get_space(best["space_config"] if "space_config" in best else best["space"])
        arch, pol = Architecture.from_dict(best["architecture"]), QuantPolicy.from_dict(best["quantization"])
        ab = ArchBatch.from_designs(space, [arch], [pol])
        bpc = int(best["hardware"].get("bits_per_cell", 1))
        keep = float(model.retention(network_noise_feature(space, ab, torch.tensor([bpc]), model.variation))[0])
        if base is not None:
            clean = float(base.predict(ab).reshape(-1)[0])
        else:
            recorded = float(best["metrics"]["accuracy"])
            clean = recorded / keep if str(d) in aware else recorded
        pw, dw = _active_weight_bits(space, arch, pol)
        m = best["metrics"]
        pop_bpc, pop_pw, pop_dw = [], [], []
        for a, q, cell_bits, _, _ in _read_designs(Path(d) / "population.csv", space):
            x, y = _active_weight_bits(space, a, q)
            pop_pw.append(x)
            pop_dw.append(y)
            pop_bpc.append(float(cell_bits))
        mean = lambda v: sum(v) / len(v) if v else math.nan  # noqa: E731
        edap = m["energy_j"] * m["latency_s"] * m["area_mm2"]
        rows.append({
            "run": str(d), "bits_per_cell": bpc, "mean_pw_w_bits": pw, "mean_dw_w_bits": dw,
            "edap_j_s_mm2": edap, "accuracy_noise_free": clean, "accuracy_under_variation": clean * keep,
            "objective_noise_free": edap / clean, "objective_under_variation": edap / (clean * keep),
            "population_mean_bits_per_cell": mean(pop_bpc), "population_mean_pw_w_bits": mean(pop_pw),
            "population_mean_dw_w_bits": mean(pop_dw), "population_feasible": len(pop_bpc),
        })
    return rows


def _read_designs(path: Path, space: Any) -> list[tuple[Any, Any, int, float, float]]:
    """(Architecture, QuantPolicy, bits per cell, EDAP, recorded accuracy) of the feasible rows of a
    results CSV (read by :func:`cimnas.models.design.load_designs`, the one reader of that file)."""
    from cimnas.models.design import load_designs

    return [(d.architecture, d.quantization, int(float(d.hardware.get("bits_per_cell", 1))),
             float(d.metrics["edap_j_s_mm2"]), float(d.metrics["accuracy"]))
            for d in load_designs(path, space) if d.metrics.get("feasible") is True]


def compare_fronts(result_dirs: Sequence[str], model_path: str, predictor: str | None = None,
                   thresholds: Sequence[float] = (0.5, 0.55, 0.6), aware: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every design of each run's Pareto archive (``pareto.csv``) scored with and without
    variation: bits per cell and weight bits along the front, and the lowest EDAP reaching each
    accuracy-under-variation threshold."""
    from cimnas.space import ArchBatch, get_space
    from cimnas.search.accuracy import load_predictor

    model = RetentionModel.load(model_path)
    base = load_predictor(predictor) if predictor else None
    space = get_space("apq_mbv2_tiny")
    rows = []
    for d in result_dirs:
        designs = _read_designs(Path(d) / "pareto.csv", space)
        if not designs:
            raise ValueError(f"{d}/pareto.csv has no feasible designs")
        ab = ArchBatch.from_designs(space, [x[0] for x in designs], [x[1] for x in designs])
        bpc = torch.tensor([x[2] for x in designs])
        keep = model.retention(network_noise_feature(space, ab, bpc, model.variation))
        if base is not None:
            clean = base.predict(ab).double().reshape(-1)
        else:
            recorded = torch.tensor([x[4] for x in designs], dtype=torch.float64)
            clean = recorded / keep if str(d) in aware else recorded
        noisy = clean * keep
        edap = torch.tensor([x[3] for x in designs], dtype=torch.float64)
        bits = [_active_weight_bits(space, x[0], x[1]) for x in designs]
        row: dict[str, Any] = {"run": str(d), "front_size": len(designs),
                               "bits_per_cell_counts": {int(c): int((bpc == c).sum()) for c in bpc.unique()},
                               "max_accuracy_noise_free": float(clean.max()), "max_accuracy_under_variation": float(noisy.max()),
                               "bits_per_cell_at_max_accuracy_under_variation": int(bpc[int(noisy.argmax())]),
                               "mean_pw_w_bits": sum(b[0] for b in bits) / len(bits),
                               "mean_dw_w_bits": sum(b[1] for b in bits) / len(bits)}
        for t in thresholds:
            ok = noisy >= t
            if ok.any():
                i = int(torch.where(ok, edap, torch.full_like(edap, math.inf)).argmin())
                row[f"min_edap_at_acc_var>={t:g}"] = float(edap[i])
                row[f"bits_per_cell_at_acc_var>={t:g}"] = int(bpc[i])
                row[f"pw_dw_w_bits_at_acc_var>={t:g}"] = [round(bits[i][0], 2), round(bits[i][1], 2)]
            else:
                row[f"min_edap_at_acc_var>={t:g}"] = None
        rows.append(row)
    return rows


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m cimnas.experiments.variation", description="device-variation measurements",
                       allow_abbrev=False)
    sub = p.add_subcommands(dest="cmd", required=True)
    m = ArgumentParser(description="Monte-Carlo noisy accuracy of random subnets (JSONL)", allow_abbrev=False)
    m.add_argument("--supernet", default="cimnas/artifacts/fmnist/supernet.pt")
    m.add_argument("--output", required=True)
    m.add_argument("--num-designs", type=int, default=12)
    m.add_argument("--bits-per-cell", type=int, nargs="+", default=[1, 2, 4, 8])
    m.add_argument("--scales", type=float, nargs="+", default=[1.0])
    m.add_argument("--samples", type=int, default=2)
    m.add_argument("--eval-images", type=int, default=1000)
    m.add_argument("--sigma-rel", type=float, default=VariationConfig.sigma_rel)
    m.add_argument("--sigma-abs", type=float, default=VariationConfig.sigma_abs)
    sub.add_subcommand("measure", m, help="Monte-Carlo noisy accuracy of random subnets (JSONL)")
    f = ArgumentParser(description="fit the retention model a noise-aware search reads", allow_abbrev=False)
    f.add_argument("--records", required=True)
    f.add_argument("--output", required=True)
    f.add_argument("--scale", type=float, default=1.0, help="σ scale the search applies (x the measured config)")
    f.add_argument("--chance", type=float, default=0.1, help="accuracy of a random guess (10 classes: 0.1)")
    sub.add_subcommand("fit", f, help="fit the retention model a noise-aware search reads")
    for name, help_text in (("compare", "bits per cell / weight bits of noise-free vs noise-aware search results"),
                            ("fronts", "Pareto archives of noise-free vs noise-aware runs, scored under variation")):
        c = ArgumentParser(description=help_text, allow_abbrev=False)
        c.add_argument("runs", nargs="+", help="search results folders (best.json, population.csv, pareto.csv)")
        c.add_argument("--model", default="cimnas/artifacts/fmnist/variation_model.json")
        c.add_argument("--predictor", default=None, help="re-score with this predictor (default: the runs' own accuracy)")
        c.add_argument("--aware", nargs="*", default=[], help="runs whose recorded accuracy is under variation")
        if name == "fronts":
            c.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.55, 0.6])
        sub.add_subcommand(name, c, help=help_text)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``measure`` / ``fit`` / ``compare`` / ``fronts`` commands (jsonargparse, like every job)."""
    ns = _parser().parse_args(argv)
    cmd = ns.cmd
    a = ns[cmd]
    if cmd in ("compare", "fronts"):
        rows = (compare_runs(a.runs, a.model, a.predictor, a.aware) if cmd == "compare"
                else compare_fronts(a.runs, a.model, a.predictor, a.thresholds, a.aware))
        for r in rows:
            print(json.dumps(r))
        return 0
    if cmd == "measure":
        measure(a.supernet, a.output, a.num_designs, a.bits_per_cell, a.scales, a.samples, a.eval_images,
                config=VariationConfig(sigma_rel=a.sigma_rel, sigma_abs=a.sigma_abs))
    else:
        fit(a.records, a.output, a.scale, a.chance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["load_fmnist_batches", "subnet", "measure", "fit", "compare_runs", "compare_fronts", "main"]
