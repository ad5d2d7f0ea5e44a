"""Weight-stationary mapping of each layer onto the whole chip, and its action counts.

Every layer is mapped alone onto the chip (cim-cost-model.md §0.6, §5; cimloop-runs.md §5.8),
following CiMLoop's ``spatial_map_all_weights`` rule (``maximize_dims``: weight bits, then R,S,
then M,C, then G, then P,Q) at each spatial level, innermost first (macros in a tile, tiles in a
router group, router groups), with imperfect (ceil) factors, as the 24 CiMLoop chip runs show
(e.g. G = 968 over 64 macros leaves ceil(968/64) = 16 for the tiles, cimloop-layer-runs.json R10):

1. slices s_w = ceil(b_w / min(bits_per_cell, b_w)); per group K = C·R·S rows and M·s_w columns;
   one weight copy of one group needs T_r·T_c macros (T_r = ceil(K/rows), T_c = ceil(M·s_w/cols));
2. per level (fan-out f): weight macros w = min(W_left, f), W_left = ceil(W_left / w); groups
   g = min(G_left, f // w); the spare fan-out (f // w) // g replicates the weights over P,Q;
3. the layer fits when nothing of W and G is left; D = product of spare fan-outs;
4. cycles = N · min over P/Q splits (a·b <= D) of ceil(P/a)·ceil(Q/b); we evaluate five
   candidate splits (P first, Q first, balanced, two power-of-two ones) instead of the full search; this is exact on
   21 of the 24 runs and never faster than the best split (the hierarchy can cost a cycle more,
   e.g. 14 vs 13 in ref-03).

All quantities are float32 ``[B, L]`` tensors holding integers (exact below 2^24).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def cdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.ceil(a / b)


@dataclass
class Mapping:
    s_w: torch.Tensor  # weight slices (columns per weight)
    K: torch.Tensor  # rows per group
    n_col: torch.Tensor  # columns per group
    T_r: torch.Tensor
    T_c: torch.Tensor
    macros_per_copy: torch.Tensor  # G·T_r·T_c
    copies: torch.Tensor  # D: spare replication for P,Q
    fits: torch.Tensor  # bool
    cycles: torch.Tensor
    t_q: torch.Tensor  # temporal steps along Q of the balanced split (input re-fetch model)


def _level(w_left, g_left, fanout):
    w = torch.minimum(w_left, fanout)
    w_left = cdiv(w_left, w)
    spare = torch.floor(fanout / w)
    g = torch.minimum(g_left, spare).clamp(min=1)
    g_left = cdiv(g_left, g)
    return w_left, g_left, torch.floor(spare / g).clamp(min=1)


def pq_cycles(P: torch.Tensor, Q: torch.Tensor, D: torch.Tensor, square: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal iterations of a P x Q output plane with D spatial copies (five candidate
    splits), and the Q-steps of the balanced split. ``square=True`` (P == Q everywhere) skips
    the Q-first candidate, which then equals the P-first one."""
    a1 = torch.minimum(P, D)
    c1 = cdiv(P, a1) * cdiv(Q, torch.floor(D / a1))
    if square:
        c3 = c1
    else:
        b3 = torch.minimum(Q, D)
        c3 = cdiv(Q, b3) * cdiv(P, torch.floor(D / b3))
    r = torch.floor(torch.sqrt(D))
    a2 = torch.minimum(P, r)
    t_p = cdiv(P, a2)
    a2 = cdiv(P, t_p)
    t_q = cdiv(Q, torch.floor(D / a2))
    c2 = t_p * t_q
    # power-of-two splits (fan-outs are powers of two, so these are often exact)
    a4 = torch.minimum(P, torch.exp2(torch.floor(torch.log2(r.clamp(min=1)))))
    c4 = cdiv(P, a4) * cdiv(Q, torch.floor(D / a4))
    a5 = torch.minimum(P, torch.minimum(2 * a4, D))
    c5 = cdiv(P, a5) * cdiv(Q, torch.floor(D / a5))
    best = torch.minimum(torch.minimum(torch.minimum(c1, c2), c4), c5)
    if not square:
        best = torch.minimum(best, c3)
    return best, t_q


def map_layers(*, C, M, R, S, P, Q, G, N, weight_bits, bits_per_cell, rows, cols,
               macros_per_tile, tiles_per_group, router_groups) -> Mapping:
    """All arguments float32 tensors broadcastable to ``[B, L]`` (hardware as ``[B, 1]``)."""
    s_w = cdiv(weight_bits, torch.minimum(bits_per_cell, weight_bits))
    K = C * R * S
    n_col = M * s_w
    T_r = cdiv(K, rows)
    T_c = cdiv(n_col, cols)
    W = T_r * T_c
    w_left, g_left, s1 = _level(W, G, macros_per_tile)
    w_left, g_left, s2 = _level(w_left, g_left, tiles_per_group)
    w_left, g_left, s3 = _level(w_left, g_left, router_groups)
    fits = (w_left <= 1) & (g_left <= 1)
    D = s1 * s2 * s3
    cyc, t_q = pq_cycles(P, Q, D)
    return Mapping(s_w=s_w, K=K, n_col=n_col, T_r=T_r, T_c=T_c, macros_per_copy=G * W, copies=D,
                   fits=fits, cycles=cyc * N, t_q=t_q)
