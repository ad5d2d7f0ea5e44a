"""SRAM buffers: the chip's global buffer (GLB) and the tiles' input/output buffers.

CACTI 7 through the Accelergy CACTI plug-in (``smartbuffer_sram``: 1 RW port, 1 bank, ITRS-LSTP,
plus two address adders), cim-cost-model.md §4.3 [run]. Tables are pJ per access of one full
word (``width`` bits) and mm² per instance. We charge per bit moved: E_access / width.

- GLB, width 2048: exact per-depth table at 32 / 22 / 7 nm (the reference's 7 depth choices);
  other depths are interpolated log-log; write energy at 22 / 7 nm scales with the read energy.
- Tile buffers, width 8·macros_per_tile, depth = rows (input) or cols (output): a 2-D table over
  width {32..1024} x depth {32..512} at 32 nm, interpolated log-log. Entries marked [chip] are the
  exact values of the CiMLoop chip runs (cimloop-layer-runs.json ART, adders included).
  Node scaling (§4.3): 22 nm = energy / 2.3, area / 2.1; 7 nm = 0.56x / 0.32x of 22 nm;
  above 32 nm the library factors.
"""

from __future__ import annotations

import torch

from cimnas.hw.components.technology import at_node, cached_table, interp1d, log2_bilinear

GLB_WIDTH_BITS = 2048
GLB_DEPTHS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
GLB_READ_PJ = {
    32: (323.7, 776.5, 1023.6, 1778.45, 2415.8, 4600.9, 6750.7),
    22: (227.4, 347.7, 551.0, 795.9, 1496.7, 2050.7, 3149.5),
    7: (128.3, 196.1, 310.8, 449.0, 844.3, 1156.7, 1776.6),
}
GLB_WRITE_PJ_32NM = (858.2, 991.7, 1455.8, 2210.63, 2643.3, 5468.0, 7617.8)
GLB_AREA_MM2 = {
    32: (0.8632, 2.885, 4.71675, 10.7364, 17.514, 38.1418, 70.2289),  # [chip] where known
    22: (0.873, 1.363, 3.102, 5.072, 10.617, 18.020, 34.714),
    7: (0.278, 0.434, 0.987, 1.614, 3.378, 5.734, 11.045),
}

TILE_WIDTHS = (32, 128, 256, 512, 1024)
TILE_DEPTHS = (32, 64, 128, 256, 512)
_NAN = float("nan")
# (read pJ, write pJ, area mm²) at 32 nm; NaN = fill by interpolation below.
_TILE_READ = {
    32: (0.204, _NAN, 0.451, _NAN, 1.212),
    128: (1.053, _NAN, 2.073, _NAN, 4.417),  # 128x128 [chip] 2.073 / 4.072
    256: (_NAN, _NAN, _NAN, _NAN, _NAN),
    512: (9.729, _NAN, 17.55, _NAN, 22.45),
    1024: (34.69, _NAN, 61.21, _NAN, 70.89),
}
_TILE_WRITE = {
    32: (0.343, _NAN, 0.950, _NAN, 1.401),
    128: (1.608, _NAN, 4.072, _NAN, 7.698),
    256: (_NAN, _NAN, _NAN, _NAN, _NAN),
    512: (11.948, _NAN, 25.55, _NAN, 55.58),
    1024: (39.13, _NAN, 77.21, _NAN, 137.1),
}
_TILE_AREA = {
    32: (0.000268, 0.000536, 0.000958, _NAN, 0.00366),
    128: (0.00135, 0.0027, 0.00425015, _NAN, 0.01402),
    256: (0.00343343, 0.00686686, 0.00979484, 0.0156344, _NAN),  # [chip]
    512: (0.00969557, 0.0193911, 0.02494, 0.036179, 0.05844),  # [chip] 512x32, 512x256
    1024: (0.0305, 0.0610, 0.07175, _NAN, 0.1361),
}


