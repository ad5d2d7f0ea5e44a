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

from cimnas.hw import histogram
from cimnas.hw.components import cell as cell_mod
from cimnas.hw.components import dram
from cimnas.hw.mapping import pq_cycles
from cimnas.hw.params import HardwareBatch
from cimnas.hw.workload import DEFAULT_INPUT_HIST, DEFAULT_WEIGHT_HIST, LAYER_KINDS, Workload
from cimnas.hw.result import COMPONENTS, REASONS, CostResult
from cimnas.hw.constants import _hardware_constants

DEPTHWISE = LAYER_KINDS.index("depthwise")
#: Output values cross the output buffer twice (ADC write + accumulate write) — calibrated on the
#: CiMLoop runs (ref-00/01/02 within 0.3 %).
OUTPUT_BUFFER_WRITES_PER_BIT = 2.0
#: GLB: inputs are filled once and read f times; outputs are read once and written twice
#: (first-update read-modify-write), exact on 15 of the 17 non-depthwise runs.
GLB_OUTPUT_WRITES_PER_BIT = 2.0


# ---------------------------------------------------------------------- hardware constants


# ---------------------------------------------------------------------- workload terms


def _slice_tables(workload: Workload) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat slice-value tables ``[Bh, L*81]`` (entry l*81 + B*9 + s) for inputs and weights."""
    L, dev = workload.num_layers, workload.device

    def table(hist: torch.Tensor | None, default: tuple[float, ...]) -> torch.Tensor:
        if hist is None:
            hist = torch.tensor(default, dtype=torch.float32, device=dev).view(1, 1, -1).expand(1, L, -1)
        t = histogram.slice_value_table(hist)  # [Bh, L, 9, 9]
        return t.reshape(t.shape[0], L * 81).contiguous()

    return table(workload.input_hist, DEFAULT_INPUT_HIST), table(workload.weight_hist, DEFAULT_WEIGHT_HIST)


def _lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    idx = idx.long()
    if table.shape[0] == 1:
        return table[0][idx]
    return table.gather(1, idx.expand(table.shape[0], -1) if idx.shape[0] == 1 else idx)


_ROW_TERMS = ("sum_in_bits", "sum_out_bits", "sum_ibr", "sum_ops", "sum_weight_bits", "nonempty", "mask")


def _workload_terms(workload: Workload, reference_compat: bool,
                    tables: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Everything that depends on the workload only, float32 ``[Bw, L]`` (and sums ``[Bw]``)."""
    f32 = torch.float32
    L, dev = workload.num_layers, workload.device
    g = {k: getattr(workload, k).to(f32) for k in ("N", "C", "M", "R", "S", "P", "Q", "G", "stride")}
    bx_l, bw_l = workload.input_bits, workload.weight_bits
    if reference_compat:
        bx_l, bw_l = bw_l, bx_l
    mask = workload.mask.to(f32)
    bx, bw = bx_l.to(f32), bw_l.to(f32)
    in_table, w_table = tables if tables is not None else _slice_tables(workload)
    base = torch.arange(L, device=dev) * 81
    x_bar = _lookup(in_table, base + bx_l * 10)  # entry [b_x, s = b_x]
    if workload.average_input_value is not None:
        given = workload.average_input_value.to(f32)
        x_bar = torch.where(torch.isnan(given), x_bar, given)
    w_given = None
    if workload.average_weight_value is not None:
        w_given = workload.average_weight_value.to(f32)
    stride = torch.ones_like(g["stride"]) if reference_compat else g["stride"]
    h_in = (g["P"] - 1) * stride + g["R"]
    w_in = (g["Q"] - 1) * stride + g["S"]
    depthwise = (workload.kind == DEPTHWISE).to(f32)
    K = g["C"] * g["R"] * g["S"]
    n_m = g["N"] * g["P"] * g["Q"] * g["G"] * mask  # output pixels x groups, masked
    macs0 = n_m * g["M"] * K
    in_bits = g["N"] * g["G"] * g["C"] * h_in * w_in * bx * mask
    out_bits = n_m * g["M"] * workload.output_bits.to(f32)
    ibr = n_m * K * bx
    terms = dict(
        mask=mask, bx=bx, bw=bw, bw_true=workload.weight_bits.to(f32), xt=x_bar * (torch.exp2(bx) - 1.0),
        x_bar=x_bar, w_given=w_given, wbase=(base + bw_l * 9).to(f32), w_table=w_table,
        P=g["P"], Q=g["Q"], G=g["G"], M=g["M"], K=K, n_m=n_m, n_mK=n_m * K, macs0=macs0,
        in_bits=in_bits, out_bits=out_bits, ibr=ibr, bo=workload.output_bits.to(f32),
        # depthwise input re-fetch: f = max(1, pre * (1 + (S - 1) / t_q)); pre = 0 elsewhere
        refetch_pre=depthwise * g["R"] * g["P"] * g["Q"] / (h_in * w_in), refetch_sm1=depthwise * (g["S"] - 1.0),
        refetch_full=depthwise * g["R"] * g["S"] * g["P"] * g["Q"] / (h_in * w_in),
        Nmask=g["N"] * mask, wcells0=(torch.ones_like(g["G"]) if reference_compat else None),
        ops_l=2.0 * macs0,
        sum_in_bits=in_bits.sum(1), sum_out_bits=out_bits.sum(1), sum_ibr=ibr.sum(1), sum_ops=2.0 * macs0.sum(1),
        # stored weight bits of the network (what a DRAM weight fetch moves), true bit widths
        sum_weight_bits=((workload.C * workload.M * workload.R * workload.S * workload.G).double()
                         * workload.weight_bits.double() * workload.mask.double()).sum(1),
        depthwise=depthwise,
    )
    # capacity: cells of every weight (G counted, except in the reference's depthwise quirk)
    g_count = g["G"] * (1.0 - depthwise) + depthwise if reference_compat else g["G"]
    terms["wcells0"] = g_count * K * g["M"] * mask
    terms["nonempty"] = mask.sum(1) > 0
    return terms


