"""The constrained GA loop of one method: per-generation statistics, progress bar, W&B rows,
checkpoints every ``output.checkpoint_every`` generations and resume."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from cimnas.search.evaluator import REASONS, ConstraintConfig, DesignEvaluator
from cimnas.search.ga import ConstrainedGA, GAConfig
from cimnas.search.objectives import ObjectiveConfig
from cimnas.search.problem import JointProblem
from cimnas.search.result import MethodResult, ParetoArchive, best_index
from cimnas.search.setup import Setup

log = logging.getLogger("cimnas.search")


class _History:
    """Per-generation statistics (and the progress bar / W&B hooks)."""

    def __init__(self, ga: ConstrainedGA, problem: JointProblem, rows: list[dict[str, Any]], start_s: float,
                 on_row: Callable[[dict[str, Any]], None] | None = None, archive: ParetoArchive | None = None):
        self.ga, self.problem, self.rows, self.start_s, self.on_row = ga, problem, rows, start_s, on_row
        self.archive = archive

    def __call__(self, status: dict[str, Any]) -> None:
        if self.archive is not None and self.ga.last_values is not None:
            self.archive.add(self.ga.last_values, self.ga.last_evaluated)
        ev = self.ga.population.evals
        p = self.problem
        feasible = ev[:, p.cv_column] <= 0
        obj = ev[feasible, 0]
        last = self.ga.last_evaluated
        codes = last[:, p.column("reason_code")].long() if last is not None else torch.zeros(0, dtype=torch.long)
        b = best_index(p, ev)
        if p.objective.is_pareto:  # the best compromise's EDAP / accuracy
            best = float(ev[b, p.column("edap_j_s_mm2")] / ev[b, p.column("accuracy")])
            obj = ev[feasible, p.column("edap_j_s_mm2")] / ev[feasible, p.column("accuracy")]
        else:
            best = float(ev[0, 0])
        row = {
            "generation": self.ga.step_count,
            "n_evaluations": self.ga.n_evaluations,
            "elapsed_s": time.perf_counter() - self.start_s,
            "best_objective": best if bool(feasible[b]) else math.nan,
            "median_objective": float(obj.median()) if obj.numel() else math.nan,
            "n_feasible": int(feasible.sum()),
            "n_unique": status.get("n_unique", math.nan),
            "best_accuracy": float(ev[b, p.column("accuracy")]),
            "best_edap_j_s_mm2": float(ev[b, p.column("edap_j_s_mm2")]),
            "best_energy_j": float(ev[b, p.column("energy_j")]),
            "best_latency_s": float(ev[b, p.column("latency_s")]),
            "best_area_mm2": float(ev[b, p.column("area_mm2")]),
            "offspring_infeasible": int((last[:, p.cv_column] > 0).sum()) if last is not None else 0,
        }
        for i, reason in enumerate(REASONS[1:], start=1):
            row[f"offspring_{reason}"] = int((codes == i).sum())
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)


def run_ga(setup: Setup, name: str, out_dir: Path, *, objective: ObjectiveConfig | None = None,
           constraints: ConstraintConfig | None = None, ga_config: GAConfig | None = None,
           fixed_genes: dict[int, int] | None = None, resume: bool = False,
           wandb_run: Any = None, initial_values: torch.Tensor | None = None) -> MethodResult:
    """Run the constrained GA for one method, with checkpoints in ``out_dir``; ``initial_values``
    warm-starts it from those genomes (else it samples its own first population)."""
    config = setup.config
    objective = objective or config.objective
    ga_config = ga_config or config.ga
    evaluator = setup.evaluator
    if constraints is not None:
        evaluator = DesignEvaluator(setup.genome, evaluator.accuracy, constraints, value_stats=evaluator.value_stats,
                                    reference_compat=evaluator.reference_compat, hw_compile=evaluator.hw_compile)
    problem = JointProblem(evaluator, objective, fixed_genes=fixed_genes,
                           device="cpu" if config.num_actors else setup.device, num_actors=config.num_actors,
                           num_gpus_per_actor=config.num_gpus_per_actor if config.num_actors else None)
    ga = ConstrainedGA(problem, ga_config, initial_values=None if initial_values is None
                       else initial_values.to(problem.device))
    history: list[dict[str, Any]] = []
    archive = ParetoArchive(problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    fingerprint = f"{config.fingerprint()}:{name}"
    elapsed_before = 0.0
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise ValueError(f"{ckpt_path} was written by a different configuration; remove it or run without --resume")
        ga.load_state_dict(state["ga"])
        history = list(state["history"])
        if state.get("archive") and state["archive"]["values"] is not None:
            archive = ParetoArchive(problem, state["archive"]["values"].to(ga.device), state["archive"]["evals"].to(ga.device))
        elapsed_before = float(state["wall_s"])
        log.info("%s: resumed at generation %d from %s", name, ga.step_count, ckpt_path)
    elif resume:
        log.info("%s: no checkpoint in %s, starting fresh", name, out_dir)

    start = time.perf_counter() - elapsed_before
    bar = None
    if config.output.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=ga_config.generations, initial=ga.step_count, desc=name, unit="gen", dynamic_ncols=True)

    def on_row(row: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{row['best_objective']:.4g}", feasible=row["n_feasible"])
        if wandb_run is not None:
            wandb_run.log({f"{name}/{k}": v for k, v in row.items()}, step=None)
        gen = row["generation"]
        if gen % config.output.checkpoint_every == 0 or gen == ga_config.generations:
            save_checkpoint(ckpt_path, ga, history, fingerprint, time.perf_counter() - start, archive)

    ga.log_hook.append(_History(ga, problem, history, start, on_row, archive))
    try:
        while ga.step_count < ga_config.generations:
            ga.step()
    finally:
        if bar is not None:
            bar.close()
    pop = ga.population
    return MethodResult(name, problem, pop.values.clone(), pop.evals.clone(), history, ga.n_evaluations,
                        time.perf_counter() - start, archive)


def save_checkpoint(path: Path, ga: ConstrainedGA, history: list[dict[str, Any]], fingerprint: str, wall_s: float,
                    archive: ParetoArchive | None = None) -> None:
    state = {"ga": ga.state_dict(), "history": history, "fingerprint": fingerprint, "wall_s": wall_s,
             "archive": archive.state() if archive is not None else None}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
