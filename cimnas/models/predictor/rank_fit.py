"""Train and compare :class:`RankPredictor` variants on measured records, on the held-out split
of :class:`PredictorDataModule` (same seeded permutation, same test / val / train parts).

    python -m cimnas.models.predictor.rank_fit fit --config configs/predictor/fmnist_rank_quant.yaml
    python -m cimnas.models.predictor.rank_fit compare --config configs/predictor/rank_compare_fmnist.yaml

``fit`` writes the checkpoint (``output``) and ``<output>.report.json`` (held-out Kendall tau,
Spearman rho, RMSE). ``compare`` fits every variant for every seed and writes
``rank_compare.json`` / ``rank_compare.md`` (mean ± std) into ``output_dir``.
``extra_float_records``: float records added to a quantized model's training set (with the
``is_quantized`` indicator 0; designs that also appear in the quantized held-out or validation
parts are dropped).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from cimnas.models.predictor.records import load_record_set, records_to_batch
from cimnas.models.predictor.ranking import RankPredictor, fit_rank_predictor
from cimnas.space import ArchBatch, get_space


def _load(paths: list[str], space: Any = None) -> list[dict]:
    return load_record_set(paths, space)


def split_records(records: list[dict], test_fraction: float = 0.2, val_fraction: float = 0.1,
                  split_seed: int = 0) -> dict[str, list[dict]]:
    """The split of :meth:`PredictorDataModule.setup` (key-sorted records, seeded permutation)."""
    n = len(records)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    if n_val == 0:
        val = test
    return {name: [records[i] for i in idx] for name, idx in (("train", train), ("val", val), ("test", test))}


def _batch(space, records: list[dict]) -> tuple[ArchBatch, torch.Tensor, torch.Tensor]:
    is_q = torch.tensor([0.0 if r.get("policy") is None else 1.0 for r in records])
    batch = records_to_batch(space, records, quantized=False)  # float records: uniform max bits
    y = torch.tensor([float(r["accuracy"]) for r in records], dtype=torch.float32)
    return batch, y, is_q


def held_out(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    from cimnas.models.predictor.report import held_out_metrics

    return held_out_metrics(pred, target)


def fit_one(records: list[str], space: str = "apq_mbv2_tiny", quantized: bool = True,
            extra_float_records: list[str] | None = None, num_members: int = 5, hidden_size: int = 64,
            linear: bool = True, rank_weight: float = 1.0, epochs: int = 200, batch_size: int = 128,
            lr: float = 1e-3, weight_decay: float = 1e-4, alpha: float | None = None, seed: int = 0,
            test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0,
            num_threads: int | None = 1) -> tuple[RankPredictor, dict[str, Any]]:
    """Fit one model; returns it and its held-out metrics."""
    if num_threads:
        torch.set_num_threads(num_threads)
    sp = get_space(space)
    parts = split_records(_load(records, sp), test_fraction, val_fraction, split_seed)
    if quantized and any(r.get("policy") is None for r in parts["train"] + parts["test"]):
        raise ValueError(f"{records}: quantized: true but some records are float (policy null); "
                         "give float records as extra_float_records")
    train = list(parts["train"])
    if extra_float_records:
        if not quantized:
            raise ValueError("extra_float_records is for a quantized model (quantized: true)")
        held = {json.dumps(r["arch"], sort_keys=True) for r in parts["test"] + parts["val"]}
        train += [r for r in _load(extra_float_records, sp)
                  if r.get("policy") is None and json.dumps(r["arch"], sort_keys=True) not in held]
    model = RankPredictor(sp, quantized=quantized, quantized_indicator=bool(extra_float_records),
                          num_members=num_members, hidden_size=hidden_size, linear=linear)
    xb, y, is_q = _batch(sp, train)
    vb, vy, _ = _batch(sp, parts["val"])
    info = fit_rank_predictor(model, xb, y, is_q, val=(vb, vy), seed=seed, alpha=alpha, epochs=epochs,
                              batch_size=batch_size, lr=lr, weight_decay=weight_decay, rank_weight=rank_weight)
    tb, ty, _ = _batch(sp, parts["test"])
    metrics = held_out(model.predict(tb), ty)
    metrics.update(train_samples=len(train), **info)
    return model, metrics


def fit(records: list[str], output: str, space: str = "apq_mbv2_tiny", quantized: bool = True,
        extra_float_records: list[str] | None = None, num_members: int = 5, hidden_size: int = 64,
        linear: bool = True, rank_weight: float = 1.0, epochs: int = 200, batch_size: int = 128,
        lr: float = 1e-3, weight_decay: float = 1e-4, alpha: float | None = None, seed: int = 0,
        test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0,
        num_threads: int | None = 1) -> dict[str, Any]:
    """Fit one :class:`RankPredictor` and save it to ``output`` (+ ``.report.json``)."""
    args = dict(locals())
    if Path(output).resolve().is_relative_to((Path(__file__).parents[2] / "artifacts").resolve()):
        raise ValueError(f"output={output}: write under runs/, not into cimnas/artifacts/ (promote explicitly)")
    model, metrics = fit_one(**{k: v for k, v in args.items() if k != "output"})
    model.meta = {"args": args, "report": metrics}
    model.save(output)
    Path(output + ".report.json").write_text(json.dumps({"args": args, "metrics": metrics}, indent=2))
    print(json.dumps(metrics, indent=2))
    return metrics


def compare(records_fp: list[str], records_quant: list[str], variants: dict[str, dict[str, Any]],
            output_dir: str = "runs/predictor2/rank_compare", space: str = "apq_mbv2_tiny",
            seeds: list[int] = [0, 1, 2], split_seed: int = 0, num_threads: int | None = 1) -> list[dict[str, Any]]:
    """Every variant (kwargs of :func:`fit_one`; ``quantized`` picks the record set) for every
    seed; writes ``rank_compare.{json,md}`` with mean ± std of Kendall tau, Spearman rho, RMSE."""
    from cimnas.io import atomic_write_json, atomic_write_text, markdown_table

    rows = []
    for name, kw in variants.items():
        quantized = bool(kw.get("quantized", True))
        runs = []
        for seed in seeds:
            _, m = fit_one(records_quant if quantized else records_fp, space=space, seed=seed,
                           split_seed=split_seed, num_threads=num_threads, **kw)
            runs.append(m)
            print(f"{name} seed {seed}: tau {m['kendall']:.3f} rho {m['spearman']:.3f} "
                  f"rmse {100 * m['rmse']:.3f} pt", flush=True)
        row = {"variant": name, "quantized": quantized, "held_out": runs[0]["num_configs"],
               "train_samples": runs[0]["train_samples"]}
        for key in ("kendall", "spearman", "rmse"):
            vals = [r[key] for r in runs]
            row[key], row[key + "_std"] = statistics.mean(vals), statistics.pstdev(vals)
        rows.append(row)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "rank_compare.json", rows)
    table = markdown_table(
        ["model", "records", "train", "held-out", "Kendall τ", "Spearman ρ", "RMSE (pt)"],
        [[r["variant"], "quantized" if r["quantized"] else "float", r["train_samples"], r["held_out"],
          f"{r['kendall']:.3f} ± {r['kendall_std']:.3f}", f"{r['spearman']:.3f} ± {r['spearman_std']:.3f}",
          f"{100 * r['rmse']:.3f} ± {100 * r['rmse_std']:.3f}"] for r in rows])
    atomic_write_text(out / "rank_compare.md", table + "\n")
    print(table)
    return rows


def main(args: list[str] | None = None) -> None:
    from jsonargparse import CLI

    CLI([fit, compare], args=args, as_positional=False)


if __name__ == "__main__":
    main()


__all__ = ["fit", "fit_one", "compare", "split_records"]
