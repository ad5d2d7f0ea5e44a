"""Technology-node and table interpolation shared by the component models.

NeuroSim runs only at {7, 10, 14, 22, 32, 45, 65, 90, 130} nm and the plug-ins interpolate
linearly between neighbouring nodes (cim-cost-model.md §3.4, §4.6); we do the same over the
anchors each component tabulates. Our tables hold [run] values at 7, 22 and 32 nm; the 45 and
65 nm anchors are the 32 nm values times the Accelergy library plug-in's Stillmaker-Baas factors
(cim-cost-model.md §4.4, "useful factors from 32 nm") — an [inf] stand-in for the missing runs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

#: Constant tables (interpolation anchors, log-space grids), built once per (table, device) on
#: first use instead of on every call: they depend on module constants only.
_TABLES: dict[tuple[Any, Any], Any] = {}


def cached_table(key: Any, device: torch.device | str, build: Callable[[torch.device], Any]) -> Any:
    """``build(device)`` (a tensor or a tuple of tensors) the first time ``key`` is asked for on
    ``device``, the stored value afterwards. ``key`` must identify the table's contents."""
    device = torch.device(device)
    k = (key, device)
    value = _TABLES.get(k)
    if value is None:
        value = _TABLES[k] = build(device)
    return value


#: Nodes (nm) a design may use; anything in [7, 65] is interpolated.
NODE_RANGE_NM = (7.0, 65.0)

#: Library plug-in scale factors from 32 nm (cim-cost-model.md §4.4) [src].
LIBRARY_ENERGY_FACTOR_FROM_32 = {7: 0.143, 14: 0.21, 22: 0.889, 32: 1.0, 45: 1.52, 65: 1.88}
LIBRARY_AREA_FACTOR_FROM_32 = {7: 0.13, 14: 0.38, 22: 0.91, 32: 1.0, 45: 2.2, 65: 3.30}


def interp1d(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of ``ys [n, ...]`` at ``x [B]`` (clamped at the ends);
    returns ``[B, ...]``."""
    xs = xs.to(device=x.device, dtype=torch.float64)
    ys = ys.to(device=x.device, dtype=torch.float64)
    xv = x.to(torch.float64).clamp(xs[0], xs[-1])
    hi = torch.searchsorted(xs, xv.contiguous()).clamp(1, len(xs) - 1)
    lo = hi - 1
    t = (xv - xs[lo]) / (xs[hi] - xs[lo])
    shape = (-1,) + (1,) * (ys.dim() - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * t.view(shape)


def node_table(values_by_node: dict[int, float], *, extend: str | None = "energy") -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor nodes and values; when 45/65 nm are missing, extend from 32 nm with the library
    factors (``extend`` = "energy" or "area")."""
    table = dict(values_by_node)
    if extend is not None and 32 in table:
        factors = LIBRARY_ENERGY_FACTOR_FROM_32 if extend == "energy" else LIBRARY_AREA_FACTOR_FROM_32
        for node in (45, 65):
            table.setdefault(node, table[32] * factors[node])
    nodes = sorted(table)
    return torch.tensor(nodes, dtype=torch.float64), torch.tensor([table[n] for n in nodes], dtype=torch.float64)


def at_node(node_nm: torch.Tensor, values_by_node: dict[int, float], extend: str | None = "energy") -> torch.Tensor:
    xs, ys = cached_table(("node", tuple(sorted(values_by_node.items())), extend), node_nm.device,
                          lambda d: tuple(t.to(d) for t in node_table(values_by_node, extend=extend)))
    return interp1d(node_nm, xs, ys)


def log2_bilinear(x: torch.Tensor, y: torch.Tensor, xs: list[float], ys: list[float],
                  grid: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``grid [len(xs), len(ys)]`` in (log2 x, log2 y) with log-valued
    output (power laws between anchors); extrapolates linearly in log space at the edges."""
    def build(d: torch.device) -> tuple[torch.Tensor, ...]:
        return (torch.log2(torch.tensor(xs, dtype=torch.float64, device=d)),
                torch.log2(torch.tensor(ys, dtype=torch.float64, device=d)),
                torch.log(grid.to(device=d, dtype=torch.float64)), grid)  # grid kept: its id stays unique

    lx, ly, lg, _ = cached_table(("log2_bilinear", tuple(xs), tuple(ys), id(grid)), x.device, build)
    qx, qy = torch.log2(x.double()), torch.log2(y.double())
    i = (torch.searchsorted(lx, qx.contiguous()) ).clamp(1, len(xs) - 1)
    j = (torch.searchsorted(ly, qy.contiguous()) ).clamp(1, len(ys) - 1)
    tx = (qx - lx[i - 1]) / (lx[i] - lx[i - 1])
    ty = (qy - ly[j - 1]) / (ly[j] - ly[j - 1])
    v00, v01 = lg[i - 1, j - 1], lg[i - 1, j]
    v10, v11 = lg[i, j - 1], lg[i, j]
    v = v00 * (1 - tx) * (1 - ty) + v10 * tx * (1 - ty) + v01 * (1 - tx) * ty + v11 * tx * ty
    return torch.exp(v)