# ---------------------------------------------------------------------- one chunk


def _evaluate_chunk(t: dict[str, Any], h: dict[str, torch.Tensor], per_layer: bool, compat: bool,
                    square: bool = False) -> dict[str, torch.Tensor]:
    """Core of :func:`evaluate` for b hardware rows: ``t`` workload terms ``[1 or b, L]``,
    ``h`` hardware constants ``[b, 1]`` float32. Returns ``[b]`` sums (and per-layer tensors)."""
    ceil, floor, minimum = torch.ceil, torch.floor, torch.minimum
    bw = t["bw"]
    s = minimum(bw, h["bpc"])
    s_w = ceil(bw / s)
    w_bar = _lookup(t["w_table"], t["wbase"] + s)
    if t["w_given"] is not None:
        w_bar = torch.where(torch.isnan(t["w_given"]), w_bar, t["w_given"])
    # --- mapping (see mapping.py for the rules; inlined to keep op count low)
    n_col = t["M"] * s_w
    T_r = ceil(t["K"] / h["rows"])
    T_c = ceil(n_col / h["cols"])
    w_left, g_left = T_r * T_c, t["G"]
    spares = []
    for f in (h["macros"], h["tiles"], h["groups"]):
        w = minimum(w_left, f)
        w_left = ceil(w_left / w)
        spare = floor(f / w)
        g = minimum(g_left, spare)
        g_left = ceil(g_left / g)
        spares.append(floor(spare / g))
    D = spares[0] * spares[1] * spares[2]
    best, t_q = pq_cycles(t["P"], t["Q"], D, square)
    # weights streamed from DRAM: what does not fit spatially runs in temporal passes (CiMLoop's
    # fetch_weights_lpddr4 lets the DRAM level iterate over weights); on chip it is unmappable
    passes = torch.where(h["streams"] > 0, w_left * g_left, torch.ones_like(w_left))
    cyc = best * t["Nmask"] * passes
    unfit = ((w_left * g_left) * t["mask"] * (1.0 - h["streams"])).amax(1) > 1
    # --- action counts
    macs_sw = t["macs0"] * s_w
    A1 = macs_sw * t["xt"]
    A2 = A1 * w_bar
    row_acts = t["n_mK"] * T_c
    A3 = row_acts * t["xt"]
    conv = t["n_m"] * n_col * T_r
    conv_b = conv * t["bo"]
    refetch = (t["refetch_pre"] * (1.0 + t["refetch_sm1"] / t_q)).clamp_(min=1.0)
    # groups spread over router groups: every output pixel re-reads its whole window
    refetch = torch.where(g > 1, t["refetch_full"].clamp(min=1.0), refetch)
    in_reads = t["in_bits"] * refetch
    # --- per-layer energy (pJ), needed for the reference's per-layer TOPS/W
    e_l = h["k_in_reads"] * in_reads
    e_l.addcmul_(h["glb_w_bit"], t["in_bits"]).addcmul_(h["k_out_bits"], t["out_bits"])
    e_l.addcmul_(h["ib_r_bit"], t["ibr"]).addcmul_(h["e_adc"], conv).addcmul_(h["k_ob"], conv_b)
    e_l.addcmul_(h["e_off"], row_acts).addcmul_(h["e_pulse"], A3).addcmul_(h["e_lo"], A1).addcmul_(h["de"], A2)
    cyc_c = cyc.clamp(min=1.0)
    tops_raw = t["ops_l"] / cyc_c
    tpw_raw = t["ops_l"] / e_l.clamp(min=1e-30)
    util_raw = macs_sw / cyc_c
    s_true = ceil(t["bw_true"] / minimum(t["bw_true"], h["bpc"])) if compat else s_w
    out = dict(
        A1=A1.sum(1), A2=A2.sum(1), row_acts=row_acts.sum(1), A3=A3.sum(1), conv=conv.sum(1),
        conv_b=conv_b.sum(1), in_reads=in_reads.sum(1), cycles=cyc.sum(1), unfit=unfit,
        cells=(t["wcells0"] * s_true).sum(1), tops_sum=tops_raw.sum(1), tops_max=tops_raw.amax(1),
        tpw_sum=tpw_raw.sum(1), tpw_max=tpw_raw.amax(1), util_sum=util_raw.sum(1), util_max=util_raw.amax(1),
    )
    if per_layer:
        out["layers"] = dict(
            energy_pj=e_l * t["mask"], cycles=cyc, macs=t["macs0"], util_raw=util_raw * t["mask"], copies=D,
            macros_per_copy=t["G"] * T_r * T_c, fits=(w_left * g_left) <= 1,
            average_input_value=t["x_bar"].expand_as(cyc), average_weight_value=w_bar.expand_as(cyc),
            cim_unit=(h["e_lo"] * A1 + h["de"] * A2), row_drivers=(h["e_off"] * row_acts + h["e_pulse"] * A3),
            adc=h["e_adc"] * conv, output_buffer=h["k_ob"] * conv_b,
            input_buffer=h["ib_w_bit"] * in_reads + h["ib_r_bit"] * t["ibr"],
            router=h["router_bit"] * (in_reads + t["out_bits"]),
            glb=h["glb_r_bit"] * in_reads + h["glb_w_bit"] * t["in_bits"]
            + (h["glb_r_bit"] + GLB_OUTPUT_WRITES_PER_BIT * h["glb_w_bit"]) * t["out_bits"],
        )
    return out


