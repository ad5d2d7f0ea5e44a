"""The per-chunk math of the CIM cost model (:mod:`cimnas.hw.cost_model` drives it).

:func:`workload_terms` precomputes everything that depends on the workload only (``[Bw, L]``
float32: MACs, bits moved, average input / weight values from the slice tables, the depthwise
re-fetch terms, cells of every weight); :func:`evaluate_chunk` adds b hardware rows: the mapping
(macros, copies, cycles; the rules of :mod:`cimnas.hw.mapping`, inlined), the action counts per
component and the per-layer energies, summed over layers. :func:`chunk_from_rows` does both for
one chunk of a per-row workload. The action-count table is in :mod:`cimnas.hw.cost_model`; the
fused (``torch.compile``) form of these functions is :mod:`cimnas.hw.cost_compile`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from cimnas.hw import histogram
from cimnas.hw.mapping import pq_cycles
from cimnas.hw.workload import DEFAULT_INPUT_HIST, DEFAULT_WEIGHT_HIST, LAYER_KINDS, Workload

DEPTHWISE = LAYER_KINDS.index("depthwise")
#: Output values cross the output buffer twice (ADC write + accumulate write) — calibrated on the
#: CiMLoop runs (ref-00/01/02 within 0.3 %).
OUTPUT_BUFFER_WRITES_PER_BIT = 2.0
#: GLB: inputs are filled once and read f times; outputs are read once and written twice
#: (first-update read-modify-write), exact on 15 of the 17 non-depthwise runs.
GLB_OUTPUT_WRITES_PER_BIT = 2.0


# ---------------------------------------------------------------------- workload terms


def slice_tables(workload: Workload) -> tuple[torch.Tensor, torch.Tensor]:
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


ROW_TERMS = ("sum_in_bits", "sum_out_bits", "sum_ibr", "sum_ops", "sum_weight_bits", "nonempty", "mask")


def workload_terms(workload: Workload, reference_compat: bool,
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
    in_table, w_table = tables if tables is not None else slice_tables(workload)
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


def evaluate_chunk(t: dict[str, Any], h: dict[str, torch.Tensor], per_layer: bool, compat: bool,
                    square: bool = False) -> dict[str, torch.Tensor]:
    """Core of :func:`~cimnas.hw.cost_model.evaluate` for b hardware rows: ``t`` workload terms ``[1 or b, L]``,
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


def chunk_from_rows(lower: Callable[[Any], Workload] | None, rows: Any, h: dict[str, torch.Tensor],
                     tables: tuple[torch.Tensor, torch.Tensor], per_layer: bool, compat: bool,
                     square: bool) -> dict[str, Any]:
    """One chunk of a per-row workload (``rows``, or ``lower(rows)``): its terms, then the chunk
    (and its row sums). Compiled, ``lower`` is fused into the same graph."""
    workload = rows if lower is None else lower(rows)
    ts = workload_terms(workload, compat, tables)
    out = evaluate_chunk(ts, h, per_layer, compat, square)
    out.update({k: ts[k] for k in ROW_TERMS})
    return out


__all__ = ["DEPTHWISE", "GLB_OUTPUT_WRITES_PER_BIT", "OUTPUT_BUFFER_WRITES_PER_BIT", "ROW_TERMS", "chunk_from_rows",
           "evaluate_chunk", "slice_tables", "workload_terms"]
