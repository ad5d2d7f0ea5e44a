"""Row drivers (with the temporal DAC) and column drivers (NeuroSim plug-in).

Row-driver read = one word-line activation of a macro's bank (cim-cost-model.md §3.4, §4.1):

    E_row = E_off + ΔE_pulse(V, cols, node) * x̄ * t,   t = 2^b_x - 1 (temporal spiking)
    ΔE_pulse = (V / 0.7)^VOLTAGE_EXPONENT * (a(node) + b(node) * cols) * 0.49

The 32 nm coefficients are fitted [run] to cimloop-runs.md §4b (5.58457 pJ at 128 cols and
10.7989 pJ at 256 cols, 0.7 V, x̄ 0.5277, t 255); 22 and 7 nm come from the fits of
cim-cost-model.md §4.1 (V² × (a + b·cols)). The voltage exponent 1.95 reproduces
7.24799 / 5.58457 pJ between 0.8 and 0.7 V (pure V² would give 1.306 instead of 1.298).
Column drivers: zero read energy in parallel (compute) mode in every run; area per column.
SRAM cells: the NeuroSim harness gives a smaller row-driver energy; we scale the RRAM law by the
ratio of the §4.1 SRAM table to the RRAM one at 32 and 7 nm [run/inf].
"""

from __future__ import annotations

import torch

from cimnas.hw.components.technology import at_node

#: ΔE_pulse coefficients at 0.7 V² normalisation: pJ = V²·(a + b·cols) [run].
PULSE_A_PJ = {7: 0.00144, 22: 0.00327, 32: 0.005527}
PULSE_B_PJ = {7: 0.000484, 22: 0.000367, 32: 0.00061786}
OFF_ENERGY_PJ = {7: 0.006 * 0.143, 22: 0.006 * 0.889, 32: 0.006}  # ≈ 0.006 pJ at 32 nm [run]
VOLTAGE_EXPONENT = 1.95
REFERENCE_VOLTAGE = 0.7

#: Area per row / per column in µm² [run]; 32 nm values from the CiMLoop chip runs' ART.
ROW_AREA_UM2 = {7: 0.266, 22: 1.882, 32: 3.982594}
COL_AREA_UM2 = {7: 0.192, 22: 1.506, 32: 3.185414}

#: Row-driver energy of SRAM cells relative to the RRAM default (cim-cost-model.md §4.1 SRAM table
#: vs the RRAM 128x128 row: 0.91/3.178 at 32 nm, 0.25/2.378 at 7 nm) [run/inf].
SRAM_ROW_FACTOR = {7: 0.25 / 2.378, 22: 0.5 * (0.25 / 2.378 + 0.91 / 3.178), 32: 0.91 / 3.178}


def pulse_energy_pj(voltage: torch.Tensor, cols: torch.Tensor, node_nm: torch.Tensor) -> torch.Tensor:
    a = at_node(node_nm, PULSE_A_PJ)
    b = at_node(node_nm, PULSE_B_PJ)
    v = voltage.double()
    return REFERENCE_VOLTAGE**2 * (v / REFERENCE_VOLTAGE) ** VOLTAGE_EXPONENT * (a + b * cols.double())


def off_energy_pj(node_nm: torch.Tensor) -> torch.Tensor:
    return at_node(node_nm, OFF_ENERGY_PJ)


def row_read_energy_pj(e_off: torch.Tensor, e_pulse: torch.Tensor, x_bar: torch.Tensor,
                       pulses: torch.Tensor) -> torch.Tensor:
    """One row activation (broadcasts over layers)."""
    return e_off + e_pulse * x_bar * pulses


def sram_factor(node_nm: torch.Tensor) -> torch.Tensor:
    return at_node(node_nm, SRAM_ROW_FACTOR, extend=None)


def row_area_um2(rows: torch.Tensor, node_nm: torch.Tensor) -> torch.Tensor:
    return rows.double() * at_node(node_nm, ROW_AREA_UM2, extend="area")


def col_area_um2(cols: torch.Tensor, node_nm: torch.Tensor) -> torch.Tensor:
    return cols.double() * at_node(node_nm, COL_AREA_UM2, extend="area")


def column_read_energy_pj(like: torch.Tensor) -> torch.Tensor:
    """Column drivers read 0 pJ in parallel mode (every CiMLoop run, cimloop-runs.md §5.5)."""
    return torch.zeros_like(like)
