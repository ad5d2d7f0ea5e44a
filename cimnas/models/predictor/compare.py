"""Predictor transfer vs training from scratch at equal numbers of quantized samples (APQ's
key ablation), on one fixed held-out set of quantized configurations.

    python -m cimnas.models.predictor.compare --config configs/predictor/compare_fmnist.yaml

For every ``n`` in ``sample_counts`` and every seed, two quantization-aware predictors are fit
with Lightning on the first ``n`` training records: one initialised from the full-precision
predictor (``transfer_from``), one from scratch (output bias = mean accuracy). Writes
``transfer_vs_scratch.json``, ``transfer_vs_scratch.md`` (table) and
``transfer_vs_scratch.png`` (Kendall tau and RMSE vs n) into ``output_dir``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cimnas.io import atomic_savefig, atomic_write_json, atomic_write_text, markdown_table, pyplot
from cimnas.models.predictor.data import PredictorDataModule
from cimnas.models.predictor.module import PredictorModule


def fit_once(records: list[str], space: str, n: int | None, seed: int, transfer_from: str | None,
             max_epochs: int, batch_size: int, lr: float, weight_decay: float, quant_branch_init: str,
             split_seed: int, root: Path) -> dict[str, float]:
    L.seed_everything(seed, verbose=False)
    dm = PredictorDataModule(records, space=space, quantized=True, max_train_samples=n,
                             split_seed=split_seed, batch_size=batch_size)
    module = PredictorModule(space=space, quantized=True, lr=lr, weight_decay=weight_decay,
                             transfer_from=transfer_from, quant_branch_init=quant_branch_init)
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, check_val_every_n_epoch=max_epochs, default_root_dir=str(root))
    trainer.fit(module, dm)
    metrics = dict(module.last_report["metrics"])
    metrics["train_samples"] = len(dm.splits["train"])
    return metrics


def compare(
    records: list[str],
    transfer_from: str,
    output_dir: str = "runs/predictor_transfer_vs_scratch",
    space: str = "apq_mbv2_tiny",
    sample_counts: list[int] = [10, 20, 40, 80],
    seeds: list[int] = [0, 1, 2],
    max_epochs: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    quant_branch_init: str = "zero",
    split_seed: int = 0,
    num_threads: int | None = 1,
) -> dict[str, Any]:
    """Fit transfer and scratch predictors for every (n, seed); returns and writes the summary.

    Args:
        records: quantized record files (JSONL).
        transfer_from: full-precision predictor checkpoint.
        output_dir: where the JSON / markdown / PNG summary goes.
        space: search-space preset of the records.
        sample_counts: numbers of quantized training samples to compare at.
        seeds: training seeds per (n, method); the held-out split is fixed by ``split_seed``.
        max_epochs / batch_size / lr / weight_decay / quant_branch_init: training settings,
            identical for both methods.
        num_threads: torch CPU threads (None: torch's default).
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in sample_counts:
        for seed in seeds:
            for method, source in (("transfer", transfer_from), ("scratch", None)):
                m = fit_once(records, space, n, seed, source, max_epochs, batch_size, lr, weight_decay,
                             quant_branch_init, split_seed, out / "fits")
                runs.append({"method": method, "n": n, "seed": seed, **m})
                print(f"n={n:4d} seed={seed} {method:8s} kendall={m['kendall']:.3f} "
                      f"spearman={m['spearman']:.3f} rmse={100 * m['rmse']:.2f} pt")
    summary = []
    for n in sample_counts:
        for method in ("transfer", "scratch"):
            rows = [r for r in runs if r["n"] == n and r["method"] == method]
            entry = {"method": method, "n": n, "train_samples": rows[0]["train_samples"]}
            for key in ("kendall", "spearman", "rmse"):
                vals = [r[key] for r in rows]
                entry[key] = statistics.mean(vals)
                entry[key + "_std"] = statistics.pstdev(vals)
            summary.append(entry)
    result = {"held_out_configs": runs[0]["num_configs"] if runs else 0, "seeds": seeds,
              "summary": summary, "runs": runs}
    atomic_write_json(out / "transfer_vs_scratch.json", result)
    table = markdown_table(
        ["quantized train samples", "method", "Kendall τ", "Spearman ρ", "RMSE (pt)"],
        [[e["train_samples"], e["method"], f"{e['kendall']:.3f} ± {e['kendall_std']:.3f}",
          f"{e['spearman']:.3f} ± {e['spearman_std']:.3f}", f"{100 * e['rmse']:.2f} ± {100 * e['rmse_std']:.2f}"]
         for e in summary], align=["right", "left", "right", "right", "right"])
    lines = [f"Held-out quantized configurations: {result['held_out_configs']}; mean ± std over seeds {seeds}.",
             "", table.rstrip("\n")]
    atomic_write_text(out / "transfer_vs_scratch.md", "\n".join(lines) + "\n")
    _plot(summary, out / "transfer_vs_scratch.png")
    print("\n".join(lines))
    return result


def _plot(summary: list[dict[str, Any]], path: Path) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(8, 3.2), dpi=120)
    for method in ("transfer", "scratch"):
        rows = [e for e in summary if e["method"] == method]
        n = [e["train_samples"] for e in rows]
        axes[0].errorbar(n, [e["kendall"] for e in rows], [e["kendall_std"] for e in rows], marker="o", label=method)
        axes[1].errorbar(n, [100 * e["rmse"] for e in rows], [100 * e["rmse_std"] for e in rows], marker="o", label=method)
    axes[0].set_ylabel("held-out Kendall τ")
    axes[1].set_ylabel("held-out RMSE (pt)")
    for ax in axes:
        ax.set_xlabel("quantized training samples")
        ax.set_xscale("log")
        ax.legend()
    fig.tight_layout()
    atomic_savefig(path, fig)


def main(args: list[str] | None = None) -> None:
    from jsonargparse import CLI

    CLI(compare, args=args, as_positional=False, allow_abbrev=False)


if __name__ == "__main__":
    main()


__all__ = ["compare", "fit_once"]
