"""The reference's genetic algorithm as an EvoTorch :class:`SearchAlgorithm`.

Semantics (pymoo ``GA`` as configured by the CIMNAS code, ``cimnas-reference-code.md`` §1.4):

1. initial population: ``popsize`` distinct genomes, capacity-feasible where the problem offers a
   sampler for that (rejection sampling, as the reference does);
2. mating: binary tournament (constraint violation first, then fitness) -> SBX (Pc, eta_c; per-gene
   0.5) on the real-valued option indices -> polynomial mutation (Pm per individual, 1/n_var per
   gene, eta_m) -> rounding; children that duplicate the population or each other are dropped
   and mating repeats (up to ``max_mating_rounds``) until ``popsize`` new genomes exist;
3. survival: elitist (mu + lambda): parents and children are pooled and the best ``popsize`` kept.
   Single objective: lexicographic (constraint violation, objective keys). Two objectives:
   feasible designs by NSGA-II (EvoTorch's ``arg_pareto_sort``: fronts, then crowding distance),
   infeasible ones after them by constraint violation (constraint domination).

The population is kept sorted best-first, so an individual's index is its rank and the tournament
compares indices. Evaluation goes through the EvoTorch :class:`~evotorch.Problem` (vectorized,
optional Ray actors). All randomness comes from one generator owned by the algorithm, whose state
is part of :meth:`state_dict`, so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from evotorch import Problem, SolutionBatch
from evotorch.algorithms.searchalgorithm import SearchAlgorithm

from cimnas.search.operators import (
    binary_tournament, first_occurrence, lexsort, polynomial_mutation, row_hash, simulated_binary_crossover,
)


def _plain(values: torch.Tensor) -> torch.Tensor:
    """``values`` as a plain tensor (EvoTorch's read-only subclass routes every op through Python)."""
    return values.as_subclass(torch.Tensor) if type(values) is not torch.Tensor else values


@dataclass
class GAConfig:
    """Genetic-algorithm settings (defaults: the reference's example run).

    Attributes:
        popsize: population size (reference 150).
        generations: generations including the initial population (pymoo's ``n_gen``;
            reference 100, i.e. about popsize x generations evaluations).
        crossover_prob: Pc, probability that a mating pair is crossed (SBX).
        crossover_eta: eta_c of SBX (larger = children closer to parents).
        mutation_prob: Pm, probability that an individual is mutated (polynomial mutation).
        mutation_eta: eta_m of polynomial mutation.
        crossover_var_prob: per-gene SBX probability within a crossed pair (pymoo: 0.5).
        mutation_var_prob: per-gene mutation probability; null = 1 / number of free genes.
        seed: random seed of the whole run.
        eliminate_duplicates: drop children equal to a population member or to each other.
        max_mating_rounds: mating rounds per generation to fill the offspring with new genomes.
        init_max_rounds: rejection-sampling rounds for the capacity-feasible initial population.
    """

    popsize: int = 150
    generations: int = 100
    crossover_prob: float = 0.95
    crossover_eta: float = 3.0
    mutation_prob: float = 0.95
    mutation_eta: float = 3.0
    crossover_var_prob: float = 0.5
    mutation_var_prob: float | None = None
    seed: int = 1
    eliminate_duplicates: bool = True
    max_mating_rounds: int = 20
    init_max_rounds: int = 50

    def __post_init__(self) -> None:
        if self.popsize < 2:
            raise ValueError(f"ga.popsize={self.popsize} must be >= 2")
        if self.generations < 1:
            raise ValueError(f"ga.generations={self.generations} must be >= 1")
        for name in ("crossover_prob", "mutation_prob", "crossover_var_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ga.{name}={value} must be in [0, 1]")
        for name in ("crossover_eta", "mutation_eta"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ga.{name}={getattr(self, name)} must be positive")


def make_batch(problem: Problem, values: torch.Tensor, evals: torch.Tensor | None = None) -> SolutionBatch:
    """A :class:`SolutionBatch` holding ``values`` (and, when given, already computed ``evals``)."""
    batch = SolutionBatch(problem, popsize=int(values.shape[0]), empty=True, device=values.device)
    batch.set_values(values)
    if evals is not None:
        batch.set_evals(evals.to(batch.device))
    return batch


def survival_order(problem: Problem, evals: torch.Tensor, pool: SolutionBatch | None = None) -> torch.Tensor:
    """Best-first order of a pool by constraint domination.

    Needs ``problem.cv_column`` (index into ``evals`` of the total constraint violation, 0 when
    feasible) and, for one objective, ``problem.key_columns`` (sort keys, minimised in order).
    With two or more objectives the feasible designs are ordered by NSGA-II fronts and crowding.
    """
    cv = evals[:, problem.cv_column]
    if problem.is_multi_objective:
        feasible = (cv <= 0).nonzero().reshape(-1)
        infeasible = (cv > 0).nonzero().reshape(-1)
        parts = []
        if feasible.numel() > 0:
            if pool is None:
                raise ValueError("multi-objective survival needs the SolutionBatch pool")
            info = pool.take(feasible).arg_pareto_sort(crowdsort=True)
            parts.append(feasible[torch.cat([f.to(feasible.device) for f in info.fronts])])
        if infeasible.numel() > 0:
            parts.append(infeasible[torch.argsort(cv[infeasible], stable=True)])
        return torch.cat(parts)
    keys = [cv.clamp_min(0)] + [evals[:, c] for c in problem.key_columns]
    return lexsort(keys)


class ConstrainedGA(SearchAlgorithm):
    """Elitist GA with SBX + polynomial mutation on integer genomes and constraint domination.

    Args:
        problem: an EvoTorch problem with ``dtype=torch.int64``, per-gene ``lower_bounds`` /
            ``upper_bounds`` (option indices; equal bounds freeze a gene), ``cv_column`` and
            ``key_columns`` (see :func:`survival_order`). When it has a
            ``sample_initial(n, generator)`` method, the initial population comes from it.
        config: :class:`GAConfig`.
        initial_values: optional genomes to start from (else sampled).
    """

    def __init__(self, problem: Problem, config: GAConfig, initial_values: torch.Tensor | None = None):
        SearchAlgorithm.__init__(
            self, problem,
            best_objective=self._status_best_objective, n_feasible=self._status_n_feasible,
            n_evaluations=lambda: self.n_evaluations, n_unique=self._status_n_unique,
        )
        self.config = config
        self.device = torch.device(problem.device)
        self.lower = problem.lower_bounds.to(self.device).long()
        self.upper = problem.upper_bounds.to(self.device).long()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(config.seed))
        self.n_evaluations = 0
        self.last_evaluated: torch.Tensor | None = None  # evals of the latest evaluated batch
        self.last_values: torch.Tensor | None = None  # and its genomes
        self._population: SolutionBatch | None = None
        self._initial_values = initial_values

    # ------------------------------------------------------------------ population
    @property
    def population(self) -> SolutionBatch:
        """The current population, sorted best-first (available after the first step)."""
        if self._population is None:
            raise RuntimeError("no population yet: the first step() creates the initial population")
        return self._population

    @property
    def has_population(self) -> bool:
        return self._population is not None

    def _evaluate(self, values: torch.Tensor) -> SolutionBatch:
        batch = make_batch(self.problem, values)
        self.problem.evaluate(batch)
        self.n_evaluations += int(values.shape[0])
        self.last_evaluated = batch.evals
        self.last_values = values
        return batch

    def _sorted(self, batch: SolutionBatch, n: int) -> SolutionBatch:
        order = survival_order(self.problem, batch.evals, batch)[:n]
        return make_batch(self.problem, batch.values[order].clone(), batch.evals[order].clone())

    def _initialize(self) -> None:
        n = self.config.popsize
        if self._initial_values is not None:
            values = self._initial_values.to(self.device).long()
        elif hasattr(self.problem, "sample_initial"):
            values = self.problem.sample_initial(n, self.generator, max_rounds=self.config.init_max_rounds)
        else:
            values = self.sample_uniform(n)
        values = values[first_occurrence(values)] if self.config.eliminate_duplicates else values
        self._population = self._sorted(self._evaluate(values), n)

    def sample_uniform(self, n: int) -> torch.Tensor:
        """``n`` genomes uniform within the per-gene bounds (frozen genes keep their value)."""
        u = torch.rand((n, self.lower.numel()), generator=self.generator, device=self.device, dtype=torch.float64)
        span = (self.upper - self.lower + 1).double()
        return torch.minimum(self.lower + (u * span).long(), self.upper)

    # ------------------------------------------------------------------ one generation
    def _mate(self, parents: torch.Tensor, n_children: int) -> torch.Tensor:
        cfg = self.config
        n_pairs = math.ceil(n_children / 2)
        rank = torch.arange(parents.shape[0], device=self.device)
        winners = binary_tournament(rank, 2 * n_pairs, self.generator)
        a, b = parents[winners[:n_pairs]], parents[winners[n_pairs:]]
        children = simulated_binary_crossover(
            a, b, self.lower, self.upper, eta=cfg.crossover_eta, prob=cfg.crossover_prob,
            prob_var=cfg.crossover_var_prob, generator=self.generator,
        )
        return polynomial_mutation(
            children, self.lower, self.upper, eta=cfg.mutation_eta, prob=cfg.mutation_prob,
            prob_var=cfg.mutation_var_prob, generator=self.generator,
        )

    def make_offspring(self, parents: torch.Tensor, n_children: int) -> torch.Tensor:
        """``n_children`` new genomes (fewer only if the space is nearly exhausted).

        The first round mates ``n_children``; children equal to a parent, to an accepted child or
        to an earlier child of their round are dropped, and every later round mates only the
        shortfall (pymoo's ``Mating``), until ``max_mating_rounds``.
        """
        parents = _plain(parents)
        if not self.config.eliminate_duplicates:
            return self._mate(parents, n_children)[:n_children]
        seen_rows, seen_hashes = parents, row_hash(parents)
        accepted = parents[:0]
        for _ in range(self.config.max_mating_rounds):
            shortfall = n_children - accepted.shape[0]
            if shortfall <= 0:
                break
            children = self._mate(parents, shortfall)
            child_hashes = row_hash(children)
            pool_hashes = torch.cat([seen_hashes, child_hashes])
            new = first_occurrence(torch.cat([seen_rows, children]), hashes=pool_hashes)[seen_rows.shape[0]:]
            take = new.nonzero().reshape(-1)[:shortfall]
            accepted = torch.cat([accepted, children[take]])
            seen_rows = torch.cat([seen_rows, children[take]])
            seen_hashes = torch.cat([seen_hashes, child_hashes[take]])
        return accepted

    def _step(self) -> None:
        """Step 1 creates and evaluates the initial population (pymoo counts it as generation 1);
        every later step is one generation of mating, evaluation and elitist survival."""
        if self._population is None:
            self._initialize()
            return
        population = self.population
        children = self.make_offspring(population.values, self.config.popsize)
        if children.shape[0] == 0:
            return
        offspring = self._evaluate(children)
        pool = SolutionBatch.cat([population, offspring])
        self._population = self._sorted(pool, self.config.popsize)

    # ------------------------------------------------------------------ status
    def _status_best_objective(self) -> float:
        pop = self.population
        if pop.evals[0, self.problem.cv_column] > 0:
            return math.nan
        return float(pop.evals[0, 0])

    def _status_n_feasible(self) -> int:
        return int((self.population.evals[:, self.problem.cv_column] <= 0).sum())

    def _status_n_unique(self) -> int:
        return int(first_occurrence(_plain(self.population.values)).sum())

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        pop = self.population
        return {
            "step": self.step_count,
            "values": pop.values.detach().cpu().clone(),
            "evals": pop.evals.detach().cpu().clone(),
            "generator": self.generator.get_state(),
            "n_evaluations": self.n_evaluations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._population = make_batch(self.problem, state["values"].to(self.device), state["evals"].to(self.device))
        self.generator.set_state(state["generator"])
        self._steps_count = int(state["step"])
        self.n_evaluations = int(state["n_evaluations"])


__all__ = ["ConstrainedGA", "GAConfig", "make_batch", "survival_order"]
