"""The search methods besides the joint GA: hardware-only / network-only (two-stage) runs with
fixed genes, fixed designs, random search, and the reference design."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from cimnas.search.designs import resolve_network
from cimnas.search.constraints import ConstraintConfig
from cimnas.search.survival import make_batch, survival_order
from cimnas.search.objectives import ObjectiveConfig
from cimnas.search.problem import JointProblem
from cimnas.search.outcome import write_results
from cimnas.search.result import MethodResult, ParetoArchive
from cimnas.search.runner import run_ga
from cimnas.search.setup import Setup, expert_genome, hardware_dict


def sw_fixed_genes(setup: Setup, genome_row: torch.Tensor) -> dict[int, int]:
    """Freeze every software gene at ``genome_row``'s value (hardware-only search)."""
    return {i: int(genome_row[i]) for i in range(setup.genome.num_hw, setup.genome.length)}


def hw_fixed_genes(setup: Setup, genome_row: torch.Tensor) -> dict[int, int]:
    """Freeze every hardware gene at ``genome_row``'s value (network-only search)."""
    return {i: int(genome_row[i]) for i in range(setup.genome.num_hw)}


def evaluate_fixed(setup: Setup, name: str, genome: torch.Tensor, objective: ObjectiveConfig | None = None) -> MethodResult:
    """Score fixed designs (rows of ``genome``) and sort them best-first."""
    start = time.perf_counter()
    problem = JointProblem(setup.evaluator, objective or setup.config.objective, device=setup.device)
    batch = make_batch(problem, genome.to(setup.device).long())
    problem.evaluate(batch)
    order = survival_order(problem, batch.evals, batch)
    return MethodResult(name, problem, batch.values[order].clone(), batch.evals[order].clone(), [], genome.shape[0],
                        time.perf_counter() - start)


def run_random(setup: Setup, name: str, n_total: int, keep: int) -> MethodResult:
    """Uniform random designs (same evaluation budget as the GA); keeps the best ``keep``."""
    start = time.perf_counter()
    problem = JointProblem(setup.evaluator, setup.config.objective, device=setup.device)
    generator = torch.Generator(device=setup.device)
    generator.manual_seed(int(setup.config.ga.seed))
    best_values = best_evals = None
    archive = ParetoArchive(problem)
    done = 0
    while done < n_total:
        n = min(keep, n_total - done)
        values = setup.genome.random(n, generator, device=setup.device)
        batch = make_batch(problem, values)
        problem.evaluate(batch)
        archive.add(values, batch.evals)
        if best_values is not None:
            batch = make_batch(problem, torch.cat([best_values, values]), torch.cat([best_evals, batch.evals]))
        order = survival_order(problem, batch.evals, batch)[:keep]
        best_values, best_evals = batch.values[order].clone(), batch.evals[order].clone()
        done += n
    return MethodResult(name, problem, best_values, best_evals, [], done, time.perf_counter() - start, archive)


def run_method(setup: Setup, method: str, out_dir: Path, reference: MethodResult | None, wandb_run: Any = None) -> MethodResult:
    config = setup.config
    ga = config.ga
    if method == "joint":
        return run_ga(setup, "joint", out_dir, resume=config.resume, wandb_run=wandb_run)
    if method == "hardware_only":
        arch, policy = resolve_network(setup.space, config.network)
        row = setup.genome.encode_designs([(arch, policy, hardware_dict(setup, {}))])[0]
        return run_ga(setup, "hardware_only", out_dir, fixed_genes=sw_fixed_genes(setup, row), resume=config.resume,
                      wandb_run=wandb_run)
    if method == "two_stage":
        # Stage 1: network + quantization by an accuracy/size proxy (weight bits / accuracy) with the
        # hardware frozen at the reference design and no hardware constraints; stage 2: hardware
        # only for the stage-1 network. The generations are split so the budget equals the joint run.
        g1 = max(1, ga.generations // 2)
        g2 = max(1, ga.generations - g1)
        base_row = expert_genome(setup, config.expert_designs[0])[0] if config.expert_designs else \
            setup.genome.encode_designs([(*resolve_network(setup.space, "baseline_like"), hardware_dict(setup, {}))])[0]
        stage1 = run_ga(setup, "two_stage_stage1", out_dir / "stage1", objective=ObjectiveConfig(name="bits_acc"),
                        constraints=ConstraintConfig(area_budget_mm2=None, capacity=False),
                        ga_config=dataclasses.replace(ga, generations=g1), fixed_genes=hw_fixed_genes(setup, base_row.cpu()),
                        resume=config.resume, wandb_run=wandb_run)
        write_results(setup, stage1, out_dir / "stage1", reference)
        network_row = stage1.values[0].cpu()
        stage2 = run_ga(setup, "two_stage", out_dir, ga_config=dataclasses.replace(ga, generations=g2),
                        fixed_genes=sw_fixed_genes(setup, network_row), resume=config.resume, wandb_run=wandb_run)
        stage2.n_evaluations += stage1.n_evaluations
        stage2.wall_s += stage1.wall_s
        return stage2
    if method == "random":
        return run_random(setup, "random", ga.popsize * ga.generations, ga.popsize)
    if method == "fixed":
        if not config.expert_designs:
            raise ValueError("mode fixed needs at least one entry in experts")
        rows = torch.cat([expert_genome(setup, e) for e in config.expert_designs])
        result = evaluate_fixed(setup, "fixed", rows)
        return result
    raise ValueError(f"unknown method {method!r}")


def reference_result(setup: Setup) -> MethodResult | None:
    """The first expert design (the reference's baseline-like design), evaluated."""
    if not setup.config.expert_designs:
        return None
    expert = setup.config.expert_designs[0]
    return evaluate_fixed(setup, f"expert:{expert.name}", expert_genome(setup, expert))
