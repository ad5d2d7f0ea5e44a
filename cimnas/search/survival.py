"""Survival of the constrained GA: the best-first order of a pool of evaluated genomes by
constraint domination (lexicographic keys for one objective; NSGA-II fronts and crowding for two or
more, EvoTorch's ``arg_pareto_sort``), and the per-network niching cap. :func:`make_batch` builds
the EvoTorch batches that are ordered."""

from __future__ import annotations

import torch
from evotorch import Problem, SolutionBatch

from cimnas.search.operators import lexsort


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


def niche_order(network_ids: torch.Tensor, cap: int) -> torch.Tensor:
    """Stable order (into the given best-first sequence) moving every individual beyond the
    ``cap``-th of its network behind all within-cap ones."""
    n = network_ids.numel()
    position = torch.arange(n, device=network_ids.device)
    by_network = torch.argsort(network_ids, stable=True)  # ranks stay in order within a network
    sorted_ids = network_ids[by_network]
    new_group = torch.ones(n, dtype=torch.bool, device=network_ids.device)
    new_group[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group_start = torch.cummax(torch.where(new_group, position, torch.zeros_like(position)), 0).values
    occurrence = torch.empty_like(position)
    occurrence[by_network] = position - group_start
    return torch.argsort((occurrence >= cap).long(), stable=True)


__all__ = ["make_batch", "niche_order", "survival_order"]