def _fill(table: dict[int, tuple[float, ...]]) -> torch.Tensor:
    """Fill NaN entries by log-log interpolation along depth, then along width."""
    g = torch.tensor([table[w] for w in TILE_WIDTHS], dtype=torch.float64).log()
    ld = torch.log2(torch.tensor(TILE_DEPTHS, dtype=torch.float64))
    lw = torch.log2(torch.tensor(TILE_WIDTHS, dtype=torch.float64))

    def fill_line(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ok = ~torch.isnan(v)
        if ok.sum() < 2:
            return v
        xs, ys = x[ok], v[ok]
        out = interp1d(x, xs, ys)
        # linear extrapolation in log-log at the ends
        lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        out = torch.where(x < xs[0], ys[0] + (x - xs[0]) * lo_slope, out)
        out = torch.where(x > xs[-1], ys[-1] + (x - xs[-1]) * hi_slope, out)
        return torch.where(ok, v, out)

    for i in range(len(TILE_WIDTHS)):
        g[i] = fill_line(g[i], ld)
    for j in range(len(TILE_DEPTHS)):
        g[:, j] = fill_line(g[:, j], lw)
    return g.exp()


TILE_READ_PJ_32NM = _fill(_TILE_READ)
TILE_WRITE_PJ_32NM = _fill(_TILE_WRITE)
TILE_AREA_MM2_32NM = _fill(_TILE_AREA)

_TILE_ENERGY_NODE = {7: 0.56 / 2.3, 22: 1 / 2.3, 32: 1.0}
_TILE_AREA_NODE = {7: 0.32 / 2.1, 22: 1 / 2.1, 32: 1.0}


def tile_buffer(width_bits: torch.Tensor, depth: torch.Tensor, node_nm: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(read pJ per access, write pJ per access, area mm²) of tile buffers ``[B]``."""
    r = log2_bilinear(width_bits, depth, list(TILE_WIDTHS), list(TILE_DEPTHS), TILE_READ_PJ_32NM)
    w = log2_bilinear(width_bits, depth, list(TILE_WIDTHS), list(TILE_DEPTHS), TILE_WRITE_PJ_32NM)
    a = log2_bilinear(width_bits, depth, list(TILE_WIDTHS), list(TILE_DEPTHS), TILE_AREA_MM2_32NM)
    e_node = at_node(node_nm, _TILE_ENERGY_NODE)
    a_node = at_node(node_nm, _TILE_AREA_NODE, extend="area")
    return r * e_node, w * e_node, a * a_node


def _glb_interp(depth: torch.Tensor, values: tuple[float, ...]) -> torch.Tensor:
    ld, lv = cached_table(("glb", GLB_DEPTHS, tuple(values)), depth.device,
                          lambda d: (torch.log2(torch.tensor(GLB_DEPTHS, dtype=torch.float64)).to(d),
                                     torch.log(torch.tensor(values, dtype=torch.float64)).to(d)))
    x = torch.log2(depth.double())
    inside = interp1d(x, ld, lv)
    hi = lv[-1] + (x - ld[-1]) * (lv[-1] - lv[-2]) / (ld[-1] - ld[-2])
    lo = lv[0] + (x - ld[0]) * (lv[1] - lv[0]) / (ld[1] - ld[0])
    return torch.exp(torch.where(x > ld[-1], hi, torch.where(x < ld[0], lo, inside)))


def glb(depth: torch.Tensor, width_bits: torch.Tensor, node_nm: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(read pJ per access, write pJ per access, area mm²) of the GLB ``[B]``; widths other than
    2048 scale linearly (energy and area per bit constant)."""
    node = node_nm.double()
    per_node_read = {n: _glb_interp(depth, v) for n, v in GLB_READ_PJ.items()}
    per_node_area = {n: _glb_interp(depth, v) for n, v in GLB_AREA_MM2.items()}
    write32 = _glb_interp(depth, GLB_WRITE_PJ_32NM)

    def across_nodes(t: dict[int, torch.Tensor], kind: str) -> torch.Tensor:
        a7, a22, a32 = t[7], t[22], t[32]
        low = a7 + (a22 - a7) * ((node - 7) / 15).clamp(0, 1)
        high = a22 + (a32 - a22) * ((node - 22) / 10).clamp(0, 1)
        out = torch.where(node <= 22, low, high)
        return torch.where(node > 32, a32 * at_node(node, {32: 1.0}, extend=kind), out)

    read = across_nodes(per_node_read, "energy")
    area = across_nodes(per_node_area, "area")
    write = write32 * read / per_node_read[32]
    scale = width_bits.double() / GLB_WIDTH_BITS
    return read * scale, write * scale, area * scale
