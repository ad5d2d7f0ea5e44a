"""Wall time of the default 150 x 100 joint search and evaluations per second.

    python benchmarks/bench_search.py [--device cpu|cuda] [--popsize 150] [--generations 100]
        [--predictor cimnas/artifacts/fmnist/predictor_rank.pt] [--value-stats cimnas/artifacts/fmnist/value_stats.pt]
        [--eval-batch 100000] [--skip-search] [--repeats 3]

Prints (one line each): the end-to-end wall time of ``python search.py`` equivalent in-process
(target <= 60 s on a laptop CPU; imports excluded and reported separately), the GA's evaluations/s,
and the whole batched search evaluation (``DesignEvaluator``: decode + predictor + lowering + cost
model + objective) at a large batch, eager, with the fused cost kernel (``hw_compile``) and
with the fused kernel plus the predictor's bf16 opt-in (``predictor_hidden_dtype``), interleaved
in the same run (target >= 5e4 designs/s at B = 1e5; also per CPU-second, which a loaded machine
does not change), with the time of its parts (predictor, cost model). ``--skip-search`` measures only the batched evaluation. When the shipped predictor is missing, a random-init predictor of the same shape is used
and the line says so (timing only; the numbers do not depend on the weights).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EVOTORCH_VERBOSE_LEVEL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

t_import = time.perf_counter()
import torch  # noqa: E402

from cimnas.search.config import DEFAULT_PREDICTOR, DEFAULT_VALUE_STATS, OutputConfig, SearchConfig, WandbConfig  # noqa: E402
from cimnas.search.ga import GAConfig  # noqa: E402
from cimnas.search.survival import make_batch  # noqa: E402
from cimnas.search.problem import JointProblem  # noqa: E402
from cimnas.search.run import build_setup, run_search  # noqa: E402

IMPORT_S = time.perf_counter() - t_import


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--popsize", type=int, default=150)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--predictor", default=DEFAULT_PREDICTOR)
    ap.add_argument("--value-stats", default=DEFAULT_VALUE_STATS)
    ap.add_argument("--eval-batch", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (search.py's default: 1)")
    ap.add_argument("--skip-search", action="store_true", help="only the batched evaluation")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the batched evaluation (min is printed)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    note = ""
    predictor = args.predictor
    tmp = tempfile.TemporaryDirectory()
    if not Path(predictor).is_file():
        from cimnas.models.predictor import AccuracyPredictor
        from cimnas.space import apq_mbv2_tiny

        torch.manual_seed(0)
        predictor = str(Path(tmp.name) / "predictor.pt")
        AccuracyPredictor(apq_mbv2_tiny()).save(predictor)
        note = " (shipped predictor missing: random-init predictor of the same shape)"
    value_stats = args.value_stats if args.value_stats and Path(args.value_stats).is_file() else None
    if value_stats is None:
        note += " (no value statistics: cost model's typical histograms)"

    config = SearchConfig(
        predictor=predictor, value_stats=value_stats, device=args.device, threads=args.threads,
        ga=GAConfig(popsize=args.popsize, generations=args.generations, seed=1),
        output=OutputConfig(dir=str(Path(tmp.name) / "out"), progress=False, plots=True),
        wandb=WandbConfig(mode="disabled"),
    )
    print(f"device {args.device}, threads {torch.get_num_threads()}{note}")
    print(f"imports (torch, evotorch+ray, cimnas): {IMPORT_S:.1f} s")
    if not args.skip_search:
        start = time.perf_counter()
        summary = run_search(config)
        wall = time.perf_counter() - start
        n = summary["n_evaluations"]
        print(f"search {args.popsize}x{args.generations} end-to-end (setup, GA, outputs, plots): {wall:.2f} s "
              f"[target <= 60 s]; GA only {summary['wall_s']:.2f} s")
        print(f"GA evaluations: {n} -> {n / summary['wall_s']:.0f} evaluations/s (incl. selection, variation, logging)")

    # whole batched search evaluation (decode + predictor + lowering + cost + objective)
    from cimnas.search.lowering import evaluate_arch

    setup = build_setup(config)
    evaluator = setup.evaluator
    problem = JointProblem(evaluator, config.objective, device=args.device)
    gen = torch.Generator(device=args.device).manual_seed(0)
    values = setup.genome.random(args.eval_batch, gen, device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    cpu_best: dict[str, float] = {}

    def timed(fn, name: str | None = None) -> float:
        """Wall seconds of ``fn()``; the process CPU seconds go to ``cpu_best[name]`` (min)."""
        sync()
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        if name is not None:
            cpu_best[name] = min(cpu_best.get(name, math.inf), time.process_time() - c)
        return time.perf_counter() - t

    problem.evaluate(make_batch(problem, values[:1000]))  # warm-up (eager)
    evaluator.hw_compile = True
    compile_s = timed(lambda: problem.evaluate(make_batch(problem, values[:4096])))  # compile + warm-up
    arch, hardware = setup.genome.decode(values)
    from cimnas.models.predictor.predictor import set_hidden_dtype

    try:  # the predictor's bf16 opt-in (--predictor_hidden_dtype bfloat16)
        set_hidden_dtype(evaluator.accuracy, None)
        bf16_ok = True
    except ValueError:
        bf16_ok = False
    modes = ["eager", "fused"] + (["fused + bf16 predictor"] if bf16_ok else [])
    best = {m: math.inf for m in modes + ["predictor", "predictor bf16", "cost eager", "cost fused"]}
    for _ in range(args.repeats):
        for mode in modes:
            evaluator.hw_compile = mode != "eager"
            if bf16_ok:
                set_hidden_dtype(evaluator.accuracy, torch.bfloat16 if "bf16" in mode else None)
            best[mode] = min(best[mode], timed(lambda: problem.evaluate(make_batch(problem, values)), mode))
            if "bf16" not in mode:
                best[f"cost {mode}"] = min(best[f"cost {mode}"], timed(lambda: evaluate_arch(
                    setup.genome.space, arch, hardware, value_stats=evaluator.value_stats,
                    reference_compat=evaluator.reference_compat, compile=evaluator.hw_compile)))
        for name, dtype in (("predictor", None), ("predictor bf16", torch.bfloat16)):
            if bf16_ok:
                set_hidden_dtype(evaluator.accuracy, dtype)
            elif dtype is not None:
                continue
            best[name] = min(best[name], timed(lambda: evaluator.accuracy.predict(arch)))
        if bf16_ok:
            set_hidden_dtype(evaluator.accuracy, None)
    B = args.eval_batch
    for mode in modes:
        print(f"whole search evaluation (DesignEvaluator via JointProblem), B={B}, {mode}: "
              f"{best[mode]:.2f} s -> {B / best[mode]:,.0f} designs/s [target >= 50,000] "
              f"({B / cpu_best[mode]:,.0f} per CPU-second: load-independent)")
    bf16 = f" (bf16 opt-in {B / best['predictor bf16']:,.0f})" if bf16_ok else ""
    print(f"  parts at B={B}: predictor {B / best['predictor']:,.0f} designs/s{bf16}, cost model (evaluate_arch) "
          f"eager {B / best['cost eager']:,.0f} / fused {B / best['cost fused']:,.0f} designs/s; "
          f"fused compile + first call {compile_s:.1f} s")
    tmp.cleanup()


if __name__ == "__main__":
    main()