def _chunk_from_rows(lower: Callable[[Any], Workload] | None, rows: Any, h: dict[str, torch.Tensor],
                     tables: tuple[torch.Tensor, torch.Tensor], per_layer: bool, compat: bool,
                     square: bool) -> dict[str, Any]:
    """One chunk of a per-row workload (``rows``, or ``lower(rows)``): its terms, then the chunk
    (and its row sums). Compiled, ``lower`` is fused into the same graph."""
    workload = rows if lower is None else lower(rows)
    ts = _workload_terms(workload, compat, tables)
    out = _evaluate_chunk(ts, h, per_layer, compat, square)
    out.update({k: ts[k] for k in _ROW_TERMS})
    return out


#: ``torch.compile`` versions of the per-chunk math, made on first use (one per function; the
#: compiled graphs are cached by torch per shape class, device and static arguments).
_COMPILED: dict[str, Callable] = {}


#: When the fused kernel repays its compile (measured on the loaded 2-core machine, apq_mbv2,
#: one thread): the cold compile takes ~30 s (27-46 s; ~8 s from the inductor cache) and saves
#: 7.5 us per design at B = 150, 18 at 1,000 and 9.6 at 20,000, so it pays from ~3e6 designs.
COMPILE_BREAK_EVEN_DESIGNS = 3_000_000


