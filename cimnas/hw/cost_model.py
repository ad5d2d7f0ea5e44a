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
re-read from the GLB: f = R·(1 + (S-1)/t_q) · P·Q / (H_in·W_in) (rows re-read, columns slide,
t_q = temporal steps along Q), or the full window per output pixel R·S·P·Q / (H_in·W_in) when
the groups are spread over router groups (the runs R13/R17); at least 1.
Leakage is not charged (everything is power-gated; CiMLoop's leakage is ~1e-12 pJ per cycle).

SRAM cells (``cell`` of kind sram) hold one bit per cell whatever ``bits_per_cell`` says and pay no
cell read energy (NeuroSim books it in the periphery). With ``weight_memory="lpddr4"`` (CiMLoop
system ``fetch_weights_lpddr4``) a network whose weights do not fit on chip is not a capacity
failure: every weight bit streams from LPDDR4 once per inference (``main_memory`` energy, latency
added to the compute latency; :mod:`cimnas.hw.components.dram`), and a layer larger than the chip
runs in ``ceil`` temporal passes of what fits (cycles × passes) instead of being unmappable.

The per-chunk math (workload terms, mapping, action counts, per-layer energies) is
:mod:`cimnas.hw.cost_chunk`, its fused ``torch.compile`` form :mod:`cimnas.hw.cost_compile`; this
module chunks the batch, runs them and sums the per-component energies, latency, area and
derived metrics into a :class:`~cimnas.hw.result.CostResult`.

Reference compatibility (``reference_compat=True``) reproduces the reference code's quirks
(cim-cost-model.md §1.5): input and weight bit widths are swapped when handed to the
simulator, the capacity check ignores G for depthwise layers, and layer strides are ignored
when sizing the input tensors (CiMLoop never saw them). (Its lossy 8-level weight
histograms are a workload option: ``cimnas.models.workload_trace.workload_from_module(..., reference_histograms=True)``.)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from cimnas.hw.components import cell as cell_mod
from cimnas.hw.components import dram
from cimnas.hw.constants import _hardware_constants
from cimnas.hw.cost_chunk import (
    GLB_OUTPUT_WRITES_PER_BIT, OUTPUT_BUFFER_WRITES_PER_BIT, ROW_TERMS, slice_tables, workload_terms,
)
from cimnas.hw.cost_compile import kernels
from cimnas.hw.params import HardwareBatch
from cimnas.hw.result import REASONS, CostResult
from cimnas.hw.workload import Workload


# ---------------------------------------------------------------------- evaluate

#: Elements (rows x layers) per chunk on CPU: the eager path's [chunk, L] float32 tensors stay in
#: cache (measured: ~4x faster per op than whole-batch tensors at B = 1e5; best near 70k elements,
#: i.e. ~1,000 rows of a 68-layer MobileNetV2). Rows per chunk = elements // L.
CPU_CHUNK_ELEMENTS = 65536
#: The fused kernel's chunks: ~8,700 rows of a 68-layer MobileNetV2 (measured at B = 1e5, one
#: thread: 378k designs/s at 8,192 rows vs 338k at 3,855 and 339k at 16,384: per-call overhead
#: against its dozen [chunk, L] intermediates leaving the cache); up to 72 layers, one of the
#: search's 8,192-row evaluation pieces (cimnas.search.problem.EVAL_CHUNK_ROWS) is one call.
CPU_COMPILED_CHUNK_ELEMENTS = 9 * CPU_CHUNK_ELEMENTS


def chunk_rows_for(num_layers: int, device: torch.device | str = "cpu", compiled: bool = False) -> int | None:
    """Default rows per chunk: ~:data:`CPU_CHUNK_ELEMENTS` elements on CPU, None (one piece)
    elsewhere."""
    if torch.device(device).type != "cpu":
        return None
    return max(1, (CPU_COMPILED_CHUNK_ELEMENTS if compiled else CPU_CHUNK_ELEMENTS) // max(1, num_layers))


def evaluate(workload: Workload, hardware: HardwareBatch, *, reference_compat: bool = False,
             per_layer: bool = False, chunk_rows: int | None = None, num_threads: int = 1,
             compile: bool | None = None) -> CostResult:
    """Score B designs. ``workload`` has B rows or one row broadcast over ``hardware``'s B.

    On CPU the batch is processed in chunks of ``chunk_rows`` rows (default
    :func:`chunk_rows_for`: ~:data:`CPU_CHUNK_ELEMENTS` rows x layers) with single-threaded torch ops (intra-op threads only add
    synchronisation on such small tensors; measured 61,000 vs 23,000 designs/s at B = 1e5 on the
    shared 2-core machine), by ``num_threads`` Python threads (default 1: on this machine a
    2-thread pool was slower, the ops being short enough for the GIL to matter). On CUDA the
    batch is one piece. Results do not depend on the chunking or the threads.

    ``compile=True`` runs the per-chunk math (workload terms + mapping + action counts) as one
    ``torch.compile`` graph instead of ~260 separate elementwise kernels per design: several
    times faster on large batches, after a one-off compile (tens of seconds cold, a few seconds
    from the inductor cache). Same results within float32 rounding (sums over layers may be
    reassociated: measured ≤ 1e-6 relative, feasibility identical). ``None``/``False``: eager."""
    if hardware.device.type != "cpu":
        return _evaluate(workload, hardware, reference_compat, per_layer, chunk_rows, 1, compile=bool(compile))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _evaluate(workload, hardware, reference_compat, per_layer, chunk_rows, num_threads,
                         compile=bool(compile))
    finally:
        torch.set_num_threads(previous)


def evaluate_rows(probe: Workload, rows_of: Callable[[slice], Any], hardware: HardwareBatch, *,
                  reference_compat: bool = False, per_layer: bool = False, chunk_rows: int | None = None,
                  num_threads: int = 1, compile: bool | None = None,
                  lower: Callable[[Any], Workload] | None = None) -> CostResult:
    """Score B designs whose workload is built lazily, one chunk of rows at a time:
    ``rows_of(slice)`` returns those rows of a B-row workload (or, with ``lower``, something
    ``lower`` turns into them: e.g. rows of an architecture batch), and ``probe`` is a one-row
    workload with the same layers and value statistics. Same results as :func:`evaluate` on the
    whole workload, without ever materialising it (less memory, cache-friendly). ``compile``:
    as in :func:`evaluate`; ``lower`` is then compiled into the same graph as the cost math
    (pass the same function object every call, or each call compiles again)."""
    if hardware.batch_size == 1:
        return evaluate(probe, hardware, reference_compat=reference_compat, per_layer=per_layer, compile=compile)
    run = lambda: _evaluate(probe, hardware, reference_compat, per_layer, chunk_rows, num_threads,  # noqa: E731
                            provider=rows_of, compile=bool(compile), lower=lower)
    if hardware.device.type != "cpu":
        return run()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)


def _evaluate(workload: Workload, hardware: HardwareBatch, reference_compat: bool, per_layer: bool,
              chunk_rows: int | None, num_threads: int, provider=None, compile: bool = False,
              lower: Callable[[Any], Workload] | None = None) -> CostResult:
    """``provider(slice) -> Workload`` (rows of a B-row workload built lazily); ``workload`` is
    then a one-row probe with the same layers and value statistics."""
    B = hardware.batch_size
    if provider is None and workload.batch_size not in (1, B):
        raise ValueError(f"workload has B = {workload.batch_size}, hardware has B = {B}; need 1 or equal")
    if workload.device != hardware.device:
        raise ValueError(f"workload on {workload.device}, hardware on {hardware.device}")
    if workload.num_layers == 0:
        raise ValueError("workload has no layers")
    f32 = torch.float32
    hc = _hardware_constants(hardware)
    col = lambda x: x.to(f32).unsqueeze(1)  # noqa: E731
    # SRAM cells store one bit whatever bits_per_cell says (HardwareParams rejects other values)
    bits_per_cell = torch.where(cell_mod.is_sram(hardware.cell), torch.ones_like(hardware.bits_per_cell),
                                hardware.bits_per_cell)
    h = dict(
        bpc=col(bits_per_cell), rows=col(hardware.rows), cols=col(hardware.cols),
        macros=col(hardware.macros_per_tile), tiles=col(hardware.tiles_per_group), groups=col(hardware.router_groups),
        k_in_reads=col(hc["ib_w_bit"] + hc["router_bit"] + hc["glb_r_bit"]), glb_w_bit=col(hc["glb_w_bit"]),
        k_out_bits=col(hc["router_bit"] + hc["glb_r_bit"] + GLB_OUTPUT_WRITES_PER_BIT * hc["glb_w_bit"]),
        ib_r_bit=col(hc["ib_r_bit"]), ib_w_bit=col(hc["ib_w_bit"]), e_adc=col(hc["e_adc"]),
        k_ob=col(OUTPUT_BUFFER_WRITES_PER_BIT * hc["ob_w_bit"]), e_off=col(hc["e_off"]), e_pulse=col(hc["e_pulse"]),
        e_lo=col(hc["e_lo"]), de=col(hc["e_hi"] - hc["e_lo"]), router_bit=col(hc["router_bit"]),
        glb_r_bit=col(hc["glb_r_bit"]),
        streams=col(hardware.weight_memory == dram.WEIGHT_MEMORIES.index("lpddr4")),
    )
    Bw = workload.batch_size if provider is None else B
    if provider is None:
        provider = lambda sl: workload[sl]  # noqa: E731
    square = bool(torch.equal(workload.P, workload.Q))
    tables = slice_tables(workload)
    terms = workload_terms(workload, reference_compat, tables) if Bw == 1 else None
    rows = chunk_rows or chunk_rows_for(workload.num_layers, hardware.device, compile) or B
    slices = [slice(i, min(i + rows, B)) for i in range(0, B, rows)]

    shared_kernel, rows_kernel = kernels(compile)

    def run(sl: slice) -> dict[str, Any]:
        hs = {k: v[sl] for k, v in h.items()}
        if terms is not None:
            return shared_kernel(terms, hs, per_layer, reference_compat, square)
        part_tables = tuple(t if t.shape[0] == 1 else t[sl] for t in tables)
        return rows_kernel(lower, provider(sl), hs, part_tables, per_layer, reference_compat, square)

    if len(slices) > 1 and num_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            parts = list(pool.map(run, slices))
    else:
        parts = [run(sl) for sl in slices]
    sums = {k: torch.cat([p[k] for p in parts]).double() if k not in ("unfit", "nonempty") else torch.cat([p[k] for p in parts])
            for k in parts[0] if k not in ("layers", "mask")}
    if terms is None:  # per-row workload: its row sums came back with the chunks
        terms = {k: sums[k] for k in ROW_TERMS if k != "mask"}
        terms["mask"] = torch.cat([p["mask"] for p in parts])
        terms["nonempty"] = sums["nonempty"]

    pj = 1e-12
    in_reads, sum_out = sums["in_reads"], terms["sum_out_bits"].double()
    sum_in, sum_ibr = terms["sum_in_bits"].double(), terms["sum_ibr"].double()
    energy_by_component = {
        "cim_unit": (hc["e_lo"] * sums["A1"] + (hc["e_hi"] - hc["e_lo"]) * sums["A2"]) * pj,
        "row_drivers": (hc["e_off"] * sums["row_acts"] + hc["e_pulse"] * sums["A3"]) * pj,
        "column_drivers": torch.zeros_like(sums["A1"]),
        "adc": hc["e_adc"] * sums["conv"] * pj,
        "input_buffer": (hc["ib_w_bit"] * in_reads + hc["ib_r_bit"] * sum_ibr) * pj,
        "output_buffer": OUTPUT_BUFFER_WRITES_PER_BIT * hc["ob_w_bit"] * sums["conv_b"] * pj,
        "router": hc["router_bit"] * (in_reads + sum_out) * pj,
        "glb": (hc["glb_r_bit"] * in_reads + hc["glb_w_bit"] * sum_in
                + (hc["glb_r_bit"] + GLB_OUTPUT_WRITES_PER_BIT * hc["glb_w_bit"]) * sum_out) * pj,
    }
    available = (hardware.rows * hardware.cols).double() * hc["n_macro"]
    cells = sums["cells"]
    weight_bits = terms["sum_weight_bits"].double()
    weight_bits = weight_bits.expand(B).clone() if weight_bits.shape[0] == 1 else weight_bits
    fetch_j, fetch_s = dram.fetch_cost(weight_bits, cells, available, hardware.weight_memory)
    energy_by_component["main_memory"] = fetch_j
    energy_j = sum(energy_by_component.values())
    cycle_s = hardware.cycle_s.double()
    cycles = sums["cycles"]
    latency_s = cycles * cycle_s + fetch_s
    area_by_component = {k: v.double() for k, v in hc["area"].items()}
    area_mm2 = sum(area_by_component.values())

    nonempty = terms["nonempty"].expand(B) if Bw == 1 else terms["nonempty"]
    reason = torch.zeros(B, dtype=torch.long, device=hardware.device)
    on_chip = hardware.weight_memory == dram.WEIGHT_MEMORIES.index("on_chip")
    reason[(cells > available) & on_chip] = REASONS.index("capacity")
    reason[sums["unfit"]] = REASONS.index("layer-exceeds-chip")
    reason[~nonempty] = REASONS.index("empty-workload")
    feasible = reason == 0
    unevaluable = sums["unfit"] | ~nonempty
    energy_j = energy_j.masked_fill(unevaluable, math.inf)
    latency_s = latency_s.masked_fill(unevaluable, math.inf)

    ops = terms["sum_ops"].double().expand(B) if Bw == 1 else terms["sum_ops"].double()
    n_layers = (terms["mask"].sum(1).double().clamp(min=1)).expand(B) if Bw == 1 else terms["mask"].sum(1).double().clamp(min=1)
    tops_scale = 1.0 / (cycle_s * 1e12)
    result = CostResult(
        energy_j=energy_j, latency_s=latency_s, area_mm2=area_mm2, edap=energy_j * latency_s * area_mm2,
        feasible=feasible, reason=reason, required_cells=cells, available_cells=available,
        energy_by_component_j=energy_by_component, area_by_component_mm2=area_by_component,
        ops=ops, tops=ops / latency_s / 1e12, tops_per_w=ops / energy_j / 1e12,
        tops_per_mm2=ops / latency_s / 1e12 / area_mm2,
        tops_per_w_layer_mean=sums["tpw_sum"] / n_layers * 1e12 / 1e12,
        tops_per_w_layer_max=sums["tpw_max"],
        tops_per_mm2_layer_mean=sums["tops_sum"] * tops_scale / n_layers / area_mm2,
        tops_per_mm2_layer_max=sums["tops_max"] * tops_scale / area_mm2,
        tops_layer_mean=sums["tops_sum"] * tops_scale / n_layers,
        utilization=sums["util_max"] / available, utilization_layer_mean=sums["util_sum"] / n_layers / available,
        cycles=cycles, weight_bits=weight_bits,
    )
    if per_layer:
        lay = {k: torch.cat([p["layers"][k].expand(sl.stop - sl.start, -1) for p, sl in zip(parts, slices)])
               for k in parts[0]["layers"]}
        mask = terms["mask"].expand(B, -1) if Bw == 1 else terms["mask"]
        result.layers = {
            "energy_j": lay["energy_pj"] * 1e-12, "cycles": lay["cycles"], "latency_s": lay["cycles"] * cycle_s.unsqueeze(1).float(),
            "macs": lay["macs"].expand(B, -1) * mask, "utilization": lay["util_raw"] / available.unsqueeze(1).float(),
            "copies": lay["copies"], "macros_per_copy": lay["macros_per_copy"], "fits": lay["fits"],
            "average_input_value": lay["average_input_value"], "average_weight_value": lay["average_weight_value"],
            **{f"{c}_energy_j": lay[c] * 1e-12 * mask for c in ("cim_unit", "row_drivers", "adc", "input_buffer",
                                                                   "output_buffer", "router", "glb")},
        }
    return result


__all__ = ["CPU_CHUNK_ELEMENTS", "CPU_COMPILED_CHUNK_ELEMENTS", "chunk_rows_for", "evaluate", "evaluate_rows"]
