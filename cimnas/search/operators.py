"""Variation and selection operators with the reference GA's semantics (pymoo 0.6 defaults as used
by the CIMNAS code, ``docs/reference/cimnas-reference-code.md`` §1.4), batched in torch.

All operators act on integer option indices with per-gene bounds ``[lower, upper]``. SBX and
polynomial mutation run on the indices as *real* numbers and the result is rounded back (the
reference's ``vtype=float`` + rounding repair). Random numbers are drawn in ``float64`` from an
explicit :class:`torch.Generator` (never in the genome's integer dtype: drawing "uniform" numbers in
``int64`` is what makes EvoTorch 0.6.1's own SBX return NaN on integer problems). Genes with
``lower == upper`` (single-option or frozen genes) are never touched. Duplicate elimination works
on row hashes (:func:`row_hash`, :func:`first_occurrence`, :class:`RowSet`), exact on collisions.
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
    masked: bool = True,
) -> torch.Tensor:
    """Bounded SBX (Deb & Agrawal) on ``[P, L]`` index pairs; returns ``[2P, L]`` rounded children.

    ``prob`` is the probability that a pair is crossed at all (Pc); each gene of a crossed pair is
    recombined with ``prob_var`` (0.5), and the two children's values are swapped with
    ``prob_exchange`` (0.5). Uncrossed genes are copied from the parents.

    ``masked`` (default) evaluates the SBX formula only on the recombined genes; ``masked=False``
    is the dense form (every gene, then ``where``). Both draw the same random numbers in the same
    order and give the same children bit for bit (tested).
    """
    device = parent_a.device
    n_pairs, length = parent_a.shape
    pair_crossed = _uniform((n_pairs, 1), generator, device) < prob
    cross = (_uniform((n_pairs, length), generator, device) < prob_var) & pair_crossed
    cross &= parent_a != parent_b  # integer genes: |a - b| > 1e-14 exactly when they differ
    cross &= upper > lower
    rand = _uniform((n_pairs, length), generator, device)
    swap = _uniform((n_pairs, length), generator, device) < prob_exchange
    if not masked:
        a, b = parent_a.double(), parent_b.double()
        lo, hi = lower.double().expand_as(a), upper.double().expand_as(a)
        c1, c2 = _sbx_pair(a, b, lo, hi, rand, eta, cross)
        c1, c2 = torch.where(swap, c2, c1), torch.where(swap, c1, c2)
        children = torch.cat([torch.where(cross, c1, a), torch.where(cross, c2, b)], dim=0)
        return _round_clip(children, lower, upper)
    rows, cols = cross.nonzero(as_tuple=True)
    a, b = parent_a[rows, cols].double(), parent_b[rows, cols].double()
    lo, hi = lower[cols].double(), upper[cols].double()
    c1, c2 = _sbx_pair(a, b, lo, hi, rand[rows, cols], eta, None)
    sw = swap[rows, cols]
    c1, c2 = torch.where(sw, c2, c1), torch.where(sw, c1, c2)
    child_a, child_b = parent_a.clone(), parent_b.clone()
    child_a[rows, cols] = _round_clip(c1, lo.long(), hi.long())
    child_b[rows, cols] = _round_clip(c2, lo.long(), hi.long())
    return torch.cat([child_a, child_b], dim=0)


def _sbx_pair(a: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, rand: torch.Tensor, eta: float,
              cross: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two SBX children (before the exchange); ``cross`` (dense form only) marks the genes
    recombined, elsewhere the spread is set to 1 to avoid 0/0."""
    y1 = torch.minimum(a, b)
    y2 = torch.maximum(a, b)
    delta = y2 - y1 if cross is None else torch.where(cross, y2 - y1, torch.ones_like(y1))

    def beta_q(beta: torch.Tensor) -> torch.Tensor:
        alpha = 2.0 - beta.pow(-(eta + 1.0))
        low = (rand * alpha).pow(1.0 / (eta + 1.0))
        high = (1.0 / (2.0 - rand * alpha)).pow(1.0 / (eta + 1.0))
        return torch.where(rand <= 1.0 / alpha, low, high)

    c1 = 0.5 * ((y1 + y2) - beta_q(1.0 + 2.0 * (y1 - lo) / delta) * delta)
    c2 = 0.5 * ((y1 + y2) + beta_q(1.0 + 2.0 * (hi - y2) / delta) * delta)
    return c1, c2


