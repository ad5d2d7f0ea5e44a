"""Batch mode: fine-tune the top-K designs of a search and compare predicted with true accuracy.

``python -m cimnas.finetune_batch --results results/default --top_k 5 --config configs/finetune.yaml``

For each selected design (distinct networks of ``population.csv``, best first; see
:func:`cimnas.models.design.top_designs`) a design file is written under ``<output>/designs/``
and ``python -m cimnas.models.finetune fit --config <config> --model.init_args.design <file>``
(the same LightningCLI job as ``train.py``) runs in its own process, so every design gets its own
W&B run, checkpoints and a clean state. Jobs run one after another; with ``--gpus [0,1,2,3]`` up to
one job per listed GPU runs at a time (``CUDA_VISIBLE_DEVICES`` pinned), and a multi-GPU DDP job
per design is ``--overrides '["--trainer.devices=4", "--trainer.strategy=ddp"]'``.

Outputs in ``<output>`` (atomic writes): ``predicted_vs_true.csv`` / ``.md`` (one row per design),
``summary.json`` (MAE and Kendall τ of predicted vs fine-tuned held-out accuracy, also vs the
inherited accuracy before fine-tuning, via torchmetrics) and ``predicted_vs_true.png``.
Finished designs (their ``.finetune.json`` holds a fine-tuned accuracy) are skipped on a rerun.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from torchmetrics.functional import mean_absolute_error
from torchmetrics.functional.regression import kendall_rank_corrcoef

from cimnas.models.design import Design, top_designs
from cimnas.models.finetune import DEFAULT_SUPERNET, resolve_artifact
from cimnas.models.finetune_report import RESULT_SUFFIX
from cimnas.models.supernet import load_supernet
from cimnas.io import atomic_write_text

TABLE_COLUMNS = ("rank", "design", "predicted_accuracy", "inherited_val_accuracy", "finetuned_val_accuracy",
                 "finetuned_test_accuracy", "abs_error", "wall_s")


def design_file_name(index: int, design: Design) -> str:
    return f"{index:02d}_{design.name}.json"


def _fill_predictions(designs: list[Design], predictor: str | None) -> None:
    """Designs without a recorded prediction get one from ``predictor`` (when given)."""
    missing = [d for d in designs if d.predicted_accuracy is None]
    if not missing or predictor is None:
        return
    from cimnas.models.predictor.predictor import AccuracyPredictor
    from cimnas.space import ArchBatch

    model = AccuracyPredictor.from_checkpoint(resolve_artifact(predictor, "predictor"))
    batch = ArchBatch.from_designs(model.space, [d.architecture for d in missing], [d.quantization for d in missing])
    for d, value in zip(missing, model.predict(batch).tolist()):
        d.metrics["accuracy"] = float(value)


def _job_command(config: str, design_file: Path, out_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "cimnas.models.finetune", "fit", "--config", config,
            "--model.init_args.design", str(design_file), "--model.init_args.output_dir", str(out_dir), *overrides]


def _finished(result_file: Path) -> bool:
    if not result_file.is_file():
        return False
    try:
        return json.loads(result_file.read_text()).get("finetuned_val_accuracy") is not None
    except json.JSONDecodeError:
        return False


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def agreement(predicted: list[float], true: list[float]) -> dict[str, float | None]:
    """MAE and Kendall τ (tau-b, ties handled) of two accuracy lists (torchmetrics)."""
    pairs = [(p, t) for p, t in zip(predicted, true) if p is not None and t is not None]
    if not pairs:
        return {"n": 0, "mae": None, "kendall_tau": None}
    p = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    t = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    tau = None
    if len(pairs) >= 2:
        value = float(kendall_rank_corrcoef(p, t, variant="b"))
        tau = None if value != value else value  # NaN when one side is constant
    return {"n": len(pairs), "mae": float(mean_absolute_error(p, t)), "kendall_tau": tau}


def write_table(rows: list[dict[str, Any]], stats: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """CSV + markdown table and the predicted-vs-true scatter plot."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out_dir / "predicted_vs_true.csv"
    atomic_write_text(csv_path, buf.getvalue())

    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in TABLE_COLUMNS) + " |" for r in rows]
    lines.append("")
    for key, label in (("finetuned", "predicted vs fine-tuned (val)"), ("inherited", "predicted vs inherited (val)"),
                       ("finetuned_test", "predicted vs fine-tuned (test)")):
        s = stats[key]
        lines.append(f"- {label}: n = {s['n']}, MAE = {_fmt(s['mae'])}, Kendall τ = {_fmt(s['kendall_tau'])}")
    md_path = out_dir / "predicted_vs_true.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for key, marker, label in (("finetuned_val_accuracy", "o", "fine-tuned (val)"),
                               ("inherited_val_accuracy", "x", "inherited (val)")):
        pts = [(r["predicted_accuracy"], r[key]) for r in rows
               if r.get("predicted_accuracy") is not None and r.get(key) is not None]
        if pts:
            ax.scatter([p for p, _ in pts], [t for _, t in pts], marker=marker, label=label)
    values = [v for r in rows for v in (r.get("predicted_accuracy"), r.get("finetuned_val_accuracy"),
                                        r.get("inherited_val_accuracy")) if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.005, 0.05 * (hi - lo))
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, label="y = x")
    s = stats["finetuned"]
    ax.set_title(f"MAE {_fmt(s['mae'])}, Kendall τ {_fmt(s['kendall_tau'])} (n = {s['n']})", fontsize=9)
    ax.set_xlabel("predicted accuracy")
    ax.set_ylabel("measured accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png_path = out_dir / "predicted_vs_true.png"
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, png_path)
    return {"csv": csv_path, "md": md_path, "png": png_path}


