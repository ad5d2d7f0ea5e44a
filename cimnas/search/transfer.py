"""Moving a finished search to another technology node without a new full search.

Given a search's results folder at node A (``population.csv``, ``pareto.csv``: every row carries
its genome) and the configuration that produced it, :func:`transfer`

1. **re-scores** the saved designs at node B with the batched cost model (the hardware space's
   ``technology_nm`` is set to B; everything else, including the accuracy source, is unchanged),
2. runs a **short warm-started search** at B whose initial population is the best re-scored
   designs (the same GA, constraints and objective; a hardware-only source stays hardware-only),

and reports the best design after each step. :func:`compare_with_full` also runs the full search
at B from scratch and measures the objective gap and the time saved.

    python -m cimnas.search.transfer --from results/X --config configs/search/X.yaml --node 7 \\
        [--generations 10] [--full] [--out results/X_to_7nm]
    python -m cimnas.search.transfer table [--popsize 40 --generations 30 --warm-generations 6]

The ``table`` command runs the whole 32 -> 7 nm / 32 -> 22 nm matrix for RRAM and SRAM and writes
``transfer_table.md`` (docs/beyond_the_paper.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from jsonargparse import ArgumentParser

from cimnas.io import atomic_write_text
from cimnas.io import markdown_table as io_markdown_table
from cimnas.search.config import OutputConfig, SearchConfig, WandbConfig
from cimnas.search.evaluator import DesignEvaluator
from cimnas.search.ga import GAConfig
from cimnas.search.survival import make_batch, survival_order
from cimnas.search.genome import JointGenome
from cimnas.search.operators import first_occurrence
from cimnas.search.problem import JointProblem
from cimnas.search.runner import run_ga
from cimnas.search.setup import Setup


def hardware_space_at_node(hw_space: Any, node_nm: float) -> Any:
    """The same hardware space with ``technology_nm`` = ``node_nm`` (a fixed value, or a gene
    reduced to the single option ``node_nm`` so genome lengths do not change)."""
    from cimnas.hw import HardwareSpace

    genes = {k: list(v) for k, v in hw_space.genes.items()}
    fixed = dict(hw_space.fixed)
    if "technology_nm" in genes:
        genes["technology_nm"] = [float(node_nm)]
    else:
        fixed["technology_nm"] = float(node_nm)
    return HardwareSpace(genes=genes, fixed=fixed, name=f"{hw_space.name}@{node_nm:g}nm")


def values_at_node(genome: JointGenome, values: torch.Tensor) -> torch.Tensor:
    """Genome rows for the node-B genome: a technology gene collapses to its only option."""
    values = values.clone().long()
    names = [g.name for g in genome.hw_genes]
    if "technology_nm" in names:
        values[:, names.index("technology_nm")] = 0
    return values


def read_genomes(results_dir: str | os.PathLike, files: Sequence[str] = ("population.csv", "pareto.csv")) -> torch.Tensor:
    """Distinct genomes of a results folder (final population first, then the Pareto archive)."""
    from cimnas.models.design import load_designs

    rows: list[list[int]] = []
    found = False
    for name in files:
        path = Path(results_dir) / name
        if not path.is_file():
            continue
        found = True
        rows += [d.genome for d in load_designs(path) if d.genome]
    if not found or not rows:
        raise FileNotFoundError(f"{results_dir}: no genomes in {list(files)} (run a search with output.dir there first)")
    values = torch.tensor(rows, dtype=torch.long)
    return values[first_occurrence(values)]


#: What a search at one node needs: the search's own set-up (spaces, genome, evaluator).
NodeSetup = Setup


def node_setup(config: SearchConfig, node_nm: float | None, accuracy: Any | None = None) -> NodeSetup:
    """Load the config's spaces and accuracy source; with ``node_nm`` the hardware space is moved
    to that node."""
    from cimnas.space import get_space
    from cimnas.search.run import build_setup, load_hardware_space

    base = build_setup(config, accuracy)
    hw_space = base.hw_space if node_nm is None else hardware_space_at_node(load_hardware_space(config.hardware), node_nm)
    genome = JointGenome(get_space(config.space), hw_space)
    ev = base.evaluator
    evaluator = DesignEvaluator(genome, ev.accuracy, ev.constraints, value_stats=ev.value_stats,
                                reference_compat=ev.reference_compat, hw_compile=ev.hw_compile)
    return NodeSetup(config, base.space, hw_space, genome, evaluator, base.device)


@dataclass
class Scored:
    """Designs sorted best-first with their evals, the wall time and the evaluations spent."""

    problem: JointProblem
    values: torch.Tensor
    evals: torch.Tensor
    wall_s: float
    n_evaluations: int
    history: list[float] = dataclasses.field(default_factory=list)

    @property
    def best_objective(self) -> float:
        """Objective of the best design (inf when it is infeasible)."""
        if self.evals[0, self.problem.cv_column] > 0:
            return math.inf
        return float(self.evals[0, 0])

    def best(self, column: str) -> float:
        return float(self.evals[0, self.problem.column(column)])


def _problem(setup: NodeSetup, fixed_genes: dict[int, int] | None = None) -> JointProblem:
    return JointProblem(setup.evaluator, setup.config.objective, fixed_genes=fixed_genes, device=setup.device)


def _fixed_network(setup: NodeSetup, row: torch.Tensor) -> dict[int, int] | None:
    if setup.config.mode != "hardware_only":
        return None
    return {i: int(row[i]) for i in range(setup.genome.num_hw, setup.genome.length)}


def rescore(setup: NodeSetup, values: torch.Tensor) -> Scored:
    """Evaluate ``values`` (node-B genome rows) and sort them best-first (constraint domination)."""
    start = time.perf_counter()
    values = values_at_node(setup.genome, values).to(setup.device)
    problem = _problem(setup)
    batch = make_batch(problem, values)
    problem.evaluate(batch)
    order = survival_order(problem, batch.evals, batch)
    return Scored(problem, batch.values[order].clone(), batch.evals[order].clone(), time.perf_counter() - start,
                  int(values.shape[0]))


def run_search(setup: NodeSetup, ga: GAConfig, initial: torch.Tensor | None = None,
               fixed_genes: dict[int, int] | None = None, name: str = "search") -> Scored:
    """The project's GA (:func:`cimnas.search.runner.run_ga`) at this node, from ``initial``
    (warm start) or from its own sampling; its checkpoint goes to ``<output.dir>/<name>``."""
    result = run_ga(setup, name, Path(setup.config.output.dir) / name, ga_config=ga, fixed_genes=fixed_genes,
                    initial_values=initial)
    history = [r["best_objective"] if math.isfinite(r["best_objective"]) else math.inf for r in result.history]
    return Scored(result.problem, result.values, result.evals, result.wall_s, result.n_evaluations, history)


@dataclass
class TransferResult:
    node_nm: float
    rescored: Scored
    warm: Scored | None
    full: Scored | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node_nm": self.node_nm,
            "rescored_best_objective": self.rescored.best_objective,
            "rescore_s": self.rescored.wall_s, "rescore_evaluations": self.rescored.n_evaluations,
        }
        if self.warm is not None:
            out.update(warm_best_objective=self.warm.best_objective, warm_s=self.warm.wall_s,
                       warm_evaluations=self.warm.n_evaluations)
        if self.full is not None:
            full = self.full.best_objective
            transfer_s = self.rescored.wall_s + (self.warm.wall_s if self.warm else 0.0)
            transfer_evals = self.rescored.n_evaluations + (self.warm.n_evaluations if self.warm else 0)
            best_transfer = self.warm.best_objective if self.warm else self.rescored.best_objective
            out.update(
                full_best_objective=full, full_s=self.full.wall_s, full_evaluations=self.full.n_evaluations,
                rescore_gap=self.rescored.best_objective / full - 1.0,
                transfer_gap=best_transfer / full - 1.0,
                time_saved=1.0 - transfer_s / self.full.wall_s if self.full.wall_s > 0 else math.nan,
                evaluations_saved=1.0 - transfer_evals / self.full.n_evaluations,
            )
        return out


def transfer(config: SearchConfig, source_values: torch.Tensor, node_nm: float, warm_generations: int,
             accuracy: Any | None = None, popsize: int | None = None) -> TransferResult:
    """Re-score ``source_values`` at ``node_nm``, then (``warm_generations`` > 0) a warm-started
    search of that many generations (the re-scored set counts as its first generation)."""
    setup = node_setup(config, node_nm, accuracy)
    scored = rescore(setup, source_values)
    warm = None
    if warm_generations > 1:
        popsize = popsize or config.ga.popsize
        seed = scored.values[:popsize]
        ga = dataclasses.replace(config.ga, generations=warm_generations)
        # the seed rows were evaluated by the re-scoring: the GA's first step evaluates them again
        # (cheap) so the warm search stays the project's GA unchanged
        warm = run_search(setup, ga, initial=seed, fixed_genes=_fixed_network(setup, seed[0]),
                          name=f"warm_{node_nm:g}nm")
    return TransferResult(float(node_nm), scored, warm)


def compare_with_full(result: TransferResult, config: SearchConfig, accuracy: Any | None = None,
                      source_best: torch.Tensor | None = None) -> TransferResult:
    """Run the full search at the result's node from scratch (``config.ga``) and attach it."""
    setup = node_setup(config, result.node_nm, accuracy)
    fixed = _fixed_network(setup, values_at_node(setup.genome, source_best.view(1, -1))[0]) if source_best is not None else None
    result.full = run_search(setup, config.ga, fixed_genes=fixed, name=f"full_{result.node_nm:g}nm")
    return result


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def _quiet(config: SearchConfig, out: str) -> SearchConfig:
    return dataclasses.replace(config, output=OutputConfig(dir=out, plots=False, progress=False,
                                                           checkpoint_every=10**9),  # one checkpoint, at the end
                               wandb=WandbConfig(mode="disabled"), resume=False)


