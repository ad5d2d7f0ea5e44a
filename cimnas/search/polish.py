"""The GA's final local polish (``GAConfig.polish_fraction``): a batched local search around the
best designs. :func:`neighbourhood` lists every one-gene change and every joint change of two
linked genes of a genome, :func:`apply_moves` makes them, :func:`untried_neighbours` draws the next
batch of new neighbours, and :class:`PolishState` (part of the GA's checkpoint) says where the
polish stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cimnas.search.operators import RowSet, row_hash


def neighbourhood(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, linked: list[int]) -> torch.Tensor:
    """Moves ``long [M, 4]`` (gene, value, gene2, value2; gene2 = -1 for one-gene moves) from the
    genome ``x [L]``: every other option of every free gene, then every joint change of two
    ``linked`` free genes (both to another option)."""
    device = x.device
    span = (upper - lower).clamp_min(0)  # options other than the current one
    genes = torch.repeat_interleave(torch.arange(x.numel(), device=device), span)
    starts = torch.cumsum(span, 0) - span
    k = torch.arange(genes.numel(), device=device) - starts[genes]
    values = lower[genes] + k
    values = values + (values >= x[genes]).long()  # skip the current option
    singles = torch.stack([genes, values, torch.full_like(genes, -1), torch.zeros_like(genes)], 1)
    parts = [singles]
    free_linked = [g for g in linked if int(span[g]) > 0]
    for i, g in enumerate(free_linked):
        vg = values[genes == g]
        for h in free_linked[i + 1:]:
            vh = values[genes == h]
            a, b = torch.meshgrid(vg, vh, indexing="ij")
            a, b = a.reshape(-1), b.reshape(-1)
            parts.append(torch.stack([torch.full_like(a, g), a, torch.full_like(b, h), b], 1))
    return torch.cat(parts)


def apply_moves(x: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
    """The genomes ``[M, L]`` that ``moves [M, 4]`` (see :func:`neighbourhood`) make from ``x``."""
    rows = x.unsqueeze(0).repeat(moves.shape[0], 1)
    index = torch.arange(moves.shape[0], device=x.device)
    rows[index, moves[:, 0]] = moves[:, 1]
    two = moves[:, 2] >= 0
    rows[index[two], moves[two, 2]] = moves[two, 3]
    return rows


@dataclass
class PolishState:
    """Where the local polish stands: the incumbent, its shuffled moves and how many are used,
    and the (hashes of the) designs whose neighbourhood is exhausted."""

    incumbent: torch.Tensor | None = None
    moves: torch.Tensor | None = None
    offset: int = 0
    polished: list[int] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {"incumbent": None if self.incumbent is None else self.incumbent.cpu(),
                "moves": None if self.moves is None else self.moves.cpu(), "offset": self.offset,
                "polished": torch.tensor(self.polished, dtype=torch.long)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None, device: torch.device) -> "PolishState":
        if not state:
            return cls()
        return cls(None if state["incumbent"] is None else state["incumbent"].to(device),
                   None if state["moves"] is None else state["moves"].to(device), int(state["offset"]),
                   [int(v) for v in state["polished"].tolist()])


def untried_neighbours(state: PolishState, population: torch.Tensor, n: int, lower: torch.Tensor,
                       upper: torch.Tensor, linked: list[int], generator: torch.Generator) -> torch.Tensor:
    """``n`` untried neighbours (one-gene and linked two-gene changes, see :func:`neighbourhood`)
    of the best designs of ``population`` (best-first) not yet polished, new to ``population``
    and to each other: the incumbent's neighbourhood is visited in a random order drawn once
    from ``generator``; when it is used up, the incumbent is marked polished and the next
    design's neighbourhood continues the batch. Advances ``state``."""
    seen = RowSet(population, capacity=n)
    polished = set(state.polished)
    accepted = population[:0]
    for candidate in range(population.shape[0]):
        if accepted.shape[0] >= n:
            break
        x = population[candidate]
        key = int(row_hash(x.unsqueeze(0))[0])
        if key in polished:
            continue
        if state.incumbent is None or not torch.equal(state.incumbent, x):
            moves = neighbourhood(x, lower, upper, linked)
            perm = torch.randperm(moves.shape[0], generator=generator, device=generator.device)
            state.incumbent, state.moves, state.offset = x.clone(), moves[perm], 0
        while accepted.shape[0] < n and state.offset < state.moves.shape[0]:
            take = state.moves[state.offset:state.offset + n - accepted.shape[0]]
            state.offset += take.shape[0]
            rows = apply_moves(x, take)
            hashes = row_hash(rows)
            new = seen.new_rows(rows, hashes)
            accepted = torch.cat([accepted, rows[new]])
            seen.add(rows[new], hashes[new])
        if state.offset >= state.moves.shape[0]:
            state.polished.append(key)
            polished.add(key)
            state.incumbent = None
    return accepted


__all__ = ["PolishState", "apply_moves", "neighbourhood", "untried_neighbours"]
