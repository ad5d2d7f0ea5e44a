"""Per-design hardware constants of the cost model: the energies per action and areas each
component model (:mod:`cimnas.hw.components`) gives for a chip's genes, computed once per
distinct combination of the genes they depend on (memoised, bit-identical to a per-row
computation)."""

from __future__ import annotations

from typing import Callable

import torch

from cimnas.hw.components import adc as adc_mod
from cimnas.hw.components import cell as cell_mod
from cimnas.hw.components import drivers, router, sram
from cimnas.hw.params import HardwareBatch


def _cell_terms(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    e_hi, e_lo = cell_mod.pulse_energies_pj(hw.cell, hw.rows.double(), hw.cols.double())
    return {"e_hi": e_hi, "e_lo": e_lo}


def _row_terms(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    node = hw.technology_nm.double()
    factor = torch.where(cell_mod.is_sram(hw.cell), drivers.sram_factor(node), torch.ones_like(node))
    return {"e_pulse": drivers.pulse_energy_pj(hw.voltage, hw.cols.double(), node) * factor,
            "e_off": drivers.off_energy_pj(node) * factor}


def _adc_terms(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    node = hw.technology_nm.double()
    survey = hw.adc_model == adc_mod.ADC_MODELS.index("survey")
    rate = hw.cols.double() / hw.cycle_s.double() / adc_mod.ADCS_PER_BANK
    e = torch.where(survey, adc_mod.survey_energy_pj(hw.adc_bits, node, rate),
                    adc_mod.neurosim_energy_pj(hw.adc_bits, hw.voltage, node, cell_mod.is_sram(hw.cell)))
    a = torch.where(survey, adc_mod.survey_area_um2(hw.adc_bits, node, rate),
                    adc_mod.neurosim_area_um2(hw.cols, hw.adc_bits, node))
    return {"e_adc": e, "a_adc": a}


def _tile_terms(depth_field: str, prefix: str):
    def fn(hw: HardwareBatch) -> dict[str, torch.Tensor]:
        width = 8.0 * hw.macros_per_tile.double()
        r, w, a = sram.tile_buffer(width, getattr(hw, depth_field).double(), hw.technology_nm.double())
        return {f"{prefix}_r_bit": r / width, f"{prefix}_w_bit": w / width, f"{prefix}_a": a}
    return fn


def _glb_terms(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    width = hw.glb_width_bits.double()
    r, w, a = sram.glb(hw.glb_depth_words.double(), width, hw.technology_nm.double())
    return {"glb_r_bit": r / width, "glb_w_bit": w / width, "glb_a": a}


def _macro_terms(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    node, rows, cols = hw.technology_nm.double(), hw.rows.double(), hw.cols.double()
    return {"a_row": drivers.row_area_um2(rows, node), "a_col": drivers.col_area_um2(cols, node),
            "a_cells": rows * cols * cell_mod.area_um2(hw.cell, node)}


def _router_terms(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    node = hw.technology_nm.double()
    return {"router_bit": router.transfer_energy_pj(node) / router.WIDTH_BITS, "a_router": router.area_um2(node)}


#: Per-design constants by group: (the hardware fields a group depends on, its term function).
_GROUPS: tuple[tuple[tuple[str, ...], Callable[[HardwareBatch], dict[str, torch.Tensor]]], ...] = (
    (("cell", "rows", "cols"), _cell_terms),
    (("voltage", "cols", "technology_nm", "cell"), _row_terms),
    (("adc_model", "adc_bits", "voltage", "technology_nm", "cell", "cols", "cycle_s"), _adc_terms),
    (("macros_per_tile", "rows", "technology_nm"), _tile_terms("rows", "ib")),
    (("macros_per_tile", "cols", "technology_nm"), _tile_terms("cols", "ob")),
    (("glb_depth_words", "glb_width_bits", "technology_nm"), _glb_terms),
    (("technology_nm", "cell", "rows", "cols"), _macro_terms),
    (("technology_nm",), _router_terms),
)


#: Memo of the groups' constants: (group, device) -> {field values: constants}, and the
#: constants' names per group. Bounded: a group's memo is emptied when it reaches _MEMO_LIMIT.
_MEMO: dict[tuple[int, torch.device], dict[tuple[float, ...], tuple[float, ...]]] = {}


_MEMO_NAMES: dict[int, tuple[str, ...]] = {}


_MEMO_LIMIT = 1 << 18


#: Copies of each new combination evaluated together, so that every element goes through the
#: same (vectorised) code path of torch's CPU kernels: a memo entry then does not depend on
#: which batch first asked for it (pow / exp2 differ by an ulp between the vector body and the
#: scalar tail of a CPU kernel), and results do not depend on what was evaluated before.
_CANONICAL_COPIES = 16


def _constants_per_row(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    """Energies per action and areas of each row of ``hw``, computed row by row (no sharing,
    no memo): the plain computation the memoised one reproduces."""
    c: dict[str, torch.Tensor] = {}
    for _, fn in _GROUPS:
        c.update(fn(hw))
    return c


def _compact(key: torch.Tensor, span: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(key, return_inverse=True)`` for keys in ``[0, span)``; by counting when
    the span is small (no sort), same result."""
    if span <= 4 * key.numel() + 4096:
        present = torch.zeros(span, dtype=torch.bool, device=key.device).scatter_(0, key, True)
        rank = present.cumsum(0) - 1
        return present.nonzero().squeeze(1), rank.index_select(0, key)
    return torch.unique(key, return_inverse=True)


def _field_code(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Exact small-integer code of a hardware field ``[B]`` and its number of values."""
    lo, hi = torch.aminmax(x)
    if bool(lo == hi):
        return torch.zeros_like(x, dtype=torch.long), 1
    if x.dtype.is_floating_point:
        values, code = torch.unique(x, return_inverse=True)
        return code, len(values)
    lo_i, hi_i = int(lo), int(hi)
    return x - lo_i, hi_i - lo_i + 1


def _new_group_values(gi: int, hw: HardwareBatch, rows: torch.Tensor) -> list[tuple[float, ...]]:
    """Group ``gi``'s constants of ``hw[rows]`` (rows with combinations not in the memo), each
    computed in :data:`_CANONICAL_COPIES` copies; sets the group's constant names."""
    new = _GROUPS[gi][1](hw[rows.repeat_interleave(_CANONICAL_COPIES)])
    _MEMO_NAMES[gi] = tuple(new)
    return [tuple(v) for v in torch.stack([new[k] for k in _MEMO_NAMES[gi]], 1)[::_CANONICAL_COPIES].tolist()]


def _memoised_constants(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    """:func:`_constants_per_row` through the memo: each group's constants are looked up by the
    values of the fields it depends on (hardware genes are categorical, so a population has
    few distinct combinations per group and a search meets the same ones again and again);
    combinations not seen before are computed (``_CANONICAL_COPIES`` copies each) and stored."""
    B, dev = hw.batch_size, hw.device
    codes: dict[str, tuple[torch.Tensor, int]] = {}
    c: dict[str, torch.Tensor] = {}
    for gi, (fields, fn) in enumerate(_GROUPS):
        key = torch.zeros(B, dtype=torch.long, device=dev)
        span = 1
        for f in fields:
            if f not in codes:
                codes[f] = _field_code(getattr(hw, f))
            code, n = codes[f]
            if span * n >= 1 << 62:
                uniq, key = torch.unique(key, return_inverse=True)
                span = len(uniq)
            key, span = key * n + code, span * n
        uniq, inverse = _compact(key, span)
        rep = torch.zeros(len(uniq), dtype=torch.long, device=dev).scatter_(0, inverse, torch.arange(B, device=dev))
        combos = [tuple(r) for r in torch.stack([getattr(hw, f)[rep].double() for f in fields], 1).tolist()]
        memo = _MEMO.setdefault((gi, dev), {})
        rows = [memo.get(k) for k in combos]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            values = _new_group_values(gi, hw, rep[torch.tensor(missing, device=dev)])
            if len(memo) + len(missing) > _MEMO_LIMIT:
                memo.clear()
            for i, v in zip(missing, values):
                rows[i] = memo[combos[i]] = v
        table = torch.tensor(rows, dtype=torch.float64, device=dev).index_select(0, inverse)  # [B, constants]
        c.update(zip(_MEMO_NAMES[gi], table.unbind(1)))
    return c


#: Batches of at most this many designs (a GA population) look their constants up by the whole
#: hardware row, one dict lookup per design, and assemble rows not seen before from the per-group
#: memo's entries with dict lookups too (no per-group tensor ops: ~1.3 -> ~0.3 ms per call at
#: popsize 150); larger batches, with many distinct rows, take the per-group memo's tensor path.
#: Same values either way (both read and write the same per-group entries).
_ROW_MEMO_MAX_BATCH = 4096
_ROW_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for fields, _ in _GROUPS for f in fields))
#: Positions in _ROW_FIELDS of each group's fields (its per-group memo key, in its order).
_GROUP_POSITIONS = tuple(tuple(_ROW_FIELDS.index(f) for f in fields) for fields, _ in _GROUPS)
#: device -> {row's field values: constants of every group, in group order}; bounded like _MEMO.
_ROW_MEMO: dict[torch.device, dict[tuple[float, ...], tuple[float, ...]]] = {}


def _row_memoised_constants(hw: HardwareBatch) -> dict[str, torch.Tensor]:
    """:func:`_memoised_constants` through a memo of whole hardware rows (small batches): a row
    not seen before is assembled from the per-group memo with plain dict lookups (the same
    entries :func:`_memoised_constants` reads and writes), new group combinations computed as
    there."""
    dev = hw.device
    # distinct rows only (a GA population holds a few dozen chips): the dict work is per chip
    stacked = torch.stack([getattr(hw, f).double() for f in _ROW_FIELDS], 1)
    distinct, inverse = torch.unique(stacked, dim=0, return_inverse=True)
    first_row = torch.full((distinct.shape[0],), stacked.shape[0], dtype=torch.long, device=dev).scatter_reduce_(
        0, inverse, torch.arange(stacked.shape[0], device=dev), "amin")
    keys = [tuple(r) for r in distinct.tolist()]
    memo = _ROW_MEMO.setdefault(dev, {})
    first: dict[tuple[float, ...], int] = {}
    for k, i in zip(keys, first_row.tolist()):
        if k not in memo:
            first[k] = i
    if first:
        new_keys, new_rows = list(first), list(first.values())
        parts = []
        for gi, pos in enumerate(_GROUP_POSITIONS):
            gmemo = _MEMO.setdefault((gi, dev), {})
            combos = [tuple(k[j] for j in pos) for k in new_keys]
            values = [gmemo.get(c) for c in combos]
            todo: dict[tuple[float, ...], int] = {}
            for c, v, r in zip(combos, values, new_rows):
                if v is None and c not in todo:
                    todo[c] = r
            if todo:
                computed = dict(zip(todo, _new_group_values(gi, hw, torch.tensor(list(todo.values()), device=dev))))
                if len(gmemo) + len(todo) > _MEMO_LIMIT:
                    gmemo.clear()
                gmemo.update(computed)
                values = [computed[c] if v is None else v for c, v in zip(combos, values)]
            parts.append(values)
        if len(memo) + len(first) > _MEMO_LIMIT:
            memo.clear()
        for i, k in enumerate(new_keys):
            memo[k] = tuple(x for part in parts for x in part[i])
    names = [n for gi in range(len(_GROUPS)) for n in _MEMO_NAMES[gi]]
    table = torch.tensor([memo[k] for k in keys], dtype=torch.float64, device=dev)[inverse]
    return dict(zip(names, table.unbind(1)))


def _hardware_constants(hw: HardwareBatch, *, memo: bool = True) -> dict[str, torch.Tensor]:
    """Per-design energies per action (pJ) and areas (mm²), ``[B]`` float64; ``memo``: through
    :func:`_memoised_constants` (the interpolation tables themselves are built once per device,
    :func:`cimnas.hw.components.technology.cached_table`)."""
    if not memo:
        c = _constants_per_row(hw)
    elif hw.batch_size <= _ROW_MEMO_MAX_BATCH:
        c = _row_memoised_constants(hw)
    else:
        c = _memoised_constants(hw)
    n_macro = (hw.router_groups * hw.tiles_per_group * hw.macros_per_tile).double()
    n_tile = (hw.router_groups * hw.tiles_per_group).double()
    c["area"] = {
        "adc": n_macro * c["a_adc"] * 1e-6,
        "row_drivers": n_macro * c["a_row"] * 1e-6,
        "column_drivers": n_macro * c["a_col"] * 1e-6,
        "cim_unit": n_macro * c["a_cells"] * 1e-6,
        "input_buffer": n_tile * c["ib_a"],
        "output_buffer": n_tile * c["ob_a"],
        "router": hw.router_groups.double() * c["a_router"] * 1e-6,
        "glb": c["glb_a"],
    }
    c["n_macro"] = n_macro
    return c
