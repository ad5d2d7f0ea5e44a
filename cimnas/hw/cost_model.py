"""Batched CIM cost model: energy, latency, area and derived metrics of B designs at once.

``evaluate(workload, hardware)`` scores B (network, hardware) pairs with ``[B, L]`` tensors and
no Python loop over designs or layers. Physics per component lives in
:mod:`cimnas.hw.components`; :mod:`cimnas.hw.mapping` counts macros, copies and cycles; this
module counts actions, multiplies by energies per action and combines.

Action counts per layer (cim-cost-model.md §5, calibrated on the 24 CiMLoop chip runs of
``cimloop-layer-runs.json``; see docs/cost_model.md):

=================  ===========================================  ===============================
component          actions                                      energy per action
=================  ===========================================  ===============================
cim_unit           MACs · s_w                                   cell read (x̄, w̄, t = 2^b_x - 1)
row_drivers        N·P·Q·G·K·T_c                                row read (V, cols, x̄, t)
adc                N·P·Q·G·(M·s_w)·T_r                          conversion (bits, V, node)
column_drivers     = adc                                        0 (parallel read mode)
glb                in bits: 1 write + f reads; out bits: 1 read + 2 writes    CACTI / width
router             (in bits · f + out bits) / 128               ISAAC router transfer
input_buffer       in bits · f writes + N·P·Q·G·K·b_x reads (multicast over T_c)  CACTI / width
output_buffer      conversions · b_out · 2 writes               CACTI / width
=================  ===========================================  ===============================

``f`` is the input re-fetch factor: 1 except for depthwise layers, whose sliding windows are
re-read from the GLB (f = R·(1 + (S-1)/t_q) · P·Q / (H_in·W_in), at least 1).
Leakage is not charged (everything is power-gated; CiMLoop's leakage is ~1e-12 pJ per cycle).

Reference compatibility (``reference_compat=True``) reproduces the reference code's quirks
(cim-cost-model.md §1.5): input and weight bit widths are swapped when handed to the
simulator, the capacity check ignores G for depthwise layers, and layer strides are ignored
when sizing the input tensors (CiMLoop never saw them). (Its lossy 8-level weight
histograms are a workload option: ``workload_from_module(..., reference_histograms=True)``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from cimnas.hw import histogram
from cimnas.hw.components import adc as adc_mod
from cimnas.hw.components import cell as cell_mod
from cimnas.hw.components import drivers, router, sram
from cimnas.hw.mapping import Mapping, map_layers
from cimnas.hw.params import HardwareBatch
from cimnas.hw.workload import DEFAULT_INPUT_HIST, DEFAULT_WEIGHT_HIST, LAYER_KINDS, Workload

#: Feasibility codes. Area is NOT checked here: the search compares ``area_mm2`` with its budget.
REASONS: tuple[str, ...] = ("ok", "capacity", "layer-exceeds-chip", "empty-workload")
COMPONENTS: tuple[str, ...] = ("cim_unit", "row_drivers", "column_drivers", "adc", "input_buffer",
                               "output_buffer", "router", "glb")
DEPTHWISE = LAYER_KINDS.index("depthwise")
#: Output values cross the output buffer twice (ADC write + accumulate write) — calibrated on the
#: CiMLoop runs (ref-00/01/02 within 0.3 %).
OUTPUT_BUFFER_WRITES_PER_BIT = 2.0
#: GLB: inputs are filled once and read f times; outputs are read once and written twice
#: (first-update read-modify-write), exact on 15 of the 17 non-depthwise runs.
GLB_OUTPUT_WRITES_PER_BIT = 2.0


@dataclass
class CostResult:
    """Per-design results ``[B]`` (SI units: J, s, mm²)."""

    energy_j: torch.Tensor
    latency_s: torch.Tensor
    area_mm2: torch.Tensor
    edap: torch.Tensor  # J·s·mm² (the reference reports J·s·cm² = edap / 100)
    feasible: torch.Tensor
    reason: torch.Tensor
    required_cells: torch.Tensor
    available_cells: torch.Tensor
    energy_by_component_j: dict[str, torch.Tensor]
    area_by_component_mm2: dict[str, torch.Tensor]
    ops: torch.Tensor
    tops: torch.Tensor
    tops_per_w: torch.Tensor
    tops_per_mm2: torch.Tensor
    tops_per_w_layer_mean: torch.Tensor
    tops_per_w_layer_max: torch.Tensor
    tops_per_mm2_layer_mean: torch.Tensor
    tops_per_mm2_layer_max: torch.Tensor
    tops_layer_mean: torch.Tensor
    utilization: torch.Tensor  # max over layers (CIMNAS "u"), fraction
    utilization_layer_mean: torch.Tensor
    cycles: torch.Tensor
    layers: dict[str, torch.Tensor] = field(default_factory=dict)  # per-layer [B, L] (optional)

    @property
    def batch_size(self) -> int:
        return int(self.energy_j.shape[0])

    @property
    def edap_j_s_cm2(self) -> torch.Tensor:
        return self.edap / 100.0

    @property
    def reason_names(self) -> list[str]:
        return [REASONS[int(r)] for r in self.reason.tolist()]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per design."""
        scalars = {f.name: getattr(self, f.name).tolist() for f in fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        eb = {k: v.tolist() for k, v in self.energy_by_component_j.items()}
        ab = {k: v.tolist() for k, v in self.area_by_component_mm2.items()}
        out = []
        for i in range(self.batch_size):
            rec: dict[str, Any] = {}
            for k, v in scalars.items():
                x = v[i]
                rec[k] = x if not isinstance(x, float) or math.isfinite(x) else None
            rec["reason"] = REASONS[int(rec["reason"])]
            rec["edap_j_s_cm2"] = None if rec["edap"] is None else rec["edap"] / 100.0
            rec["energy_by_component_j"] = {k: v[i] for k, v in eb.items()}
            rec["area_by_component_mm2"] = {k: v[i] for k, v in ab.items()}
            out.append(rec)
        return out


# ---------------------------------------------------------------------- hardware constants


def _hardware_constants(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    """Per-design energies per action (pJ) and areas (mm²), ``[B]`` float64."""
    node = hw.technology_nm.double()
    rows, cols = hw.rows.double(), hw.cols.double()
    n_macro = (hw.router_groups * hw.tiles_per_group * hw.macros_per_tile).double()
    n_tile = (hw.router_groups * hw.tiles_per_group).double()
    sram_cell = cell_mod.is_sram(hw.cell)
    e_hi, e_lo = cell_mod.pulse_energies_pj(hw.cell, rows, cols)
    e_pulse = drivers.pulse_energy_pj(hw.voltage, cols, node)
    e_off = drivers.off_energy_pj(node)
    row_factor = torch.where(sram_cell, drivers.sram_factor(node), torch.ones_like(node))
    survey = hw.adc_model == adc_mod.ADC_MODELS.index("survey")
    rate = cols / hw.cycle_s.double() / adc_mod.ADCS_PER_BANK
    e_adc = torch.where(survey, adc_mod.survey_energy_pj(hw.adc_bits, node, rate),
                        adc_mod.neurosim_energy_pj(hw.adc_bits, hw.voltage, node, sram_cell))
    a_adc = torch.where(survey, adc_mod.survey_area_um2(hw.adc_bits, node, rate),
                        adc_mod.neurosim_area_um2(hw.cols, hw.adc_bits, node))
    width_tile = 8.0 * hw.macros_per_tile.double()
    ib_r, ib_w, ib_a = sram.tile_buffer(width_tile, rows, node)
    ob_r, ob_w, ob_a = sram.tile_buffer(width_tile, cols, node)
    g_r, g_w, g_a = sram.glb(hw.glb_depth_words.double(), hw.glb_width_bits.double(), node)
    glb_width = hw.glb_width_bits.double()
    area = {
        "adc": n_macro * a_adc * 1e-6,
        "row_drivers": n_macro * drivers.row_area_um2(rows, node) * 1e-6,
        "column_drivers": n_macro * drivers.col_area_um2(cols, node) * 1e-6,
        "cim_unit": n_macro * rows * cols * cell_mod.area_um2(hw.cell, node) * 1e-6,
        "input_buffer": n_tile * ib_a,
        "output_buffer": n_tile * ob_a,
        "router": hw.router_groups.double() * router.area_um2(node) * 1e-6,
        "glb": g_a,
    }
    return dict(
        e_hi=e_hi, e_lo=e_lo, e_pulse=e_pulse * row_factor, e_off=e_off * row_factor, e_adc=e_adc,
        ib_r_bit=ib_r / width_tile, ib_w_bit=ib_w / width_tile, ob_w_bit=ob_w / width_tile,
        glb_r_bit=g_r / glb_width, glb_w_bit=g_w / glb_width,
        router_bit=router.transfer_energy_pj(node) / router.WIDTH_BITS, area=area,
        n_macro=n_macro,
    )


# ---------------------------------------------------------------------- value statistics


def _slice_averages(workload: Workload, bx: torch.Tensor, bw: torch.Tensor, slice_w: torch.Tensor,
                    B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x̄ [B, L] (one input slice of b_x bits) and w̄ [B, L] (slices of min(bpc, b_w) bits)."""
    L, dev = workload.num_layers, workload.device

    def table(hist: torch.Tensor | None, default: tuple[float, ...]) -> torch.Tensor:
        if hist is None:
            hist = torch.tensor(default, dtype=torch.float32, device=dev).view(1, 1, -1).expand(1, L, -1)
        t = histogram.slice_value_table(hist)  # [Bh, L, 9, 9]
        return t.reshape(t.shape[0], L * 81)

    base = (torch.arange(L, device=dev) * 81).unsqueeze(0)

    def lookup(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.long() + base
        if t.shape[0] == 1:
            return t[0][idx]
        return t.gather(1, idx.expand(t.shape[0], L) if idx.shape[0] == 1 else idx)

    x_bar = lookup(table(workload.input_hist, DEFAULT_INPUT_HIST), bx * 9 + bx)
    w_bar = lookup(table(workload.weight_hist, DEFAULT_WEIGHT_HIST), bw * 9 + slice_w)
    if workload.average_input_value is not None:
        given = workload.average_input_value.to(x_bar.dtype)
        x_bar = torch.where(torch.isnan(given), x_bar, given)
    if workload.average_weight_value is not None:
        given = workload.average_weight_value.to(w_bar.dtype)
        w_bar = torch.where(torch.isnan(given), w_bar, given)
    return x_bar.expand(B, L), w_bar.expand(B, L)


# ---------------------------------------------------------------------- evaluate


def evaluate(workload: Workload, hardware: HardwareBatch, *, reference_compat: bool = False,
             per_layer: bool = False) -> CostResult:
    """Score B designs. ``workload`` has B rows or one row broadcast over ``hardware``'s B."""
    B = hardware.batch_size
    if workload.batch_size not in (1, B):
        raise ValueError(f"workload has B = {workload.batch_size}, hardware has B = {B}; need 1 or equal")
    if workload.device != hardware.device:
        raise ValueError(f"workload on {workload.device}, hardware on {hardware.device}")
    f32 = torch.float32
    hc = _hardware_constants(hardware)
    col = lambda t: t.to(f32).unsqueeze(1)  # noqa: E731  [B] -> [B, 1]

    w = {name: getattr(workload, name).to(f32) for name in ("N", "C", "M", "R", "S", "P", "Q", "G", "stride")}
    bx = workload.input_bits
    bw = workload.weight_bits
    if reference_compat:
        bx, bw = bw, bx
    bpc = hardware.bits_per_cell.unsqueeze(1)
    slice_w = torch.minimum(bpc, bw)
    x_bar, w_bar = _slice_averages(workload, bx, bw, slice_w, B)
    bx_f, bw_f = bx.to(f32), bw.to(f32)
    bo_f = workload.output_bits.to(f32)
    mask = workload.mask.expand(B, -1) if workload.batch_size == 1 else workload.mask
    maskf = mask.to(f32)

    mp: Mapping = map_layers(
        C=w["C"], M=w["M"], R=w["R"], S=w["S"], P=w["P"], Q=w["Q"], G=w["G"], N=w["N"],
        weight_bits=bw_f, bits_per_cell=col(hardware.bits_per_cell), rows=col(hardware.rows),
        cols=col(hardware.cols), macros_per_tile=col(hardware.macros_per_tile),
        tiles_per_group=col(hardware.tiles_per_group), router_groups=col(hardware.router_groups),
    )
    NPQG = w["N"] * w["P"] * w["Q"] * w["G"]
    macs = NPQG * w["M"] * w["C"] * w["R"] * w["S"]
    pulses = torch.exp2(bx_f) - 1.0
    # --- macro components
    e_cell = (col(hc["e_lo"]) + col(hc["e_hi"] - hc["e_lo"]) * w_bar) * (x_bar * pulses)
    e_row = col(hc["e_off"]) + col(hc["e_pulse"]) * (x_bar * pulses)
    row_acts = NPQG * mp.K * mp.T_c
    conversions = NPQG * mp.n_col * mp.T_r
    # --- data movement
    # the reference's layer files spell the stride "Hstride", which CiMLoop ignores (stride 1)
    stride = torch.ones_like(w["stride"]) if reference_compat else w["stride"]
    h_in = (w["P"] - 1) * stride + w["R"]
    w_in = (w["Q"] - 1) * stride + w["S"]
    in_bits = w["N"] * w["G"] * w["C"] * h_in * w_in * bx_f
    out_bits = NPQG * w["M"] * bo_f
    depthwise = workload.kind == DEPTHWISE
    refetch = w["R"] * (1.0 + (w["S"] - 1.0) / mp.t_q) * (w["P"] * w["Q"]) / (h_in * w_in)
    refetch = torch.where(depthwise, refetch.clamp(min=1.0), torch.ones_like(refetch))
    in_reads = in_bits * refetch

    per_layer_pj = {
        "cim_unit": macs * mp.s_w * e_cell,
        "row_drivers": row_acts * e_row,
        "column_drivers": torch.zeros_like(row_acts),
        "adc": conversions * col(hc["e_adc"]),
        "input_buffer": in_reads * col(hc["ib_w_bit"]) + NPQG * mp.K * bx_f * col(hc["ib_r_bit"]),
        "output_buffer": conversions * bo_f * (OUTPUT_BUFFER_WRITES_PER_BIT * col(hc["ob_w_bit"])),
        "router": (in_reads + out_bits) * col(hc["router_bit"]),
        "glb": in_reads * col(hc["glb_r_bit"]) + in_bits * col(hc["glb_w_bit"])
        + out_bits * (col(hc["glb_r_bit"]) + GLB_OUTPUT_WRITES_PER_BIT * col(hc["glb_w_bit"])),
    }
    energy_by_component = {k: (v * maskf).sum(1).double() * 1e-12 for k, v in per_layer_pj.items()}
    energy_j = sum(energy_by_component.values())
    cycles_l = mp.cycles * maskf
    cycles = cycles_l.sum(1).double()
    cycle_s = hardware.cycle_s.double()
    latency_s = cycles * cycle_s
    area_by_component = {k: v.double() for k, v in hc["area"].items()}
    area_mm2 = sum(area_by_component.values())

    # --- feasibility
    available = (hardware.rows * hardware.cols).double() * hc["n_macro"]
    g_count = torch.where(depthwise, torch.ones_like(w["G"]), w["G"]) if reference_compat else w["G"]
    # the capacity check always reads the true weight bits (index 0 of the reference's bits file)
    s_true = torch.ceil(workload.weight_bits.to(f32) / torch.minimum(col(hardware.bits_per_cell), workload.weight_bits.to(f32)))
    cells = (g_count * w["C"] * w["R"] * w["S"] * w["M"] * s_true * maskf).double().sum(1)
    layer_fits = (mp.fits | ~mask).all(1)
    nonempty = mask.any(1)
    reason = torch.zeros(B, dtype=torch.long, device=hardware.device)
    reason = torch.where(cells > available, torch.full_like(reason, REASONS.index("capacity")), reason)
    reason = torch.where(~layer_fits, torch.full_like(reason, REASONS.index("layer-exceeds-chip")), reason)
    reason = torch.where(~nonempty, torch.full_like(reason, REASONS.index("empty-workload")), reason)
    feasible = reason == 0
    inf = torch.full_like(energy_j, math.inf)
    unevaluable = ~layer_fits | ~nonempty
    energy_j = torch.where(unevaluable, inf, energy_j)
    latency_s = torch.where(unevaluable, inf, latency_s)

    # --- metrics (cim-cost-model.md §6)
    ops_l = 2.0 * macs * maskf
    ops = ops_l.double().sum(1)
    e_l = sum(per_layer_pj.values()) * 1e-12  # [B, L] J (float32)
    lat_l = cycles_l * col(cycle_s)
    safe = lambda t: torch.where(mask, t, torch.ones_like(t))  # noqa: E731
    tops_l = ops_l / safe(lat_l) / 1e12
    tpw_l = ops_l / safe(e_l) / 1e12
    tpm_l = tops_l / col(area_mm2)
    n_layers = maskf.sum(1).clamp(min=1).double()
    masked_max = lambda t: torch.where(mask, t, torch.zeros_like(t)).max(1).values.double()  # noqa: E731
    cells_per_chip = col(available)
    util_l = macs * mp.s_w / safe(mp.cycles * cells_per_chip)
    result = CostResult(
        energy_j=energy_j, latency_s=latency_s, area_mm2=area_mm2, edap=energy_j * latency_s * area_mm2,
        feasible=feasible, reason=reason, required_cells=cells, available_cells=available,
        energy_by_component_j=energy_by_component, area_by_component_mm2=area_by_component,
        ops=ops, tops=ops / latency_s / 1e12, tops_per_w=ops / energy_j / 1e12,
        tops_per_mm2=ops / latency_s / 1e12 / area_mm2,
        tops_per_w_layer_mean=(tpw_l * maskf).double().sum(1) / n_layers,
        tops_per_w_layer_max=masked_max(tpw_l),
        tops_per_mm2_layer_mean=(tpm_l * maskf).double().sum(1) / n_layers,
        tops_per_mm2_layer_max=masked_max(tpm_l),
        tops_layer_mean=(tops_l * maskf).double().sum(1) / n_layers,
        utilization=masked_max(util_l), utilization_layer_mean=(util_l * maskf).double().sum(1) / n_layers,
        cycles=cycles,
    )
    if per_layer:
        result.layers = {
            "energy_j": e_l * maskf, "latency_s": lat_l, "cycles": cycles_l, "macs": macs * maskf,
            "utilization": util_l * maskf, "copies": mp.copies, "macros_per_copy": mp.macros_per_copy,
            "fits": mp.fits, "average_input_value": x_bar, "average_weight_value": w_bar,
            **{f"{k}_energy_j": v * 1e-12 * maskf for k, v in per_layer_pj.items()},
        }
    return result


__all__ = ["REASONS", "COMPONENTS", "CostResult", "evaluate"]