def polynomial_mutation(
    x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, *, eta: float, prob: float,
    generator: torch.Generator, prob_var: float | None = None, masked: bool = True,
) -> torch.Tensor:
    """Bounded polynomial mutation on ``[N, L]`` indices; returns rounded, clipped indices.

    ``prob`` is the probability that an individual is mutated (Pm); each free gene of a mutated
    individual changes with ``prob_var`` (default ``min(0.5, 1 / n_free)``: about one gene).
    ``masked`` (default) evaluates the mutation only on the genes it changes (about 1 in
    ``n_free``); ``masked=False`` is the dense form. Same random numbers, same result bit for bit.
    """
    device = x.device
    free = upper > lower
    n_free = int(free.sum())
    if n_free == 0:
        return x.clone()
    if prob_var is None:
        prob_var = min(0.5, 1.0 / n_free)
    n, length = x.shape
    individual = _uniform((n, 1), generator, device) < prob
    mutate = (_uniform((n, length), generator, device) < prob_var) & individual & free
    rand = _uniform((n, length), generator, device)
    if not masked:
        xf = x.double()
        lo, hi = lower.double().expand_as(xf), upper.double().expand_as(xf)
        span = torch.where(free, hi - lo, torch.ones_like(hi))
        mutated = torch.where(mutate, xf + _pm_delta(xf, lo, hi, span, rand, eta) * span, xf)
        return _round_clip(mutated, lower, upper)
    rows, cols = mutate.nonzero(as_tuple=True)
    xf = x[rows, cols].double()
    lo, hi = lower[cols].double(), upper[cols].double()
    span = hi - lo  # > 0: only free genes mutate
    out = x.clone()
    out[rows, cols] = _round_clip(xf + _pm_delta(xf, lo, hi, span, rand[rows, cols], eta) * span, lo.long(), hi.long())
    return out


def _pm_delta(xf: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, span: torch.Tensor, rand: torch.Tensor,
              eta: float) -> torch.Tensor:
    delta1 = (xf - lo) / span
    delta2 = (hi - xf) / span
    power = 1.0 / (eta + 1.0)
    val_low = 2.0 * rand + (1.0 - 2.0 * rand) * (1.0 - delta1).pow(eta + 1.0)
    val_high = 2.0 * (1.0 - rand) + 2.0 * (rand - 0.5) * (1.0 - delta2).pow(eta + 1.0)
    return torch.where(rand <= 0.5, val_low.pow(power) - 1.0, 1.0 - val_high.pow(power))


def _round_clip(values: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    rounded = torch.round(values).long()
    return torch.maximum(torch.minimum(rounded, upper.long()), lower.long())


_HASH_SEED = 0x5EED_C1A5


_HASH_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def _hash_weights(length: int, device: torch.device) -> torch.Tensor:
    key = (length, str(device))
    weights = _HASH_WEIGHTS.get(key)
    if weights is None:
        gen = torch.Generator().manual_seed(_HASH_SEED)
        weights = torch.randint(-(2**62), 2**62, (length,), generator=gen, dtype=torch.int64)
        weights = _HASH_WEIGHTS[key] = (weights | 1).to(device)  # odd: every column reaches the low bits
    return weights


def row_hash(rows: torch.Tensor) -> torch.Tensor:
    """``int64 [N]`` hash of each integer row of ``rows [N, L]`` (a fixed random linear form,
    wrapping modulo 2**64). Equal rows have equal hashes; :func:`first_occurrence` checks the
    converse, so a collision can cost time but never change an answer."""
    if rows.dtype.is_floating_point or rows.dtype == torch.bool:
        raise TypeError(f"row_hash: integer rows expected, found {rows.dtype}")
    return (rows.long() * _hash_weights(rows.shape[1], rows.device)).sum(dim=1)


def first_occurrence(rows: torch.Tensor, hashes: torch.Tensor | None = None) -> torch.Tensor:
    """``bool [N]``: True for the first occurrence of every distinct row of ``rows [N, L]``.

    Integer rows go through :func:`row_hash` and a 1-D stable sort (``hashes`` may pass
    precomputed ones); every row is then checked against the first row of its hash group, and
    if any hash collided the exact ``torch.unique(dim=0)`` form answers instead. Floating-point
    rows always take the exact form. The answer equals :func:`first_occurrence_exact` (tested).
    """
    first = first_index(rows, hashes)
    return first == torch.arange(rows.shape[0], device=rows.device)


def first_index(rows: torch.Tensor, hashes: torch.Tensor | None = None) -> torch.Tensor:
    """``long [N]``: for every row of ``rows [N, L]``, the index of the first row equal to it
    (a group id of equal rows; same hashing and exactness as :func:`first_occurrence`)."""
    n = rows.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=rows.device)
    if rows.dtype.is_floating_point or rows.dtype == torch.bool or rows.dim() != 2:
        return _first_index_exact(rows)
    h = row_hash(rows) if hashes is None else hashes
    order = torch.argsort(h, stable=True)
    hs = h[order]
    new_group = torch.ones(n, dtype=torch.bool, device=rows.device)
    new_group[1:] = hs[1:] != hs[:-1]
    starts = order[new_group]  # first (lowest) index of every hash value, by stability
    representative = torch.empty_like(order)
    representative[order] = starts[torch.cumsum(new_group.long(), 0) - 1]
    if not torch.equal(rows, rows[representative]):
        return _first_index_exact(rows)  # a hash collision: exact form
    return representative