def compile_pays_off(num_designs: int) -> bool:
    """Whether scoring ``num_designs`` designs (e.g. popsize x generations) with the fused kernel
    is expected to repay its compile (:data:`COMPILE_BREAK_EVEN_DESIGNS`)."""
    return num_designs >= COMPILE_BREAK_EVEN_DESIGNS


def resolve_compile(setting: bool | str | None, num_designs: int) -> bool:
    """``True`` / ``False`` as given, ``None`` = off, ``"auto"`` = :func:`compile_pays_off`."""
    if setting is None or isinstance(setting, bool):
        return bool(setting)
    if setting == "auto":
        return compile_pays_off(num_designs)
    raise ValueError(f"compile={setting!r} is not allowed; allowed values: true, false, 'auto'")


def _kernels(compile: bool) -> tuple[Callable, Callable]:
    """(chunk of a shared workload, chunk of a per-row workload), eager or fused."""
    if not compile:
        return _evaluate_chunk, _chunk_from_rows
    if not _COMPILED:
        # dynamic: one graph for every chunk size (the last chunk is shorter) and layer count
        _COMPILED["shared"] = _without_recompiles(torch.compile(_evaluate_chunk, dynamic=True))
        _COMPILED["rows"] = _without_recompiles(torch.compile(_chunk_from_rows, dynamic=True))
    return _COMPILED["shared"], _COMPILED["rows"]


def _without_recompiles(fn: Callable) -> Callable:
    """Call a compiled kernel so that its guards hold from call to call: without grad (callers
    in and outside ``no_grad`` share a graph) and without duck sizing (sizes or storage offsets
    that happen to be equal at the first call, e.g. a chunk's offset and a gene count, would
    otherwise be guarded equal and recompile the next chunk)."""
    from torch.fx.experimental import _config as fx_config

    def call(*args: Any) -> Any:
        with torch.no_grad(), fx_config.patch(use_duck_shape=False):
            return fn(*args)

    return call


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
    tables = _slice_tables(workload)
    terms = _workload_terms(workload, reference_compat, tables) if Bw == 1 else None
    rows = chunk_rows or chunk_rows_for(workload.num_layers, hardware.device, compile) or B
    slices = [slice(i, min(i + rows, B)) for i in range(0, B, rows)]

    shared_kernel, rows_kernel = _kernels(compile)

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
        terms = {k: sums[k] for k in _ROW_TERMS if k != "mask"}
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


__all__ = ["REASONS", "COMPONENTS", "CostResult", "evaluate", "evaluate_rows", "CPU_CHUNK_ELEMENTS",
           "CPU_COMPILED_CHUNK_ELEMENTS", "chunk_rows_for", "COMPILE_BREAK_EVEN_DESIGNS", "compile_pays_off",
           "resolve_compile"]
