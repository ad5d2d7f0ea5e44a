"""The GA's robustness additions: the local-polish neighbourhood, polish generations (budget,
distinct new genomes, resume mid-polish), the per-network niching cap, and shortfall-only
mating. Synthetic EvoTorch problems keep these fast; the joint problem's network ids are checked
on the real genome."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from evotorch import Problem, SolutionBatch

from cimnas.hw.params import HardwareSpace
from cimnas.search.evaluator import DesignEvaluator
from cimnas.search.ga import ConstrainedGA, GAConfig
from cimnas.search.polish import apply_moves, neighbourhood
from cimnas.search.survival import niche_order
from cimnas.search.genome import JointGenome
from cimnas.search.objectives import ObjectiveConfig
from cimnas.search.problem import JointProblem
from cimnas.space import apq_mbv2_tiny

REPO = Path(__file__).resolve().parents[1]


class Separable(Problem):
    """min sum_i w_i (x_i - t_i)^2 + 1 over integer genes; optional product-coupled optimum:
    genes 0 and 1 score only through x0 + x1 (a ridge that one-gene moves cannot walk along)."""

    def __init__(self, upper: list[int], lower: list[int] | None = None, network_genes: int = 0):
        n = len(upper)
        gen = torch.Generator().manual_seed(0)
        self.target = (torch.rand(n, generator=gen, dtype=torch.float64) * torch.tensor(upper).double()).round()
        self.cv_column, self.key_columns = 1, [0]
        self.linked_genes = [0, 1]
        self.network_genes = network_genes
        super().__init__("min", solution_length=n, dtype=torch.int64, bounds=(lower or [0] * n, upper),
                         eval_dtype=torch.float64, eval_data_length=1, store_solution_stats=False)

    def network_keys(self, values: torch.Tensor) -> torch.Tensor:  # networks = the last genes
        return values[:, values.shape[1] - self.network_genes:]

    def network_ids(self, values: torch.Tensor) -> torch.Tensor:
        from cimnas.search.operators import first_index

        return first_index(self.network_keys(values))

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        x = batch.values.as_subclass(torch.Tensor).double()
        obj = 1.0 + ((x - self.target) ** 2).sum(1)
        batch.set_evals(torch.stack([obj, torch.zeros_like(obj)], 1))


def test_neighbourhood_is_every_one_gene_and_linked_two_gene_change():
    lower = torch.tensor([0, 0, 2, 0, 1])
    upper = torch.tensor([3, 2, 2, 0, 4])  # gene 2 frozen at 2, gene 3 single-option
    x = torch.tensor([1, 2, 2, 0, 4])
    moves = neighbourhood(x, lower, upper, linked=[0, 1, 2])
    rows = apply_moves(x, moves)
    span = (upper - lower).tolist()
    assert moves.shape[0] == sum(span) + span[0] * span[1]  # frozen linked gene 2 adds no pairs
    assert torch.unique(rows, dim=0).shape[0] == rows.shape[0]
    changed = (rows != x).sum(1)
    assert ((changed == 1) | (changed == 2)).all()
    assert (changed == 2).sum() == span[0] * span[1]
    assert ((rows >= lower) & (rows <= upper)).all()
    assert (rows[:, 2] == 2).all() and (rows[:, 3] == 0).all()
    # exactly the brute-force neighbourhood
    grid = torch.cartesian_prod(*[torch.arange(int(lo), int(hi) + 1) for lo, hi in zip(lower, upper)])
    diff = grid != x
    one = diff.sum(1) == 1
    two = (diff.sum(1) == 2) & diff[:, 0] & diff[:, 1]
    expected = grid[one | two]
    assert torch.equal(torch.unique(rows, dim=0), torch.unique(expected, dim=0))


def test_polish_generations_keep_the_budget_and_add_distinct_neighbours():
    problem = Separable([6] * 8)
    config = GAConfig(popsize=12, generations=10, seed=4, polish_fraction=0.3, max_per_network=None)
    ga = ConstrainedGA(problem, config)
    assert ga.polish_generations == 3
    for _ in range(7):
        ga.step()
    population = ga.population.values.as_subclass(torch.Tensor).clone()
    children = ga.polish_candidates(population, 12)
    assert children.shape[0] == 12
    assert torch.unique(torch.cat([population, children]), dim=0).shape[0] == 24  # new and distinct
    best = population[0]
    changed = (children != best).sum(1)
    assert ((changed == 1) | ((changed == 2) & (children[:, :2] != best[:2]).all(1))).all()
    while ga.step_count < config.generations:
        ga.step()
    assert ga.n_evaluations == 12 * 10
    # a separable bowl: a long enough polish descends to the optimum
    long = ConstrainedGA(problem, GAConfig(popsize=12, generations=40, seed=4, polish_fraction=0.8, max_per_network=None))
    while long.step_count < 40:
        long.step()
    assert float(long.population.evals[0, 0]) == 1.0


def test_polish_moves_on_when_a_neighbourhood_is_used_up():
    problem = Separable([1, 1, 2])  # 4 + 2 linked pairs... a neighbourhood of 5 < popsize
    ga = ConstrainedGA(problem, GAConfig(popsize=6, generations=3, seed=0, polish_fraction=0.5,
                                         eliminate_duplicates=True, max_per_network=None))
    ga.step()
    population = ga.population.values.as_subclass(torch.Tensor).clone()
    children = ga.polish_candidates(population, 6)
    pool = torch.cat([population, children])
    assert torch.unique(pool, dim=0).shape[0] == pool.shape[0]
    assert children.shape[0] == 6  # 12 genomes in the space: enough after several incumbents
    assert len(ga._polish.polished) >= 1


def test_resume_mid_polish_reproduces_the_uninterrupted_run():
    problem = Separable([9] * 10, network_genes=3)
    config = GAConfig(popsize=10, generations=12, seed=2, polish_fraction=0.5, max_per_network=2)
    full = ConstrainedGA(problem, config)
    while full.step_count < config.generations:
        full.step()
    first = ConstrainedGA(problem, config)
    while first.step_count < 9:  # three polish generations done, three to go
        first.step()
    state = first.state_dict()
    resumed = ConstrainedGA(problem, config)
    resumed.load_state_dict(state)
    while resumed.step_count < config.generations:
        resumed.step()
    assert torch.equal(resumed.population.values, full.population.values)
    assert torch.equal(resumed.population.evals, full.population.evals)
    assert resumed.n_evaluations == full.n_evaluations == 10 * 12


def test_niche_order_caps_each_network():
    ids = torch.tensor([0, 0, 2, 0, 2, 5, 0, 2, 5])
    order = niche_order(ids, 2)
    assert order.tolist() == [0, 1, 2, 4, 5, 8, 3, 6, 7]
    assert torch.equal(niche_order(ids, 10), torch.arange(9))


def test_niching_keeps_distinct_networks_in_the_population():
    problem = Separable([5] * 6, network_genes=2)  # 36 networks
    capped = ConstrainedGA(problem, GAConfig(popsize=20, generations=15, seed=1, max_per_network=3, polish_fraction=0))
    free = ConstrainedGA(problem, GAConfig(popsize=20, generations=15, seed=1, max_per_network=None, polish_fraction=0))
    for ga in (capped, free):
        while ga.step_count < 15:
            ga.step()
    ids = problem.network_ids(capped.population.values.as_subclass(torch.Tensor))
    counts = torch.bincount(ids)
    assert int(counts.max()) <= 3 and int((counts > 0).sum()) >= 7
    free_ids = problem.network_ids(free.population.values.as_subclass(torch.Tensor))
    assert int(free_ids.unique().numel()) < int(ids.unique().numel())
    assert float(capped.population.evals[0, 0]) <= float(capped.population.evals[:, 0].min())  # best kept first


def test_shortfall_only_mating_makes_exactly_the_missing_children():
    problem = Separable([2] * 5)  # 243 genomes: mating keeps producing duplicates
    ga = ConstrainedGA(problem, GAConfig(popsize=40, generations=2, seed=0))
    ga.step()
    counts = []
    original = ga._mate

    def counting(parents, n):
        counts.append(n)
        return original(parents, n)

    ga._mate = counting
    parents = ga.population.values.as_subclass(torch.Tensor)
    children = ga.make_offspring(parents, 40)
    assert children.shape[0] == 40
    n_parents = torch.unique(parents, dim=0).shape[0]
    assert n_parents == parents.shape[0]
    assert torch.unique(torch.cat([parents, children]), dim=0).shape[0] == n_parents + 40
    assert counts[0] == 40 and len(counts) > 1 and counts[-1] < 40 and all(b <= a for a, b in zip(counts, counts[1:]))


def test_joint_network_ids_ignore_hardware_and_skipped_blocks():
    genome = JointGenome(apq_mbv2_tiny(), HardwareSpace.from_yaml(REPO / "configs/hw/reference.yaml"))

    class Acc:
        def predict(self, arch):
            return torch.full((arch.batch_size,), 0.8)

    problem = JointProblem(DesignEvaluator(genome, Acc()), ObjectiveConfig())
    gen = torch.Generator().manual_seed(0)
    x = genome.random(4, gen)
    y = x.clone()
    y[:, : genome.num_hw] = genome.random(4, gen)[:, : genome.num_hw]  # other hardware, same network
    arch = genome.decode_arch(x)
    inactive = ~arch.active_blocks(genome.space)
    ids = problem.network_ids(torch.cat([x, y]))
    assert torch.equal(ids[:4], torch.arange(4)) and torch.equal(ids[4:], torch.arange(4))
    # a skipped block's kernel gene does not change the network; an active one does
    names = genome.names
    rows, cols = inactive.nonzero(as_tuple=True)
    if rows.numel():
        r, b = int(rows[0]), int(cols[0])
        z = x[r:r + 1].clone()
        k = names.index(f"kernel[{b}]")
        z[0, k] = (z[0, k] + 1) % genome.genes[k].cardinality
        assert int(problem.network_ids(torch.cat([x[r:r + 1], z]))[1]) == 0
    assert math.isfinite(float(ids.sum()))


def test_offspring_smaller_than_the_population_and_resume():
    """``offspring`` children per generation (pymoo's n_offsprings): popsize + offspring x
    (generations - 1) evaluations, the population stays popsize, polish evaluates as many; a
    resumed run equals the uninterrupted one; null is the plain GA."""
    problem = Separable([9] * 10, network_genes=3)
    config = GAConfig(popsize=20, generations=10, seed=5, polish_fraction=0.3, max_per_network=2, offspring=6)
    full = ConstrainedGA(problem, config)
    sizes = []
    while full.step_count < config.generations:
        before = full.n_evaluations
        full.step()
        sizes.append(full.n_evaluations - before)
    assert sizes == [20] + [6] * 9 and full.population.values.shape[0] == 20
    first = ConstrainedGA(problem, config)
    while first.step_count < 8:  # into the polish generations
        first.step()
    resumed = ConstrainedGA(problem, config)
    resumed.load_state_dict(first.state_dict())
    while resumed.step_count < config.generations:
        resumed.step()
    assert torch.equal(resumed.population.values, full.population.values)
    plain = ConstrainedGA(problem, dataclasses.replace(config, offspring=None))
    same = ConstrainedGA(problem, dataclasses.replace(config, offspring=20))
    for ga in (plain, same):
        while ga.step_count < config.generations:
            ga.step()
    assert torch.equal(plain.population.values, same.population.values) and plain.n_evaluations == 200
    with pytest.raises(ValueError, match=r"ga.offspring=0 must be >= 1"):
        GAConfig(offspring=0)
