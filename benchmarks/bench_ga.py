"""GA loop wall time and evaluations/s as the population grows.

    python benchmarks/bench_ga.py [--evaluator real|synthetic] [--device cpu|cuda] [--threads 1]
        [--popsizes 150,1000,20000] [--generations 50] [--skip-default]

Prints (one line each, with its target):

- the default 150 x 100 GA loop wall time (target <= 1.5 s);
- evaluations/s at each popsize x ``--generations`` (targets: >= 10,000 at 20,000 x 50, and
  non-decreasing with the popsize).

Each line also gives the process CPU time: on a shared machine wall time includes waiting for a
core, and evaluations per CPU-second is the figure to compare across loads.

"GA loop" = :class:`~cimnas.search.ga.ConstrainedGA` steps (initial population, mating, duplicate
elimination, evaluation, survival) plus, per generation, the all-evaluations Pareto archive of
``run_ga`` (merge, sort-based non-dominated filter :func:`cimnas.search.pareto.pareto_mask`,
EDAP order, duplicate points dropped), and the per-generation status (best, feasible count,
distinct genomes). Set-up, checkpoints, CSV/plots and W&B are not included (``bench_search.py``
times those end to end).

``--evaluator real`` (default) scores designs with the default search's evaluator (the shipped
Fashion-MNIST predictor and layer statistics when present, else a random-init predictor of the
same shape; the figures do not depend on the weights). ``--evaluator synthetic`` replaces it with a
cheap separable function of the genes over the same bounds, to isolate the GA's own bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EVOTORCH_VERBOSE_LEVEL", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from evotorch import Problem, SolutionBatch  # noqa: E402

from cimnas.search.ga import ConstrainedGA, GAConfig  # noqa: E402
from cimnas.search.operators import first_occurrence  # noqa: E402
from cimnas.search.pareto import pareto_mask  # noqa: E402


class SyntheticProblem(Problem):
    """Cheap stand-in with the JointProblem interface: objective = weighted squared distance of
    the genes to a fixed target (plus 1), a capacity-like constraint on the first genes."""

    def __init__(self, upper: torch.Tensor, device: str):
        gen = torch.Generator().manual_seed(0)
        self.target = (torch.rand(upper.numel(), generator=gen, dtype=torch.float64) * upper.double()).round()
        self.weight = torch.rand(upper.numel(), generator=gen, dtype=torch.float64) + 0.1
        self.cv_column, self.key_columns = 1, [0]
        self.eval_columns = ["objective", "cv", "edap_j_s_mm2", "accuracy"]
        super().__init__("min", solution_length=upper.numel(), dtype=torch.int64,
                         bounds=([0] * upper.numel(), upper.tolist()), eval_dtype=torch.float64,
                         eval_data_length=3, device=device, store_solution_stats=False)
        self.target, self.weight = self.target.to(device), self.weight.to(device)

    def column(self, name: str) -> int:
        return self.eval_columns.index(name)

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        x = batch.values.as_subclass(torch.Tensor).double()
        obj = 1.0 + ((x - self.target) ** 2 * self.weight).sum(1)
        cv = (x[:, :4].sum(1) - 0.8 * float(self.upper_bounds[:4].sum())).clamp_min(0)
        acc = 1.0 / (1.0 + (x[:, 4:] - self.target[4:]).abs().mean(1))
        batch.set_evals(torch.stack([obj, cv, obj * acc, acc], 1))


def real_problem(device: str, reference_objective: bool = False):
    """The default search's problem; ``reference_objective``: the reference's E·L·A/Acc without an
    accuracy floor (``--objective.name ela_acc --constraints.min_accuracy_quantile null``)."""
    from cimnas.search.config import DEFAULT_PREDICTOR, DEFAULT_VALUE_STATS, OutputConfig, SearchConfig, WandbConfig
    from cimnas.search.problem import JointProblem
    from cimnas.search.run import build_setup

    note, predictor = "", DEFAULT_PREDICTOR
    tmp = tempfile.mkdtemp()
    if not Path(predictor).is_file():
        from cimnas.models.predictor import AccuracyPredictor
        from cimnas.space import apq_mbv2_tiny

        torch.manual_seed(0)
        predictor = str(Path(tmp) / "predictor.pt")
        AccuracyPredictor(apq_mbv2_tiny()).save(predictor)
        note = " (shipped predictor missing: random-init predictor of the same shape)"
    value_stats = DEFAULT_VALUE_STATS if Path(DEFAULT_VALUE_STATS).is_file() else None
    extra = {}
    if reference_objective:
        from cimnas.search.constraints import ConstraintConfig
        from cimnas.search.objectives import ObjectiveConfig

        extra = {"objective": ObjectiveConfig(name="ela_acc"), "constraints": ConstraintConfig(min_accuracy_quantile=None)}
    config = SearchConfig(predictor=predictor, value_stats=value_stats, device=device, **extra,
                          output=OutputConfig(dir=str(Path(tmp) / "out"), progress=False, plots=False),
                          wandb=WandbConfig(mode="disabled"))
    setup = build_setup(config)
    return JointProblem(setup.evaluator, config.objective, device=device), note


def run_loop(problem, popsize: int, generations: int, seed: int = 1) -> tuple[float, int, float, float]:
    """(wall s, evaluations, best objective, process CPU s) of one GA loop with the archive and status."""
    ga = ConstrainedGA(problem, GAConfig(popsize=popsize, generations=generations, seed=seed))
    cv, e_col, a_col = problem.cv_column, problem.column("edap_j_s_mm2"), problem.column("accuracy")
    archive_v = archive_e = None
    start, cpu_start = time.perf_counter(), time.process_time()
    while ga.step_count < generations:
        ga.step()
        values, evals = ga.last_values, ga.last_evaluated.as_subclass(torch.Tensor)
        if archive_v is not None:
            values, evals = torch.cat([archive_v, values]), torch.cat([archive_e, evals])
        keep = pareto_mask(evals[:, e_col], evals[:, a_col], evals[:, cv] <= 0).nonzero().reshape(-1)
        keep = keep[torch.argsort(evals[keep, e_col], stable=True)]
        keep = keep[first_occurrence(evals[keep][:, [e_col, a_col]])]
        archive_v, archive_e = values[keep], evals[keep]
        _ = ga.status["best_objective"], ga.status["n_feasible"], ga.status["n_unique"]
    if problem.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start, ga.n_evaluations, float(ga.population.evals[0, 0]),
            time.process_time() - cpu_start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluator", choices=("real", "synthetic"), default="real")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (search.py's default: 1)")
    ap.add_argument("--popsizes", default="150,1000,20000")
    ap.add_argument("--generations", type=int, default=50)
    ap.add_argument("--skip-default", action="store_true", help="skip the 150 x 100 wall-time line")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    problem, note = real_problem(args.device)
    if args.evaluator == "synthetic":
        problem, note = SyntheticProblem(problem.upper_bounds.cpu(), args.device), " (synthetic evaluator)"
    print(f"device {args.device}, threads {torch.get_num_threads()}, evaluator {args.evaluator}{note}, "
          f"genome length {problem.solution_length}")
    run_loop(problem, 150, 3)  # warm-up (first calls allocate, JIT-script the predictor)
    if not args.skip_default:
        wall, n, best, cpu = run_loop(problem, 150, 100)
        print(f"GA loop 150 x 100: {wall:.2f} s ({n / wall:,.0f} evaluations/s, best {best:.5g}; CPU {cpu:.2f} s) "
              f"[target <= 1.5 s]")
    rates = []
    for popsize in (int(p) for p in args.popsizes.split(",")):
        wall, n, best, cpu = run_loop(problem, popsize, args.generations)
        rates.append(n / wall)
        target = " [target >= 10,000]" if popsize >= 20_000 else ""
        print(f"GA loop {popsize} x {args.generations}: {wall:.2f} s, {n / wall:,.0f} evaluations/s{target} "
              f"(CPU {cpu:.2f} s: {n / cpu:,.0f} evaluations per CPU-second; wall > CPU means a loaded machine)")
    monotone = all(b >= a for a, b in zip(rates, rates[1:]))
    print(f"evaluations/s non-decreasing with popsize: {monotone} "
          f"({' -> '.join(f'{r:,.0f}' for r in rates)}) [target: True]")


if __name__ == "__main__":
    main()