def collect(designs: list[Design], design_dir: Path, out_dir: Path, wall: dict[int, float]) -> tuple[list, dict]:
    rows = []
    for i, d in enumerate(designs):
        result_file = design_dir / (Path(design_file_name(i, d)).stem + RESULT_SUFFIX)
        r = json.loads(result_file.read_text()) if result_file.is_file() else {}
        pred = r.get("predicted_accuracy", d.predicted_accuracy)
        val = r.get("finetuned_val_accuracy")
        rows.append({
            "rank": i, "design": d.name, "predicted_accuracy": pred,
            "inherited_val_accuracy": r.get("inherited_val_accuracy"), "finetuned_val_accuracy": val,
            "finetuned_test_accuracy": r.get("finetuned_test_accuracy"),
            "abs_error": None if pred is None or val is None else abs(pred - val),
            "wall_s": wall.get(i), "result": str(result_file),
        })
    preds = [r["predicted_accuracy"] for r in rows]
    stats = {
        "finetuned": agreement(preds, [r["finetuned_val_accuracy"] for r in rows]),
        "inherited": agreement(preds, [r["inherited_val_accuracy"] for r in rows]),
        "finetuned_test": agreement(preds, [r["finetuned_test_accuracy"] for r in rows]),
        "inherited_vs_finetuned": agreement([r["inherited_val_accuracy"] for r in rows],
                                            [r["finetuned_val_accuracy"] for r in rows]),
    }
    return rows, stats


