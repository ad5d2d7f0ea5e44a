"""The constrained GA loop of one method: per-generation statistics (an EvoTorch logger of the
GA's status), progress bar, W&B rows, checkpoints every ``output.checkpoint_every`` generations
and resume."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from evotorch.logging import Logger

from cimnas.search.constraints import REASONS, ConstraintConfig
from cimnas.search.evaluator import DesignEvaluator
from cimnas.search.ga import ConstrainedGA, GAConfig
from cimnas.search.objectives import ObjectiveConfig
from cimnas.search.problem import JointProblem
from cimnas.search.result import MethodResult, ParetoArchive
from cimnas.search.setup import Setup

log = logging.getLogger("cimnas.search")


#: Columns of the per-generation history (``generations.csv``, W&B rows), in order.
HISTORY_COLUMNS = ("generation", "n_evaluations", "elapsed_s", "best_objective", "median_objective", "n_feasible",
                   "n_unique", "best_accuracy", "best_edap_j_s_mm2", "best_energy_j", "best_latency_s", "best_area_mm2",
                   "offspring_infeasible", *(f"offspring_{reason}" for reason in REASONS[1:]))
#: Metric columns of the best design that the run adds to the GA's status (as ``best_<column>``).
BEST_DESIGN_COLUMNS = ("accuracy", "edap_j_s_mm2", "energy_j", "latency_s", "area_mm2")


def run_status(ga: ConstrainedGA, problem: JointProblem, start_s: float) -> Callable[[], dict[str, Any]]:
    """An ``after_step_hook`` of ``ga``: the run's additions to its status, the wall time since
    ``start_s`` (``time.perf_counter`` seconds) and the metrics of the best design."""

    def status() -> dict[str, Any]:
        ev = ga.population.evals
        b = problem.best_index(ev)
        out: dict[str, Any] = {"elapsed_s": time.perf_counter() - start_s}
        out.update({f"best_{c}": float(ev[b, problem.column(c)]) for c in BEST_DESIGN_COLUMNS})
        return out

    return status


class GenerationHistory(Logger):
    """EvoTorch logger of the per-generation history: one row of :data:`HISTORY_COLUMNS` per
    step, read from the GA's status (its statistics, :data:`~cimnas.search.ga.STATUS_KEYS`, plus
    the run's, :func:`run_status`; ``generation`` is EvoTorch's ``iter``). ``rows`` restored from
    a checkpoint continue; ``on_row`` sees each new row."""

    def __init__(self, searcher: ConstrainedGA, rows: list[dict[str, Any]] | None = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None):
        super().__init__(searcher)
        self.rows = [] if rows is None else rows
        self.on_row = on_row

    def _log(self, status: dict[str, Any]) -> None:
        row = {"generation": status["iter"], **{k: status[k] for k in HISTORY_COLUMNS[1:]}}
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
        # one JSON string per generation (older checkpoints: the row dicts themselves)
        history = [json.loads(row) if isinstance(row, str) else row for row in state["history"]]
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

    def add_to_archive(status: dict[str, Any]) -> None:  # every evaluated batch, before its checkpoint
        if ga.last_values is not None:
            archive.add(ga.last_values, ga.last_evaluated)

    ga.after_step_hook.append(run_status(ga, problem, start))
    ga.log_hook.append(add_to_archive)
    GenerationHistory(ga, history, on_row)
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
    # the history as one JSON string per generation: pickled as thousands of small objects it was
    # most of a checkpoint's cost at popsize 150 (JSON round-trips every float exactly, NaN included)
    state = {"ga": ga.state_dict(), "history": [json.dumps(row) for row in history], "fingerprint": fingerprint,
             "wall_s": wall_s,
             "archive": archive.state() if archive is not None else None}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