# ---------------------------------------------------------------------- the experiment matrix

#: (label, hardware space at the source node A = 32 nm, search config fields) of the table.
TABLE_FAMILIES = (
    ("RRAM", "configs/hw/reference.yaml", {"constraints": {"area_budget_mm2": 800.0, "capacity": True}}),
    ("SRAM", "configs/hw/sram_lpddr4_32nm.yaml", {"constraints": {"area_budget_mm2": 800.0, "capacity": False}}),
)


def run_table(out_dir: str, popsize: int, generations: int, warm_generations: int, nodes: Sequence[float] = (7.0, 22.0),
              space: str = "apq_mbv2_tiny", predictor: str = "cimnas/artifacts/fmnist/predictor.pt",
              value_stats: str | None = "cimnas/artifacts/fmnist/value_stats.pt", mode: str = "joint",
              network: str = "baseline_like", seed: int = 1) -> list[dict[str, Any]]:
    """Source search at 32 nm, then for each node B: re-score + warm start vs full search."""
    from cimnas.search.cli import parse_config
    from cimnas.search.constraints import ConstraintConfig
    from cimnas.search.objectives import ObjectiveConfig

    torch.set_num_threads(1)
    rows = []
    for label, hw_path, extra in TABLE_FAMILIES:
        config = parse_config([])
        config = dataclasses.replace(
            config, mode=mode, space=space, hardware=hw_path, predictor=predictor, value_stats=value_stats,
            network=network, constraints=ConstraintConfig(**extra["constraints"]),
            objective=ObjectiveConfig(name="ela_acc"),  # the table's objective (docs/beyond_the_paper.md)
            ga=dataclasses.replace(config.ga, popsize=popsize, generations=generations, seed=seed))
        config = _quiet(config, f"{out_dir}/{label}")
        source_setup = node_setup(config, None)
        fixed = None
        if mode == "hardware_only":
            from cimnas.search.designs import resolve_network
            from cimnas.search.run import hardware_dict

            row = source_setup.genome.encode_designs([(*resolve_network(source_setup.space, network),
                                                       hardware_dict(source_setup, {}))])[0]
            fixed = _fixed_network(source_setup, row)
        source = run_search(source_setup, config.ga, fixed_genes=fixed, name="source")
        for node in nodes:
            res = transfer(config, source.values, node, warm_generations)
            compare_with_full(res, config, source_best=source.values[0])
            s = res.summary()
            s.update(family=label, source_node_nm=32.0, source_best_objective=source.best_objective,
                     source_s=source.wall_s, popsize=popsize, generations=generations,
                     warm_generations=warm_generations, mode=mode, space=space)
            rows.append(s)
            print(json.dumps(s), flush=True)
    _write_json(Path(out_dir) / "transfer_table.json", rows)
    atomic_write_text(Path(out_dir) / "transfer_table.md", markdown_table(rows))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = ("family", "A→B nm", "full search at B: best obj / s / evals", "re-scored A designs: best obj (gap) / s",
              "+ warm start: best obj (gap) / s / evals", "time saved", "evals saved")
    return io_markdown_table(header, [[
        r["family"], f"{r['source_node_nm']:g}→{r['node_nm']:g}",
        f"{r['full_best_objective']:.4g} / {r['full_s']:.1f} / {r['full_evaluations']}",
        f"{r['rescored_best_objective']:.4g} ({100 * r['rescore_gap']:+.1f} %) / {r['rescore_s']:.2f}",
        f"{r['warm_best_objective']:.4g} ({100 * r['transfer_gap']:+.1f} %) / {r['warm_s']:.1f} / {r['warm_evaluations']}",
        f"{100 * r['time_saved']:.0f} %", f"{100 * r['evaluations_saved']:.0f} %"] for r in rows])


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    argv = list(argv) if argv is not None else None
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "table":
        p = ArgumentParser(prog="python -m cimnas.search.transfer table")
        p.add_argument("--out", default="results/transfer")
        p.add_argument("--popsize", type=int, default=40)
        p.add_argument("--generations", type=int, default=30)
        p.add_argument("--warm-generations", type=int, default=6)
        p.add_argument("--nodes", type=float, nargs="+", default=[7.0, 22.0])
        p.add_argument("--space", default="apq_mbv2_tiny")
        p.add_argument("--predictor", default="cimnas/artifacts/fmnist/predictor.pt")
        p.add_argument("--value-stats", default="cimnas/artifacts/fmnist/value_stats.pt")
        p.add_argument("--mode", default="joint", choices=["joint", "hardware_only"])
        p.add_argument("--network", default="baseline_like")
        p.add_argument("--seed", type=int, default=1)
        a = p.parse_args(args[1:])
        rows = run_table(a.out, a.popsize, a.generations, a.warm_generations, a.nodes, a.space, a.predictor,
                         None if a.value_stats in ("null", "none", "") else a.value_stats, a.mode, a.network, a.seed)
        print(markdown_table(rows))
        return 0
    p = ArgumentParser(prog="python -m cimnas.search.transfer", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="source", required=True, help="results folder of the finished search (node A)")
    p.add_argument("--config", required=True, help="the search config that produced it")
    p.add_argument("--node", type=float, required=True, help="target technology node B (nm)")
    p.add_argument("--generations", type=int, default=10, help="warm-started generations (<= 1: re-score only)")
    p.add_argument("--full", action="store_true", help="also run the full search at B and report the gap")
    p.add_argument("--out", default=None, help="output folder (default: <from>_to_<node>nm)")
    a = p.parse_args(args)
    from cimnas.search.cli import parse_config

    out = a.out or f"{a.source.rstrip('/')}_to_{a.node:g}nm"
    config = _quiet(parse_config(["--config", a.config]), out)
    if config.mode == "compare":  # a compare job's method folder: its name is the method
        method = Path(a.source.rstrip("/")).name
        if method not in ("joint", "hardware_only", "random", "two_stage"):
            raise SystemExit(f"--from {a.source}: with a compare config, point at one method's folder "
                             "(joint, hardware_only, two_stage or random)")
        config = dataclasses.replace(config, mode="hardware_only" if method == "hardware_only" else "joint")
    values = read_genomes(a.source)
    res = transfer(config, values, a.node, a.generations)
    if a.full:
        compare_with_full(res, config, source_best=values[0])
    summary = res.summary()
    setup = node_setup(config, a.node)
    best = res.warm if res.warm is not None else res.rescored
    summary["best_design"] = setup.genome.to_designs(best.values[:1])[0]
    _write_json(Path(out) / "transfer.json", summary)
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "hardware_space_at_node", "values_at_node", "read_genomes", "node_setup", "rescore", "run_search", "transfer",
    "compare_with_full", "TransferResult", "run_table", "markdown_table",
]
