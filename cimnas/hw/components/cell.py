"""Memory cells (CiMLoop ``memory_cells/*.cell.yaml`` through the NeuroSim plug-in).

Read energy of one cell activation with a temporal (PWM) DAC of t = 2^b_x - 1 pulses
(cim-cost-model.md §3.4, cimloop-runs.md §5.2):

    E_cell = [E_lo + (E_hi - E_lo) * w̄] * x̄ * t,   E_hi/lo = t_pulse * V_read² / (R_on/off + R_access + R_wire)

with R_wire = WIRE_OHM_PER_LINE * (rows + cols) (wire-aware programming adds the whole line).
Independent of the supply voltage and of the node (V_read and R come from the cell file).
SRAM cells have zero cell energy: NeuroSim books it inside the array periphery.
Area = F² * node² (the cell file's nominal F²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cimnas.hw.components.technology import cached_table


@dataclass(frozen=True)
class CellSpec:
    kind: str  # "rram" or "sram"
    area_f2: float
    r_on_ohm: float = 0.0
    r_off_ohm: float = 0.0
    v_read: float = 0.0
    r_access_ohm: float = 0.0


#: Cell files shipped with CiMLoop (cim-cost-model.md §4.5) [src]. Order = cell code.
CELLS: dict[str, CellSpec] = {
    "rram_neurosim_default": CellSpec("rram", 48.0, 6e3, 9e5, 0.5, 1.95e5),  # CIMNAS cell
    "rram_example": CellSpec("rram", 40.0, 2.5e5, 1e6, 0.1, 1e3),
    "rram_isaac_isca_2016": CellSpec("rram", 16.0, 1333.0, 2e4, 0.2, 0.0),
    "rram_raella_isca_2023": CellSpec("rram", 16.0, 1333.0, 2e4, 0.2, 1e3),
    "rram_wan_nature_2022": CellSpec("rram", 125.7, 2.5e5, 1e6, 0.5, 0.0),
    "sram_example": CellSpec("sram", 80.0),
    "sram_sinangil_jssc_2021": CellSpec("sram", 1080.0),
    "sram_jia_jssc_2020": CellSpec("sram", 426.0),
    "sram_wang_vlsi_2022": CellSpec("sram", 400.0),
    "sram_colonnade_jssc_2021": CellSpec("sram", 130.0),
}
CELL_NAMES: tuple[str, ...] = tuple(CELLS)

#: CIMNAS READ_PULSE_WIDTH (cimloop-runs.md §3) [src].
READ_PULSE_S = 1e-8

#: Wire resistance per word/bit line cell pitch, fitted [run] to the cell-read energies of
#: cimloop-runs.md §4b (0.940485 pJ at 128x128, 0.936169 pJ at 256x256, x̄ 0.5277, w̄ 0.4667):
#: both solve to R_wire ≈ 4.2 Ω × (rows + cols).
WIRE_OHM_PER_LINE = 4.2


def _column(name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    return cached_table(("cell", name), device, lambda d: torch.tensor([getattr(c, name) for c in CELLS.values()],
                                                                         dtype=torch.float64, device=d))


def is_sram(cell_code: torch.Tensor) -> torch.Tensor:
    kinds = cached_table(("cell", "is_sram"), cell_code.device,
                         lambda d: torch.tensor([c.kind == "sram" for c in CELLS.values()], device=d))
    return kinds[cell_code]


def pulse_energies_pj(cell_code: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      read_pulse_s: float = READ_PULSE_S) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_hi, E_lo) in pJ per pulse for each design ``[B]`` (zero for SRAM cells)."""
    dev = cell_code.device
    r_on, r_off = _column("r_on_ohm", dev)[cell_code], _column("r_off_ohm", dev)[cell_code]
    v, r_acc = _column("v_read", dev)[cell_code], _column("r_access_ohm", dev)[cell_code]
    r_wire = WIRE_OHM_PER_LINE * (rows.double() + cols.double())
    scale = read_pulse_s * v * v * 1e12
    e_hi = scale / (r_on + r_acc + r_wire)
    e_lo = scale / (r_off + r_acc + r_wire)
    sram = is_sram(cell_code)
    zero = torch.zeros_like(e_hi)
    return torch.where(sram, zero, e_hi), torch.where(sram, zero, e_lo)


def read_energy_pj(e_hi: torch.Tensor, e_lo: torch.Tensor, x_bar: torch.Tensor, w_bar: torch.Tensor,
                   pulses: torch.Tensor) -> torch.Tensor:
    """Energy of one cell read (one weight slice × one input) in pJ; broadcasts."""
    return (e_lo + (e_hi - e_lo) * w_bar) * x_bar * pulses


def area_um2(cell_code: torch.Tensor, node_nm: torch.Tensor) -> torch.Tensor:
    f2 = _column("area_f2", cell_code.device)[cell_code]
    return f2 * (node_nm.double() * 1e-3) ** 2
