"""Column ADCs: the NeuroSim flash ADC (what CIMNAS uses) and the survey-based ADC law.

NeuroSim (cim-cost-model.md §4.1, cimloop-runs.md §4b, §5.4) [run]: one ADC per active column
(N_ADC_PER_BANK is ignored), energy per conversion independent of x̄ and of the array size, almost
independent of the supply voltage; area ≈ 99.8 % of a macro. Energy ≈ 3.16e-3·2^b pJ at 32 nm.

Survey ADC (Accelergy ADC plug-in, Murmann survey regression; cim-cost-model.md §4.2) [src]:
    FoM_S = min(213.78 - 2.872 ln f, 128.31 + 3.2205 b),  SNDR = 6.0206 b + 1.761
    E0 = 1 / (2·10^((FoM_S - SNDR)/10)),  E_pJ = E0·exp(26.0496 + 1.88004 ln T - 2.82913 ln b - 1.47020)
    A_µm² (per ADC) = exp(1.34619 + 0.993279 ln T + 0.180715 ln f + 0.299124 ln E_pJ)
with f = cols / cycle_s / n_adcs samples/s per ADC and n_adcs = ADCS_PER_BANK per macro.
"""

from __future__ import annotations

import math

import torch

from cimnas.hw.components.technology import at_node, cached_table, interp1d

ADC_MODELS: tuple[str, ...] = ("neurosim", "survey")

#: NeuroSim conversion energy at 32 nm, 0.7 V, pJ, by resolution [run].
NEUROSIM_ENERGY_32NM_PJ = {3: 0.0225, 4: 0.0479, 5: 0.0986, 6: 0.200, 7: 0.403, 8: 0.808223}
#: Node scaling of the 8-bit conversion energy [run]: 0.808 / 0.446 / 0.0946 pJ.
NEUROSIM_ENERGY_NODE_FACTOR = {7: 0.0946 / 0.808223, 22: 0.446 / 0.808223, 32: 1.0}
#: Supply-voltage factor of the conversion energy [run]: 0.798 @0.5 V, 0.808223 @0.7,
#: 0.814431 @0.8, 0.818 @0.85 V (cim-cost-model.md §4.1, cimloop-runs.md §4b).
NEUROSIM_VOLTAGE = (0.5, 0.7, 0.8, 0.85)
NEUROSIM_VOLTAGE_FACTOR = (0.798 / 0.808223, 1.0, 0.814431 / 0.808223, 0.818 / 0.808223)
#: SRAM harness: 8-bit ADC 0.962 / 0.488 / 0.113 pJ at 32 / 22 / 7 nm (§4.1 SRAM table) [run].
NEUROSIM_SRAM_FACTOR = {7: 0.113 / 0.0946, 22: 0.488 / 0.446, 32: 0.962 / 0.808223}

#: NeuroSim 8-bit ADC bank area per macro (one ADC per column), µm² [run]; the 32 nm values are
#: the CiMLoop chip runs' ART (cimloop-runs.md §4, the 64-column "anomaly" included).
NEUROSIM_AREA_8B_UM2 = {
    32: {32: 224043.0, 64: 386036.0, 128: 895667.0, 256: 1791330.0, 512: 3582667.0},
    22: {32: 105896.0, 64: 182462.0, 128: 423342.0, 256: 846685.0, 512: 2 * 846685.0},
    7: {32: 14953.0, 64: 22368.0, 128: 50651.0, 256: 110980.0, 512: 232713.0},
}
#: Area relative to 8 bits, 128 columns at 32 nm [run]: 12.6k, 27.6k, 61k, 135k, 329k, 896k µm².
NEUROSIM_AREA_BITS_FACTOR = {3: 12.6e3 / 895667, 4: 27.6e3 / 895667, 5: 61e3 / 895667,
                             6: 135e3 / 895667, 7: 329e3 / 895667, 8: 1.0}

#: CIMNAS's N_ADC_PER_BANK (used only by the survey model).
ADCS_PER_BANK = 16


