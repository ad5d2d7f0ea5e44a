"""Variation and selection operators with the reference GA's semantics (pymoo 0.6 defaults as used
by the CIMNAS code, ``docs/reference/cimnas-reference-code.md`` §1.4), batched in torch.

All operators act on integer option indices with per-gene bounds ``[lower, upper]``. SBX and
polynomial mutation run on the indices as *real* numbers and the result is rounded back (the
reference's ``vtype=float`` + rounding repair). Random numbers are drawn in ``float64`` from an
explicit :class:`torch.Generator` (never in the genome's integer dtype: drawing "uniform" numbers in
``int64`` is what makes EvoTorch 0.6.1's own SBX return NaN on integer problems). Genes with
``lower == upper`` (single-option or frozen genes) are never touched.
"""

from __future__ import annotations

import math

import torch


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


def binary_tournament(rank: torch.Tensor, n_winners: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n_winners`` binary-tournament winners.

    ``rank [N]`` is each individual's position in the survival order (0 = best: constraint
    violation first, then fitness / Pareto rank and crowding), so comparing ranks is the
    reference's "constraint violation, then fitness" comparison. Competitors are drawn from
    concatenated random permutations (every individual competes equally often), as pymoo does.
    """
    n = rank.shape[0]
    needed = 2 * n_winners
    n_perms = math.ceil(needed / n)
    perms = _uniform((n_perms, n), generator, rank.device).argsort(dim=1).reshape(-1)[:needed]
    pairs = perms.reshape(n_winners, 2)
    first_wins = rank[pairs[:, 0]] <= rank[pairs[:, 1]]
    return torch.where(first_wins, pairs[:, 0], pairs[:, 1])


def simulated_binary_crossover(
    parent_a: torch.Tensor, parent_b: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, *,
    eta: float, prob: float, generator: torch.Generator, prob_var: float = 0.5, prob_exchange: float = 0.5,
) -> torch.Tensor:
    """Bounded SBX (Deb & Agrawal) on ``[P, L]`` index pairs; returns ``[2P, L]`` rounded children.

    ``prob`` is the probability that a pair is crossed at all (Pc); each gene of a crossed pair is
    recombined with ``prob_var`` (0.5), and the two children's values are swapped with
    ``prob_exchange`` (0.5). Uncrossed genes are copied from the parents.
    """
    device = parent_a.device
    a = parent_a.double()
    b = parent_b.double()
    lo = lower.double().expand_as(a)
    hi = upper.double().expand_as(a)
    n_pairs, length = a.shape
    pair_crossed = _uniform((n_pairs, 1), generator, device) < prob
    cross = (_uniform((n_pairs, length), generator, device) < prob_var) & pair_crossed
    cross &= (a - b).abs() > 1e-14
    cross &= hi > lo
    y1 = torch.minimum(a, b)
    y2 = torch.maximum(a, b)
    delta = torch.where(cross, y2 - y1, torch.ones_like(y1))  # avoid 0/0 where not crossed
    rand = _uniform((n_pairs, length), generator, device)

    def beta_q(beta: torch.Tensor) -> torch.Tensor:
        alpha = 2.0 - beta.pow(-(eta + 1.0))
        low = (rand * alpha).pow(1.0 / (eta + 1.0))
        high = (1.0 / (2.0 - rand * alpha)).pow(1.0 / (eta + 1.0))
        return torch.where(rand <= 1.0 / alpha, low, high)

    c1 = 0.5 * ((y1 + y2) - beta_q(1.0 + 2.0 * (y1 - lo) / delta) * delta)
    c2 = 0.5 * ((y1 + y2) + beta_q(1.0 + 2.0 * (hi - y2) / delta) * delta)
    swap = _uniform((n_pairs, length), generator, device) < prob_exchange
    c1, c2 = torch.where(swap, c2, c1), torch.where(swap, c1, c2)
    child_a = torch.where(cross, c1, a)
    child_b = torch.where(cross, c2, b)
    children = torch.cat([child_a, child_b], dim=0)
    return _round_clip(children, lower, upper)


def polynomial_mutation(
    x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, *, eta: float, prob: float,
    generator: torch.Generator, prob_var: float | None = None,
) -> torch.Tensor:
    """Bounded polynomial mutation on ``[N, L]`` indices; returns rounded, clipped indices.

    ``prob`` is the probability that an individual is mutated (Pm); each free gene of a mutated
    individual changes with ``prob_var`` (default ``min(0.5, 1 / n_free)``: about one gene).
    """
    device = x.device
    free = upper > lower
    n_free = int(free.sum())
    if n_free == 0:
        return x.clone()
    if prob_var is None:
        prob_var = min(0.5, 1.0 / n_free)
    xf = x.double()
    lo = lower.double().expand_as(xf)
    hi = upper.double().expand_as(xf)
    n, length = xf.shape
    individual = _uniform((n, 1), generator, device) < prob
    mutate = (_uniform((n, length), generator, device) < prob_var) & individual & free
    span = torch.where(free, hi - lo, torch.ones_like(hi))
    delta1 = (xf - lo) / span
    delta2 = (hi - xf) / span
    power = 1.0 / (eta + 1.0)
    rand = _uniform((n, length), generator, device)
    val_low = 2.0 * rand + (1.0 - 2.0 * rand) * (1.0 - delta1).pow(eta + 1.0)
    val_high = 2.0 * (1.0 - rand) + 2.0 * (rand - 0.5) * (1.0 - delta2).pow(eta + 1.0)
    delta_q = torch.where(rand <= 0.5, val_low.pow(power) - 1.0, 1.0 - val_high.pow(power))
    mutated = torch.where(mutate, xf + delta_q * span, xf)
    return _round_clip(mutated, lower, upper)


def _round_clip(values: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    rounded = torch.round(values).long()
    return torch.maximum(torch.minimum(rounded, upper.long()), lower.long())


def first_occurrence(rows: torch.Tensor) -> torch.Tensor:
    """``bool [N]``: True for the first occurrence of every distinct row of ``rows [N, L]``."""
    if rows.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=rows.device)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    n = rows.shape[0]
    position = torch.arange(n, device=rows.device)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return first[inverse] == position


def lexsort(keys: list[torch.Tensor]) -> torch.Tensor:
    """Indices sorting by ``keys[0]``, then ``keys[1]``, ... (all ascending, stable)."""
    order = torch.arange(keys[0].shape[0], device=keys[0].device)
    for key in reversed(keys):
        order = order[torch.argsort(key[order], stable=True)]
    return order


__all__ = [
    "binary_tournament", "first_occurrence", "lexsort", "polynomial_mutation", "simulated_binary_crossover",
]
