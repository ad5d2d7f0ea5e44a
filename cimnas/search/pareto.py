"""Non-dominated filtering without [N, N] matrices.

:func:`pareto_mask` has exactly the contract of the quadratic ``outcome._pareto_mask`` (feasible designs
not dominated by another feasible one in EDAP min, accuracy max) in O(N log N): one lexicographic
sort and a running maximum. :func:`nondominated_mask` is the general form (any number of minimised
objectives); with two it takes the same sort path, with more it filters in sorted blocks against
the front found so far (O(N · front) instead of O(N²) memory and time).

Semantics shared with the quadratic reference, including its corner cases:

- ``j`` dominates ``i`` when ``j`` is no worse in every objective and strictly better in one;
  equal points do not dominate each other, so every copy of a non-dominated point is kept;
- only valid (feasible) rows dominate, and only valid rows can be in the result;
- a valid row with a NaN objective compares false with everything: it is never dominated and
  dominates nothing, so it is kept;
- infinities are ordinary values (``inf <= inf``).
"""

from __future__ import annotations

import math

import torch


def pareto_mask(edap: torch.Tensor, acc: torch.Tensor, feasible: torch.Tensor) -> torch.Tensor:
    """``bool [N]``: feasible designs not dominated by another feasible one in (EDAP min, accuracy max)."""
    if not (edap.shape == acc.shape == feasible.shape and edap.dim() == 1):
        raise ValueError(f"pareto_mask: edap, acc, feasible must be 1-D of one length, found "
                         f"{tuple(edap.shape)}, {tuple(acc.shape)}, {tuple(feasible.shape)}")
    return nondominated_mask(torch.stack([edap, -acc], dim=1), feasible)


def nondominated_mask(objectives: torch.Tensor, valid: torch.Tensor | None = None, *, block: int = 4096) -> torch.Tensor:
    """``bool [N]``: valid rows of ``objectives [N, M]`` (all minimised) that no other valid row dominates.

    ``valid`` defaults to all rows. ``block`` bounds the pairwise comparisons of the M > 2 path
    (``block x front`` and ``block x block`` at a time).
    """
    if objectives.dim() != 2:
        raise ValueError(f"nondominated_mask: objectives must be [N, M], found shape {tuple(objectives.shape)}")
    # plain tensors: EvoTorch hands over read-only subclasses, whose results cannot be filled in
    objectives = objectives.as_subclass(torch.Tensor)
    valid = None if valid is None else valid.as_subclass(torch.Tensor)
    n, m = objectives.shape
    device = objectives.device
    valid = torch.ones(n, dtype=torch.bool, device=device) if valid is None else valid.to(device=device, dtype=torch.bool)
    # NaN rows: never dominated, dominate nothing (as the elementwise comparisons of the reference)
    nan = torch.isnan(objectives).any(dim=1)
    comparable = valid & ~nan
    result = valid & nan
    index = comparable.nonzero().reshape(-1)
    if index.numel() == 0:
        return result
    if m == 0:
        result[index] = True
        return result
    obj = objectives[index]
    keep = _nondominated_2d(obj) if m <= 2 else _nondominated_blocks(obj, block)
    result[index[keep]] = True
    return result


def _lex_order(obj: torch.Tensor) -> torch.Tensor:
    order = torch.arange(obj.shape[0], device=obj.device)
    for c in reversed(range(obj.shape[1])):
        order = order[torch.argsort(obj[order, c], stable=True)]
    return order


def _nondominated_2d(obj: torch.Tensor) -> torch.Tensor:
    """Non-NaN ``[K, 1 or 2]`` minimised: sort by (f0, f1); row i is dominated iff a row of a strictly
    smaller f0 has f1 <= f1_i, or a row of the same f0 has f1 < f1_i."""
    if obj.shape[1] == 1:
        obj = torch.cat([obj, torch.zeros_like(obj)], dim=1)
    order = _lex_order(obj)
    f0, f1 = obj[order, 0], obj[order, 1]
    k = f0.numel()
    new_group = torch.ones(k, dtype=torch.bool, device=obj.device)
    new_group[1:] = f0[1:] != f0[:-1]
    starts = new_group.nonzero().reshape(-1)
    group = torch.cumsum(new_group.long(), 0) - 1
    start = starts[group]  # first sorted position of each row's f0 group (its smallest f1)
    running_min = torch.cummin(f1, 0).values
    before = torch.where(start > 0, running_min[(start - 1).clamp_min(0)], torch.full_like(f1, math.inf))
    dominated = (before <= f1) | (f1[start] < f1)
    keep = torch.zeros(k, dtype=torch.bool, device=obj.device)
    keep[order] = ~dominated
    return keep


def _dominates(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``bool [A, B]``: a_i dominates b_j (minimised)."""
    no_worse = (a.unsqueeze(1) <= b.unsqueeze(0)).all(dim=2)
    better = (a.unsqueeze(1) < b.unsqueeze(0)).any(dim=2)
    return no_worse & better


def _nondominated_blocks(obj: torch.Tensor, block: int) -> torch.Tensor:
    """M > 2: in lexicographic order a dominator always comes before the row it dominates, and
    domination is transitive, so each sorted block need only be checked against itself and the
    non-dominated rows before it."""
    order = _lex_order(obj)
    sorted_obj = obj[order]
    k = sorted_obj.shape[0]
    keep_sorted = torch.zeros(k, dtype=torch.bool, device=obj.device)
    front = sorted_obj[:0]
    for s in range(0, k, max(1, block)):
        chunk = sorted_obj[s:s + block]
        dominated = _dominates(chunk, chunk).any(dim=0)
        if front.shape[0] > 0:
            for f in range(0, front.shape[0], max(1, block)):
                dominated |= _dominates(front[f:f + block], chunk).any(dim=0)
        keep_sorted[s:s + block] = ~dominated
        front = torch.cat([front, chunk[~dominated]])
    keep = torch.zeros(k, dtype=torch.bool, device=obj.device)
    keep[order] = keep_sorted
    return keep


__all__ = ["nondominated_mask", "pareto_mask"]
