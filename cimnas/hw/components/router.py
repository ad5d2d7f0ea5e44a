"""On-chip router: Accelergy library ``isaac_router_shared_by_four`` (ISAAC, ISCA 2016, 32 nm).

20.74 pJ per 256-bit read and 37,500 µm² at width 256; the library scales energy and area
linearly in width, so CIMNAS's width-128 router costs 10.37 pJ per transfer and 18,750 µm²
(cim-cost-model.md §4.4) [src]. Node scaling: library Stillmaker-Baas factors. No voltage
attribute (CIMNAS sets the voltage scales to 1).
"""

from __future__ import annotations

import torch

from cimnas.hw.components.technology import at_node

WIDTH_BITS = 128
ENERGY_PER_TRANSFER_PJ_32NM = 20.74 * WIDTH_BITS / 256
AREA_UM2_32NM = 37500.0 * WIDTH_BITS / 256


def transfer_energy_pj(node_nm: torch.Tensor) -> torch.Tensor:
    """Energy of one WIDTH_BITS-bit transfer."""
    return ENERGY_PER_TRANSFER_PJ_32NM * at_node(node_nm, {32: 1.0, 22: 0.889, 14: 0.21, 7: 0.143})


def area_um2(node_nm: torch.Tensor) -> torch.Tensor:
    return AREA_UM2_32NM * at_node(node_nm, {32: 1.0, 22: 0.91, 14: 0.38, 7: 0.13}, extend="area")