def finetune_batch(
    results: Union[str, list[str]],
    top_k: int = 5,
    config: str = "configs/finetune.yaml",
    output: Optional[str] = None,
    selection: Literal["top", "spread"] = "top",
    overrides: Optional[list[str]] = None,
    supernet: str = DEFAULT_SUPERNET,
    predictor: Optional[str] = None,
    gpus: Optional[list[int]] = None,
    threads: Optional[int] = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``top_k`` designs of a search results folder and tabulate predicted vs true.

    Args:
        results: search results folder (``population.csv``, ``best.json``, ``pareto.json``) or one
            design / population file, or a list of them (e.g. the same search under several seeds).
        top_k: number of distinct networks to fine-tune from each entry of ``results`` (networks
            that differ only in hardware or in genes of skipped blocks count once).
        config: the fine-tuning LightningCLI config (``configs/finetune.yaml``).
        output: output folder (default ``<results>/finetune``).
        selection: ``top`` (best first) or ``spread`` (evenly spaced in predicted accuracy).
        overrides: extra ``train.py fit`` arguments for every job (e.g. ``--trainer.max_epochs=1``,
            ``--data.init_args.train_subset=5000``, ``--trainer.devices=4``).
        supernet: the supernet the designs are checked against (and fine-tuned from; also passed on).
        predictor: accuracy-predictor checkpoint used for designs without a recorded prediction.
        gpus: run one job per listed GPU concurrently (None: one job at a time on the default device).
        threads: CPU threads per job (``OMP_NUM_THREADS``).
        resume: skip designs that already have a fine-tuned accuracy.
    """
    sources = [Path(r) for r in ([results] if isinstance(results, str) else results)]
    if not sources:
        raise ValueError("results must name at least one search results folder or design file")
    first = sources[0]
    out_dir = Path(output) if output else (first if first.is_dir() else first.parent) / "finetune"
    design_dir = out_dir / "designs"
    from cimnas.inputs import refuse_shipped_output

    refuse_shipped_output(out_dir, "output")
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"results {str(source)!r} not found (a search results folder or a design file)")
    supernet_path = resolve_artifact(supernet, "supernet")
    space = load_supernet(supernet_path).space
    designs, seen = [], set()
    for source in sources:  # top_k distinct networks of each source, then distinct across sources
        for d in top_designs(source, top_k, space=space, selection=selection):
            if d.network_key() in seen:
                continue
            seen.add(d.network_key())
            if len(sources) > 1:
                d.name = f"{source.name if source.is_dir() else source.stem}_{d.name}"
            designs.append(d)
    _fill_predictions(designs, predictor)
    if len(designs) < top_k * len(sources):
        print(f"warning: {len(designs)} distinct network(s) found, fewer than top_k={top_k} per source", file=sys.stderr)
    design_dir.mkdir(parents=True, exist_ok=True)
    # quiet logs by default; the caller's overrides come last and win
    overrides = [f"--model.init_args.supernet={supernet_path}", "--trainer.enable_progress_bar=false",
                 *(overrides or [])]

    jobs = []
    for i, d in enumerate(designs):
        path = design_dir / design_file_name(i, d)
        atomic_write_text(path, json.dumps(d.to_record(), indent=2) + "\n")
        result_file = path.with_name(path.stem + RESULT_SUFFIX)
        if resume and _finished(result_file):
            print(f"[{i + 1}/{len(designs)}] {d.name}: already fine-tuned ({result_file}), skipped")
            continue
        jobs.append((i, d, path))

    env_base = dict(os.environ)
    if threads is not None:
        env_base["OMP_NUM_THREADS"] = str(threads)
        env_base["MKL_NUM_THREADS"] = str(threads)
    slots = [None] if not gpus else list(gpus)
    running: dict[Any, tuple[subprocess.Popen, int, float]] = {}
    wall: dict[int, float] = {}
    failures: list[str] = []
    pending = list(jobs)
    log_dir = out_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    while pending or running:
        for slot in slots:
            if slot in running or not pending:
                continue
            i, d, path = pending.pop(0)
            env = dict(env_base)
            args = list(overrides)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(slot)
                args.append("--trainer.devices=1")
            cmd = _job_command(config, path, design_dir, args)
            print(f"[{i + 1}/{len(designs)}] {d.name}: predicted {d.predicted_accuracy}; "
                  f"{'GPU ' + str(slot) if slot is not None else 'default device'}; log {log_dir / (path.stem + '.log')}")
            log = open(log_dir / f"{path.stem}.log", "w")
            running[slot] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), i, time.time())
            log.close()
        time.sleep(0.5)
        for slot, (proc, i, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[slot]
            wall[i] = time.time() - start
            if proc.returncode != 0:
                failures.append(f"design {i} ({designs[i].name}): exit code {proc.returncode}, "
                                f"see {log_dir / (design_file_name(i, designs[i])[:-5] + '.log')}")
                print("FAILED " + failures[-1])

    rows, stats = collect(designs, design_dir, out_dir, wall)
    files = write_table(rows, stats, out_dir)
    summary = {"results": [str(p) for p in sources], "top_k": top_k, "selection": selection, "config": config,
               "overrides": overrides, "supernet": str(supernet_path), "rows": rows, **stats,
               "failures": failures, "files": {k: str(v) for k, v in files.items()}}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(files["md"].read_text())
    if failures:
        raise RuntimeError(f"{len(failures)} fine-tuning job(s) failed: " + "; ".join(failures))
    return summary


def main(args: list[str] | None = None) -> int:
    """``python -m cimnas.finetune_batch``; user errors as one line (``--debug``: traceback)."""
    from jsonargparse import CLI

    from cimnas.inputs import run_user_main

    def _run(argv: list[str]) -> int:
        from jsonargparse import ArgumentParser

        from cimnas.inputs import one_line_errors

        CLI(finetune_batch, args=argv, as_positional=False, allow_abbrev=False,
            parser_class=one_line_errors(ArgumentParser))
        return 0

    return run_user_main(_run, args)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["finetune_batch", "agreement", "write_table", "collect", "TABLE_COLUMNS", "main"]
