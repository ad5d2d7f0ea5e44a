"""The fast GA operators equal their reference forms: masked SBX / polynomial mutation equal the
dense ones bit for bit under the same random stream, and the hash-based duplicate filter equals
``torch.unique(dim=0)`` first occurrence (collisions included)."""

from __future__ import annotations

import pytest
import torch

from cimnas.search import operators
from cimnas.search.operators import (
    first_occurrence, first_occurrence_exact, polynomial_mutation, row_hash, simulated_binary_crossover,
)


def _parents(gen: torch.Generator, n: int, upper: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.randint(0, int(u) + 1, (n,), generator=gen) for u in upper], 1)


@pytest.mark.parametrize("eta,prob,prob_var", [(3.0, 0.95, 0.5), (20.0, 1.0, 0.9), (0.5, 0.3, 0.1)])
def test_masked_operators_equal_dense_bit_for_bit(eta, prob, prob_var):
    gen = torch.Generator().manual_seed(int(eta * 10))
    lower = torch.tensor([0, 0, 2, 0, 0, 1, 0] * 20)
    upper = torch.tensor([4, 48, 2, 0, 7, 2, 1] * 20)  # frozen (2..2) and single-option (0..0) genes
    a, b = _parents(gen, 500, upper).clamp(min=lower), _parents(gen, 500, upper).clamp(min=lower)
    a[:50] = b[:50]  # identical pairs: nothing to recombine
    state = gen.get_state()
    dense = simulated_binary_crossover(a, b, lower, upper, eta=eta, prob=prob, prob_var=prob_var, generator=gen,
                                       masked=False)
    after_dense = gen.get_state()
    gen.set_state(state)
    masked = simulated_binary_crossover(a, b, lower, upper, eta=eta, prob=prob, prob_var=prob_var, generator=gen)
    assert torch.equal(masked, dense) and torch.equal(gen.get_state(), after_dense)
    assert (dense != torch.cat([a, b])).float().mean() > 0.01  # the operator did change genes

    for pv in (None, prob_var):
        state = gen.get_state()
        dense_m = polynomial_mutation(dense, lower, upper, eta=eta, prob=prob, prob_var=pv, generator=gen,
                                      masked=False)
        after_dense = gen.get_state()
        gen.set_state(state)
        masked_m = polynomial_mutation(dense, lower, upper, eta=eta, prob=prob, prob_var=pv, generator=gen)
        assert torch.equal(masked_m, dense_m) and torch.equal(gen.get_state(), after_dense)
        assert (dense_m != dense).any()


def test_hash_first_occurrence_equals_unique_dim0():
    gen = torch.Generator().manual_seed(0)
    for n, width, high in ((0, 5, 3), (1, 5, 3), (300, 4, 2), (2000, 141, 3), (500, 1, 10)):
        rows = torch.randint(0, high, (n, width), generator=gen)
        if n > 10:
            rows = torch.cat([rows, rows[torch.randint(0, n, (n // 2,), generator=gen)]])  # many duplicates
            rows = rows[torch.randperm(rows.shape[0], generator=gen)]
        expected = first_occurrence_exact(rows)
        assert torch.equal(first_occurrence(rows), expected)
        assert torch.equal(first_occurrence(rows, hashes=row_hash(rows)), expected)
    floats = torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.25, 1.0]])
    assert first_occurrence(floats).tolist() == [True, False, True]


def test_hash_collisions_fall_back_to_the_exact_answer(monkeypatch):
    # a degenerate hash (every row collides) must still give the exact answer
    monkeypatch.setattr(operators, "row_hash", lambda rows: torch.zeros(rows.shape[0], dtype=torch.long))
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 3, (400, 6), generator=gen)
    assert torch.equal(operators.first_occurrence(rows), first_occurrence_exact(rows))
    colliding = torch.zeros(400, dtype=torch.long)
    assert torch.equal(first_occurrence(rows, hashes=colliding), first_occurrence_exact(rows))


def test_row_hash_rejects_float_rows():
    with pytest.raises(TypeError, match="integer rows"):
        row_hash(torch.zeros(2, 3))