def _per_bit_table(table: dict[int, float], bits: torch.Tensor) -> torch.Tensor:
    """Tabulated values at 3..8 bits, extended by the 2^b law outside (×2 per bit)."""
    def build(d: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        xs = torch.tensor(sorted(table), dtype=torch.float64)
        ys = torch.log2(torch.tensor([table[k] for k in sorted(table)], dtype=torch.float64))
        return xs.to(d), ys.to(d)

    xs, ys = cached_table(("adc_per_bit", tuple(sorted(table.items()))), bits.device, build)
    b = bits.double()
    inside = interp1d(b, xs, ys)
    below = ys[0] + (b - xs[0])
    above = ys[-1] + (b - xs[-1])
    return torch.exp2(torch.where(b < xs[0], below, torch.where(b > xs[-1], above, inside)))


def neurosim_energy_pj(bits: torch.Tensor, voltage: torch.Tensor, node_nm: torch.Tensor,
                       sram: torch.Tensor | None = None) -> torch.Tensor:
    e = _per_bit_table(NEUROSIM_ENERGY_32NM_PJ, bits)
    e = e * at_node(node_nm, NEUROSIM_ENERGY_NODE_FACTOR)
    xs, ys = cached_table(("adc_voltage", NEUROSIM_VOLTAGE, NEUROSIM_VOLTAGE_FACTOR), voltage.device,
                          lambda d: (torch.tensor(NEUROSIM_VOLTAGE, dtype=torch.float64, device=d),
                                     torch.tensor(NEUROSIM_VOLTAGE_FACTOR, dtype=torch.float64, device=d)))
    e = e * interp1d(voltage.double(), xs, ys)
    if sram is not None:
        e = torch.where(sram, e * at_node(node_nm, NEUROSIM_SRAM_FACTOR, extend=None), e)
    return e


def neurosim_area_um2(cols: torch.Tensor, bits: torch.Tensor, node_nm: torch.Tensor) -> torch.Tensor:
    """Bank area per macro: one ADC per column."""
    cols_list = sorted(NEUROSIM_AREA_8B_UM2[32])
    nodes = sorted(NEUROSIM_AREA_8B_UM2)

    def build(d: torch.device) -> tuple[torch.Tensor, ...]:
        log_cols = torch.log2(torch.tensor(cols_list, dtype=torch.float64))
        logs = [torch.log(torch.tensor([NEUROSIM_AREA_8B_UM2[n][c] for c in cols_list], dtype=torch.float64))
                for n in nodes]
        return tuple(t.to(d) for t in (log_cols, *logs))

    log_cols, *log_areas = cached_table(("adc_area", repr(NEUROSIM_AREA_8B_UM2)), cols.device, build)
    lc = torch.log2(cols.double())
    per_node = []
    for ys in log_areas:
        inside = interp1d(lc, log_cols, ys)
        # beyond the table: linear in the number of ADCs
        edge = torch.where(lc > log_cols[-1], ys[-1] + (lc - log_cols[-1]) * math.log(2),
                           torch.where(lc < log_cols[0], ys[0] + (lc - log_cols[0]) * math.log(2), inside))
        per_node.append(torch.exp(edge))
    stacked = torch.stack(per_node, 0)  # [n_nodes, B]
    table = {n: stacked[i] for i, n in enumerate(nodes)}
    # interpolate per design across nodes (values differ per design, so do it by hand)
    node = node_nm.double()
    a7, a22, a32 = table[7], table[22], table[32]
    t_low = ((node - 7) / 15).clamp(0, 1)
    t_high = ((node - 22) / 10).clamp(0, 1)
    area = torch.where(node <= 22, a7 + (a22 - a7) * t_low, a22 + (a32 - a22) * t_high)
    above = node > 32
    if bool(above.any()):
        area = torch.where(above, a32 * at_node(node, {32: 1.0}, extend="area"), area)
    return area * _per_bit_table(NEUROSIM_AREA_BITS_FACTOR, bits)


def survey_energy_pj(bits: torch.Tensor, node_nm: torch.Tensor, sample_rate_hz: torch.Tensor) -> torch.Tensor:
    b = bits.double().clamp(min=4)  # the regression is valid for b >= 4
    f = sample_rate_hz.double()
    fom_max = 128.31 + 3.2205 * torch.ceil(b)
    fom = torch.minimum(213.78 - 2.872 * torch.log(f), fom_max)
    sndr = 6.0206 * b + 1.761
    e0 = 1.0 / (2.0 * torch.pow(10.0, (fom - sndr) / 10.0))
    return e0 * torch.exp(26.0496 + 1.88004 * torch.log(node_nm.double()) - 2.82913 * torch.log(b) - 1.47020)


def survey_area_um2(bits: torch.Tensor, node_nm: torch.Tensor, sample_rate_hz: torch.Tensor,
                    n_adcs: int = ADCS_PER_BANK) -> torch.Tensor:
    e = survey_energy_pj(bits, node_nm, sample_rate_hz)
    per_adc = torch.exp(1.34619 + 0.993279 * torch.log(node_nm.double())
                        + 0.180715 * torch.log(sample_rate_hz.double()) + 0.299124 * torch.log(e))
    return n_adcs * per_adc
