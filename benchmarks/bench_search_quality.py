"""Search quality at an equal budget: our GA against pymoo's GA on the same evaluator, 10 seeds.

    python benchmarks/bench_search_quality.py [--seeds 10] [--popsize 150] [--generations 100]
        [--variant NAME:field=value,field=value ...] [--no-pymoo] [--device cpu]

Every method scores designs with the default search's evaluator and objective (``python
search.py``: the shipped Fashion-MNIST predictor and layer statistics when present, its objective
and constraints; ``--reference-objective``: E·L·A/Acc without an accuracy floor) and gets the same budget, popsize x generations evaluations (default 150 x 100 = 15,000,
the initial population included). Methods:

- ``cimnas``: :class:`~cimnas.search.ga.ConstrainedGA` with the default :class:`GAConfig`;
- ``cimnas-reference``: the same GA with the robustness additions off (``polish_fraction=0``,
  ``max_per_network=None``): the reference's GA;
- ``pymoo``: pymoo's ``GA`` with the reference's settings (SBX Pc 0.95 eta 3, PM Pm 0.95 eta 3,
  rounding repair, duplicate elimination, the same capacity-feasible initial population as ours for
  that seed), the dev extra's ``pymoo``;
- any ``--variant name:field=value,...`` (GAConfig fields over the defaults).

Prints per method the median and worst gap of the final best design to the best design any
method found (targets: median <= 0.2 %, worst <= 1 %), the median wall time, and the number of
distinct networks in the final population.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("EVOTORCH_VERBOSE_LEVEL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cimnas.search.ga import ConstrainedGA, GAConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ga import real_problem  # noqa: E402


def _parse_value(text: str):
    if text in ("None", "null"):
        return None
    if text in ("true", "false", "True", "False"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_variant(spec: str) -> tuple[str, dict]:
    name, _, fields = spec.partition(":")
    kw = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(GAConfig)}:
            raise SystemExit(f"--variant {spec}: {key!r} is not a GAConfig field")
        kw[key] = _parse_value(value)
    return name, kw


def run_ours(problem, config: GAConfig) -> tuple[float, float, int, int]:
    start = time.perf_counter()
    ga = ConstrainedGA(problem, config)
    while ga.step_count < config.generations:
        ga.step()
    wall = time.perf_counter() - start
    assert ga.n_evaluations <= config.popsize * config.generations
    pop = ga.population
    feasible = bool(pop.evals[0, problem.cv_column] <= 0)
    best = float(pop.evals[0, 0]) if feasible else math.inf
    n_networks = int(problem.network_ids(pop.values.as_subclass(torch.Tensor)).unique().numel())
    return best, wall, n_networks, ga.n_evaluations


def run_pymoo(problem, popsize: int, generations: int, seed: int) -> tuple[float, float, int]:
    import numpy as np
    from pymoo.algorithms.soo.nonconvex.ga import GA
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.optimize import minimize

    lower = problem.lower_bounds.cpu().numpy().astype(float)
    upper = problem.upper_bounds.cpu().numpy().astype(float)

    class Wrapped(PymooProblem):
        def __init__(self):
            super().__init__(n_var=lower.size, n_obj=1, n_ieq_constr=1, xl=lower, xu=upper, vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            genome = torch.as_tensor(np.round(x).astype(np.int64), device=problem.device)
            evals = problem.evaluation_to_evals(problem.evaluator.evaluate(genome)).cpu()
            out["F"] = evals[:, 0].numpy()
            out["G"] = evals[:, problem.cv_column].numpy()  # total violation: feasible iff <= 0

    generator = torch.Generator(device=problem.device).manual_seed(seed)
    initial = problem.sample_initial(popsize, generator).cpu().numpy().astype(float)
    algorithm = GA(pop_size=popsize, sampling=initial, eliminate_duplicates=True,
                   crossover=SBX(prob=0.95, eta=3.0, vtype=float, repair=RoundingRepair()),
                   mutation=PM(prob=0.95, eta=3.0, vtype=float, repair=RoundingRepair()))
    start = time.perf_counter()
    res = minimize(Wrapped(), algorithm, ("n_gen", generations), seed=seed, verbose=False)
    wall = time.perf_counter() - start
    best = float(res.F[0]) if res.F is not None and res.CV is not None and float(np.ravel(res.CV)[0]) <= 0 else math.inf
    pop_x = torch.as_tensor(np.round(res.pop.get("X")).astype(np.int64))
    n_networks = int(problem.network_ids(pop_x.to(problem.device)).unique().numel())
    return best, wall, n_networks, popsize * generations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--popsize", type=int, default=150)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--variant", action="append", default=[], help="NAME:field=value,... (GAConfig fields)")
    ap.add_argument("--no-pymoo", action="store_true")
    ap.add_argument("--no-defaults", action="store_true", help="only the --variant methods (and pymoo)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference-objective", action="store_true",
                    help="the reference's E·L·A/Acc without an accuracy floor instead of the default objective")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    problem, note = real_problem(args.device, reference_objective=args.reference_objective)
    budget = args.popsize * args.generations
    print(f"evaluator: default search (objective {problem.objective.name!r}, {problem.evaluator.constraints}){note}; budget {budget:,} evaluations "
          f"({args.popsize} x {args.generations}), seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, "
          f"device {args.device}, threads {torch.get_num_threads()}")
    base = GAConfig(popsize=args.popsize, generations=args.generations)
    methods: dict[str, dict] = {}
    if not args.no_defaults:
        methods["cimnas"] = {}
        methods["cimnas-reference"] = {"polish_fraction": 0.0, "max_per_network": None}
    methods.update(parse_variant(v) for v in args.variant)
    results: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in methods}
    if not args.no_pymoo:
        results["pymoo"] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name, kw in methods.items():
            results[name].append(run_ours(problem, dataclasses.replace(base, seed=seed, **kw)))
        if not args.no_pymoo:
            results["pymoo"].append(run_pymoo(problem, args.popsize, args.generations, seed))
        line = ", ".join(f"{name} {runs[-1][0]:.6g}" for name, runs in results.items())
        print(f"  seed {seed}: {line}", flush=True)
    best_known = min(r[0] for runs in results.values() for r in runs)
    print(f"best design found by any method: {best_known:.6g}")
    for name, runs in results.items():
        gaps = [100.0 * (r[0] / best_known - 1.0) for r in runs]
        print(f"{name:>18}: median gap {statistics.median(gaps):.3f} % [target <= 0.2 %], worst {max(gaps):.3f} % "
              f"[target <= 1 %], median wall {statistics.median(r[1] for r in runs):.2f} s, "
              f"{statistics.median(r[3] for r in runs):,.0f} evaluations, distinct networks in the "
              f"final population: median {statistics.median(r[2] for r in runs):.0f}")


if __name__ == "__main__":
    main()