def _first_index_exact(rows: torch.Tensor) -> torch.Tensor:
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    n = rows.shape[0]
    position = torch.arange(n, device=rows.device)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return first[inverse]


def first_occurrence_exact(rows: torch.Tensor) -> torch.Tensor:
    """:func:`first_occurrence` by ``torch.unique(dim=0)`` (any dtype; the reference form)."""
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


class RowSet:
    """The genomes of a generation so far (parents and accepted children), for duplicate checks
    by row hash: sorted hashes, then an exact row comparison of every hash hit. The answers equal
    :func:`first_occurrence` on the concatenation ``[seen; children]`` (collisions take that form)."""

    def __init__(self, rows: torch.Tensor, hashes: torch.Tensor | None = None, capacity: int = 0):
        # rows live in a buffer with room for ``capacity`` more, so adding does not copy them
        self._buffer = torch.empty((rows.shape[0] + capacity, rows.shape[1]), dtype=rows.dtype, device=rows.device)
        self._buffer[: rows.shape[0]] = rows
        self._n = rows.shape[0]
        self.hashes = row_hash(rows) if hashes is None else hashes
        self.sorted_hashes, self.order = torch.sort(self.hashes, stable=True)

    @property
    def rows(self) -> torch.Tensor:
        return self._buffer[: self._n]

    def add(self, rows: torch.Tensor, hashes: torch.Tensor | None = None) -> None:
        if rows.shape[0] == 0:
            return
        end = self._n + rows.shape[0]
        if end > self._buffer.shape[0]:
            self._buffer = torch.cat([self._buffer[: self._n], rows])
        else:
            self._buffer[self._n:end] = rows
        self._n = end
        self.hashes = torch.cat([self.hashes, row_hash(rows) if hashes is None else hashes])
        self.sorted_hashes, self.order = torch.sort(self.hashes, stable=True)

    def new_rows(self, children: torch.Tensor, hashes: torch.Tensor | None = None) -> torch.Tensor:
        """``bool [C]``: children equal to no seen row and to no earlier child."""
        hashes = row_hash(children) if hashes is None else hashes
        pos = torch.searchsorted(self.sorted_hashes, hashes).clamp_max(self.sorted_hashes.numel() - 1)
        hit = self.sorted_hashes[pos] == hashes
        hit_index = hit.nonzero().reshape(-1)
        if hit_index.numel() and not torch.equal(children[hit_index], self.rows[self.order[pos[hit_index]]]):
            # a hash shared by distinct rows: the exact form
            pool = torch.cat([self.rows, children])
            return first_occurrence_exact(pool)[self.rows.shape[0]:]
        return ~hit & first_occurrence(children, hashes=hashes)


__all__ = [
    "RowSet", "binary_tournament", "first_occurrence", "first_occurrence_exact", "first_index", "lexsort", "polynomial_mutation", "row_hash",
    "simulated_binary_crossover",
]
