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
   infeasible ones after them by constraint violation (constraint domination)
   (:mod:`cimnas.search.survival`).

Beyond the reference (both off with ``polish_fraction=0, max_per_network=None``): the last
``polish_fraction`` of the generations are a batched local search around the best designs (one-gene
and linked two-gene moves, :mod:`cimnas.search.polish`), and survival caps the
copies of each network (niching). Mating rounds after the first make only the shortfall (as
pymoo's ``Mating``); SBX / mutation compute only the genes they change and duplicates are found by
row hashes, both with the exact forms' results.

The population is kept sorted best-first, so an individual's index is its rank and the tournament
compares indices. Evaluation goes through the EvoTorch :class:`~evotorch.Problem` (vectorized,
optional Ray actors). All randomness comes from one generator owned by the algorithm, whose state
is part of :meth:`state_dict`, so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from evotorch import Problem, SolutionBatch
from evotorch.algorithms.searchalgorithm import SearchAlgorithm

from cimnas.search.operators import (
    RowSet, binary_tournament, first_index, first_occurrence, polynomial_mutation, row_hash, simulated_binary_crossover,
)
from cimnas.search.polish import PolishState, untried_neighbours
from cimnas.search.survival import make_batch, niche_order, survival_order


def _plain(values: torch.Tensor) -> torch.Tensor:
    """``values`` as a plain tensor (EvoTorch's read-only subclass routes every op through Python)."""
    return values.as_subclass(torch.Tensor) if type(values) is not torch.Tensor else values


@dataclass
class GAConfig:
    """Genetic-algorithm settings (defaults: the reference's example run, plus the local polish
    and niching, which ``polish_fraction=0, max_per_network=None`` turn off).

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
        polish_fraction: the share of the generations, at the end of the budget, spent on a
            batched local search instead of mating (0 = the reference's GA; rounded, at most all
            but the first two generations): each of those generations evaluates ``popsize`` untried
            neighbours of the best not-yet-polished design (every one-gene change, and every joint
            change of two of the problem's ``linked_genes``), in a seeded random order, and the
            pool survives as in a GA generation. Same evaluations, same evaluator.
        offspring: children per generation (pymoo's ``n_offsprings``; null = ``popsize``): a larger
            population than the generation's offspring keeps more distinct designs to mate from
            at the same number of evaluations; the polish generations evaluate as many neighbours.
        max_per_network: niching: at most this many individuals per distinct network (the
            problem's ``network_keys``) survive ahead of the others, so the population keeps
            distinct networks while elitism still keeps each network's best (null = no cap, the
            reference's survival).
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
    polish_fraction: float = 0.2
    max_per_network: int | None = 5
    offspring: int | None = None

    def __post_init__(self) -> None:
        if self.popsize < 2:
            raise ValueError(f"ga.popsize={self.popsize} must be >= 2")
        if self.offspring is not None and self.offspring < 1:
            raise ValueError(f"ga.offspring={self.offspring} must be >= 1 or null (= popsize)")
        if self.generations < 1:
            raise ValueError(f"ga.generations={self.generations} must be >= 1")
        for name in ("crossover_prob", "mutation_prob", "crossover_var_prob", "polish_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ga.{name}={value} must be in [0, 1]")
        if self.max_per_network is not None and self.max_per_network < 1:
            raise ValueError(f"ga.max_per_network={self.max_per_network} must be >= 1 or null")
        for name in ("crossover_eta", "mutation_eta"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ga.{name}={getattr(self, name)} must be positive")


#: Statistics in :attr:`ConstrainedGA.status` after each step (besides EvoTorch's ``iter``), plus
#: ``offspring_<reason>`` for each failure reason of the problem's ``reasons`` (index = code, 0 = ok).
STATUS_KEYS = ("best_objective", "median_objective", "n_feasible", "n_evaluations", "n_unique", "offspring_infeasible")


class ConstrainedGA(SearchAlgorithm):
    """Elitist GA with SBX + polynomial mutation on integer genomes and constraint domination.

    Args:
        problem: an EvoTorch problem with ``dtype=torch.int64``, per-gene ``lower_bounds`` /
            ``upper_bounds`` (option indices; equal bounds freeze a gene), ``cv_column`` and
            ``key_columns`` (see :func:`survival_order`). When it has a
            ``sample_initial(n, generator)`` method, the initial population comes from it. Its
            optional ``report_objective(evals)`` (per-design objective of the statistics),
            ``best_index(evals)`` (the best design's row) and ``reasons`` / ``reason_codes(evals)``
            (failure reasons) shape :attr:`status` (see :data:`STATUS_KEYS`).
        config: :class:`GAConfig`.
        initial_values: optional genomes to start from (else sampled).
    """

    def __init__(self, problem: Problem, config: GAConfig, initial_values: torch.Tensor | None = None):
        SearchAlgorithm.__init__(self, problem, **self._status_getters(problem))
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
        self._polish = PolishState()
        self._network_keys: torch.Tensor | None = None  # the population's network keys (niching)

    @property
    def polish_generations(self) -> int:
        """How many final generations are local-polish generations (see ``GAConfig.polish_fraction``)."""
        cfg = self.config
        return min(round(cfg.polish_fraction * cfg.generations), max(0, cfg.generations - 2))

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

    @property
    def _niching(self) -> bool:
        return self.config.max_per_network is not None and hasattr(self.problem, "network_keys")

    def _sorted(self, batch: SolutionBatch, n: int, network_keys: torch.Tensor | None = None) -> SolutionBatch:
        """The best ``n`` of ``batch`` (survival order; with niching, at most ``max_per_network``
        per network ahead of the rest). ``network_keys`` may pass the pool's keys."""
        order = survival_order(self.problem, batch.evals, batch)
        if self._niching:
            keys = self.problem.network_keys(_plain(batch.values)) if network_keys is None else network_keys
            order = order[niche_order(first_index(keys[order]), self.config.max_per_network)]
            self._network_keys = keys[order[:n]]
        order = order[:n]
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
        seen = RowSet(parents, capacity=n_children)
        accepted = parents[:0]
        for _ in range(self.config.max_mating_rounds):
            shortfall = n_children - accepted.shape[0]
            if shortfall <= 0:
                break
            children = self._mate(parents, shortfall)
            hashes = row_hash(children)
            take = seen.new_rows(children, hashes).nonzero().reshape(-1)[:shortfall]
            accepted = torch.cat([accepted, children[take]])
            seen.add(children[take], hashes[take])
        return accepted

    def polish_candidates(self, population: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` untried neighbours of the best not-yet-polished designs of ``population``
        (best-first); see :func:`~cimnas.search.polish.untried_neighbours`."""
        linked = list(getattr(self.problem, "linked_genes", []))
        return untried_neighbours(self._polish, population, n, self.lower, self.upper, linked, self.generator)

    def _step(self) -> None:
        """Step 1 creates and evaluates the initial population (pymoo counts it as generation 1);
        every later step is one generation of mating, evaluation and elitist survival."""
        if self._population is None:
            self._initialize()
            return
        population = self.population
        polish = self.polish_generations
        n_children = self.config.offspring or self.config.popsize
        if polish and self.step_count >= self.config.generations - polish:
            children = self.polish_candidates(_plain(population.values), n_children)
        else:
            children = self.make_offspring(population.values, n_children)
        if children.shape[0] == 0:
            return
        offspring = self._evaluate(children)
        pool = SolutionBatch.cat([population, offspring])
        keys = None
        if self._niching:  # the survivors' keys are kept: only the children are decoded
            if self._network_keys is None or self._network_keys.shape[0] != population.values.shape[0]:
                self._network_keys = self.problem.network_keys(_plain(population.values))
            keys = torch.cat([self._network_keys, self.problem.network_keys(children)])
        self._population = self._sorted(pool, self.config.popsize, keys)

    # ------------------------------------------------------------------ status
    def _status_getters(self, problem: Problem) -> dict[str, Callable[[], Any]]:
        """The per-generation statistics in :attr:`status` (see :data:`STATUS_KEYS`), one
        ``offspring_<reason>`` count per failure reason of the problem's ``reasons``."""
        getters: dict[str, Callable[[], Any]] = {
            "best_objective": self._status_best_objective, "median_objective": self._status_median_objective,
            "n_feasible": self._status_n_feasible, "n_evaluations": lambda: self.n_evaluations,
            "n_unique": self._status_n_unique, "offspring_infeasible": self._status_offspring_infeasible,
        }
        for code, reason in enumerate(getattr(problem, "reasons", ())[1:], start=1):
            getters[f"offspring_{reason}"] = functools.partial(self._status_offspring_reason, code)
        return getters

    def _population_evals(self) -> torch.Tensor:
        return _plain(self.population.evals)

    def _report_objective(self, evals: torch.Tensor) -> torch.Tensor:
        """The objective the statistics report per design: the problem's ``report_objective``
        (e.g. EDAP / accuracy in a Pareto run), else the first objective value."""
        report = getattr(self.problem, "report_objective", None)
        return report(evals) if report is not None else evals[:, 0]

    def _status_best_objective(self) -> float:
        """The reported objective of the best design (the problem's ``best_index``, else the
        first in survival order); NaN when that design is infeasible."""
        evals = self._population_evals()
        best = getattr(self.problem, "best_index", None)
        b = best(evals) if best is not None else 0
        if not bool(evals[b, self.problem.cv_column] <= 0):
            return math.nan
        return float(self._report_objective(evals[b:b + 1])[0])

    def _status_median_objective(self) -> float:
        """Median reported objective of the feasible population (NaN when none is feasible)."""
        evals = self._population_evals()
        objective = self._report_objective(evals[evals[:, self.problem.cv_column] <= 0])
        return float(objective.median()) if objective.numel() else math.nan

    def _status_n_feasible(self) -> int:
        return int((self.population.evals[:, self.problem.cv_column] <= 0).sum())

    def _status_n_unique(self) -> int:
        return int(first_occurrence(_plain(self.population.values)).sum())

    def _status_offspring_infeasible(self) -> int:
        """Infeasible designs among the latest evaluated batch (this generation's offspring)."""
        last = self.last_evaluated
        return int((_plain(last)[:, self.problem.cv_column] > 0).sum()) if last is not None else 0

    def _status_offspring_reason(self, code: int) -> int:
        """Designs of the latest evaluated batch that failed for reason ``code`` (the problem's
        ``reason_codes``)."""
        last = self.last_evaluated
        return int((self.problem.reason_codes(_plain(last)) == code).sum()) if last is not None else 0

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        pop = self.population
        return {
            "step": self.step_count,
            "values": pop.values.detach().cpu().clone(),
            "evals": pop.evals.detach().cpu().clone(),
            "generator": self.generator.get_state(),
            "n_evaluations": self.n_evaluations,
            "polish": self._polish.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._population = make_batch(self.problem, state["values"].to(self.device), state["evals"].to(self.device))
        self.generator.set_state(state["generator"])
        self._steps_count = int(state["step"])
        self.n_evaluations = int(state["n_evaluations"])
        self._polish = PolishState.from_state_dict(state.get("polish"), self.device)
        self._network_keys = None


__all__ = ["STATUS_KEYS", "ConstrainedGA", "GAConfig"]
