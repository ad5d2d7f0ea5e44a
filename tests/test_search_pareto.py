"""The sort-based non-dominated filter equals the quadratic one it replaces (copied below as the
oracle) on random, tie-heavy, infeasible and NaN fronts, and the general M > 2 path equals a
pairwise oracle."""

from __future__ import annotations

import math

import pytest
import torch

from cimnas.search.pareto import nondominated_mask, pareto_mask


def _pareto_mask_quadratic(edap: torch.Tensor, acc: torch.Tensor, feasible: torch.Tensor) -> torch.Tensor:
    """Verbatim copy of the quadratic ``_pareto_mask`` (``cimnas/search/outcome.py``, formerly ``run.py``)."""
    e = torch.where(feasible, edap, torch.full_like(edap, math.inf))
    a = torch.where(feasible, acc, torch.full_like(acc, -math.inf))
    no_worse = (e.unsqueeze(0) <= e.unsqueeze(1)) & (a.unsqueeze(0) >= a.unsqueeze(1))
    better = (e.unsqueeze(0) < e.unsqueeze(1)) | (a.unsqueeze(0) > a.unsqueeze(1))
    dominated = (no_worse & better & feasible.unsqueeze(0)).any(dim=1)
    return feasible & ~dominated


def _nondominated_quadratic(obj: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    no_worse = (obj.unsqueeze(0) <= obj.unsqueeze(1)).all(dim=2)
    better = (obj.unsqueeze(0) < obj.unsqueeze(1)).any(dim=2)
    return valid & ~(no_worse & better & valid.unsqueeze(0)).any(dim=1)


def _case(kind: str, n: int, gen: torch.Generator):
    if kind == "random":
        edap = torch.rand(n, generator=gen, dtype=torch.float64) * 1e-10
        acc = torch.rand(n, generator=gen, dtype=torch.float64)
    elif kind == "anticorrelated":  # most points on the front
        edap = torch.rand(n, generator=gen, dtype=torch.float64)
        acc = edap + 0.01 * torch.rand(n, generator=gen, dtype=torch.float64)
    else:  # ties: few distinct values in each coordinate, many identical points
        edap = torch.randint(0, 6, (n,), generator=gen).double() * 1e-11
        acc = torch.randint(0, 5, (n,), generator=gen).double() / 4
    feasible = torch.rand(n, generator=gen) < 0.8
    return edap, acc, feasible


@pytest.mark.parametrize("kind", ["random", "anticorrelated", "ties"])
def test_sort_based_archive_equals_quadratic(kind):
    gen = torch.Generator().manual_seed(0)
    for n in (0, 1, 2, 3, 7, 50, 400):
        for _ in range(5):
            edap, acc, feasible = _case(kind, n, gen)
            expected = _pareto_mask_quadratic(edap, acc, feasible)
            assert torch.equal(pareto_mask(edap, acc, feasible), expected), (kind, n)
    if kind == "ties":  # identical non-dominated points are all kept, as in the reference
        edap = torch.tensor([1.0, 1.0, 2.0, 1.0, 0.5])
        acc = torch.tensor([0.5, 0.5, 0.9, 0.4, 0.1])
        mask = pareto_mask(edap, acc, torch.ones(5, dtype=torch.bool))
        assert mask.tolist() == [True, True, True, False, True]


def test_nan_inf_and_infeasible_rows_as_in_the_reference():
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        edap, acc, feasible = _case("ties", 60, gen)
        special = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0])
        pick = torch.randint(0, 5, (60,), generator=gen)
        where_e = torch.rand(60, generator=gen) < 0.15
        where_a = torch.rand(60, generator=gen) < 0.15
        edap = torch.where(where_e, special[pick], edap)
        acc = torch.where(where_a, special[pick.flip(0)], acc)
        expected = _pareto_mask_quadratic(edap, acc, feasible)
        assert torch.equal(pareto_mask(edap, acc, feasible), expected)
    # an infeasible row never dominates, a feasible NaN row is kept
    edap = torch.tensor([0.1, 1.0, math.nan])
    acc = torch.tensor([0.99, 0.5, 0.2])
    assert pareto_mask(edap, acc, torch.tensor([False, True, True])).tolist() == [False, True, True]


@pytest.mark.parametrize("m", [1, 3, 4])
def test_general_path_equals_pairwise_oracle(m):
    gen = torch.Generator().manual_seed(m)
    for n, block in ((0, 8), (1, 8), (40, 7), (300, 16), (300, 4096)):
        for ties in (False, True):
            obj = (torch.randint(0, 4, (n, m), generator=gen).double() if ties
                   else torch.rand(n, m, generator=gen, dtype=torch.float64))
            if n:
                obj[torch.rand(n, generator=gen) < 0.05, 0] = math.nan
            valid = torch.rand(n, generator=gen) < 0.9
            expected = _nondominated_quadratic(obj, valid)
            assert torch.equal(nondominated_mask(obj, valid, block=block), expected), (m, n, block, ties)


def test_bad_shapes_name_the_arguments():
    with pytest.raises(ValueError, match="edap, acc, feasible"):
        pareto_mask(torch.zeros(3), torch.zeros(4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[N, M\]"):
        nondominated_mask(torch.zeros(3))


def test_pareto_mask_takes_evotorch_read_only_tensors():
    """The archive receives EvoTorch's ReadOnlyTensor evaluations (regression)."""
    from evotorch.tools import as_read_only_tensor

    g = torch.Generator().manual_seed(0)
    edap, acc = torch.rand(50, generator=g, dtype=torch.float64), torch.rand(50, generator=g, dtype=torch.float64)
    feasible = torch.rand(50, generator=g) < 0.8
    got = pareto_mask(as_read_only_tensor(edap), as_read_only_tensor(acc), as_read_only_tensor(feasible))
    assert torch.equal(got, _pareto_mask_quadratic(edap, acc, feasible))
