"""The one bridge from architectures to the cost model: layer plan + :class:`ArchBatch` + value
statistics -> :class:`~cimnas.hw.workload.Workload` (``[B, L]`` tensors, no Python loop over
candidates), and :func:`evaluate_arch`, which prices B architectures on B chips without ever
materialising the whole ``[B, L]`` workload."""

from __future__ import annotations

from typing import Any

import torch

from cimnas.hw.cost_model import evaluate_rows
from cimnas.hw.params import HardwareBatch
from cimnas.hw.result import CostResult
from cimnas.hw.workload import LAYER_KINDS, TYPICAL_HISTOGRAMS, Workload, WorkloadError
from cimnas.space import ArchBatch, SearchSpace
from cimnas.space.layers import (KINDS, ROLE_DW, ROLE_MID, ROLES, LayerPlan, layer_plan)

if KINDS != LAYER_KINDS:  # pragma: no cover - the two vocabularies are one list, by name
    raise ImportError(f"layer plan kinds {KINDS} differ from the cost model's {LAYER_KINDS}")

_TYPICAL_CACHE: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}


def typical_value_stats(space: SearchSpace) -> dict[str, torch.Tensor]:
    """Per-slot typical histograms ``[1, L, 31]`` of the space (the roles of CIMNAS's shipped
    MobileNetV2 workload, :data:`cimnas.hw.workload.TYPICAL_HISTOGRAMS`)."""
    if space not in _TYPICAL_CACHE:
        roles = layer_plan(space).value_roles
        _TYPICAL_CACHE[space] = (torch.tensor([TYPICAL_HISTOGRAMS[r][0] for r in roles]).unsqueeze(0),
                                 torch.tensor([TYPICAL_HISTOGRAMS[r][1] for r in roles]).unsqueeze(0))
    inp, wgt = _TYPICAL_CACHE[space]
    return {"input_hist": inp, "weight_hist": wgt}


def workload_from_arch(space: SearchSpace, arch: ArchBatch, *,
                       value_stats: dict[str, torch.Tensor] | str | None = "typical") -> Workload:
    """Shapes and bit widths of B architectures as one ``[B, L]`` workload. ``value_stats``:
    ``"typical"`` (default: :func:`typical_value_stats`), ``None`` (the cost model's generic
    default), or a dict with per-slot ``input_hist`` / ``weight_hist`` ``[L, 31]`` (or ``[B, L,
    31]``) and/or ``average_input_value`` / ``average_weight_value`` ``[L]``."""
    table: LayerPlan = layer_plan(space)
    dev = arch.device
    B, L = arch.batch_size, table.num_slots
    block = table.block.to(dev)
    role = table.role.to(dev)
    blk = block.clamp(min=0).unsqueeze(0).expand(B, L)
    hidden = arch.hidden.gather(1, blk)  # [B, L]
    kernel = arch.kernels.gather(1, blk)
    se = table.se_lut.to(dev)[hidden.clamp(max=len(table.se_lut) - 1)]

    def pick(static: torch.Tensor, **by_role: torch.Tensor) -> torch.Tensor:
        out = static.to(dev).unsqueeze(0).expand(B, L)
        for name, value in by_role.items():
            out = torch.where(role == ROLES[name], value, out)
        return out

    C = pick(table.C, se_reduce=hidden, se_expand=se, project=hidden, mid=hidden)
    M = pick(table.M, expand=hidden, se_reduce=se, se_expand=hidden, mid=hidden)
    R = pick(table.R, dw=kernel, mid=kernel)
    G = pick(table.G, dw=hidden)
    res_index = torch.searchsorted(table.resolutions.to(dev), arch.resolution.contiguous())
    P = table.P_by_res.to(dev)[res_index.clamp(max=len(table.resolutions) - 1)]
    active = arch.active_blocks(space)
    mask = torch.where(block.unsqueeze(0) < 0, torch.ones_like(P, dtype=torch.bool), active.gather(1, blk))
    bits = arch.bits  # [B, NB, 4] pw_w, pw_a, dw_w, dw_a
    is_dw = ((role == ROLE_DW) | (role == ROLE_MID)).unsqueeze(0)  # the block's spatial conv uses dw_* bits
    w_bits = torch.where(is_dw, bits[:, :, 2].gather(1, blk), bits[:, :, 0].gather(1, blk))
    a_bits = torch.where(is_dw, bits[:, :, 3].gather(1, blk), bits[:, :, 1].gather(1, blk))
    fixed = (block < 0).unsqueeze(0)
    fb = torch.full_like(w_bits, space.fixed_bits)
    w_bits = torch.where(fixed, fb, w_bits)
    a_bits = torch.where(fixed, fb, a_bits)
    ones = torch.ones_like(P)
    out = dict(
        kind=table.kind.to(dev).unsqueeze(0).expand(B, L), N=ones, C=C, M=M, R=R, S=R, P=P, Q=P, G=G,
        stride=table.stride.to(dev).unsqueeze(0).expand(B, L), input_bits=a_bits, weight_bits=w_bits,
        output_bits=torch.full_like(P, 8), mask=mask, names=list(table.names),
    )
    if isinstance(value_stats, str):
        if value_stats != "typical":
            raise WorkloadError(f"value_stats={value_stats!r} is not allowed; allowed values: 'typical', None or a dict")
        value_stats = typical_value_stats(space)
    if value_stats:
        for key in ("input_hist", "weight_hist"):
            if key in value_stats and value_stats[key] is not None:
                h = value_stats[key].to(dev).float()
                out[key] = (h if h.dim() == 3 else h.unsqueeze(0))
        for key in ("average_input_value", "average_weight_value"):
            if key in value_stats and value_stats[key] is not None:
                out[key] = value_stats[key].to(dev).float().expand(B, L)
    return Workload(**out)


def evaluate_arch(space: SearchSpace, arch: ArchBatch, hardware: HardwareBatch, *, value_stats: Any = "typical",
                  reference_compat: bool = False, per_layer: bool = False, chunk_rows: int | None = None,
                  num_threads: int = 1, compile: bool | None = None) -> CostResult:
    """``evaluate(workload_from_arch(space, arch, value_stats=...), hardware)`` without ever
    materialising the ``[B, L]`` workload: each chunk of rows builds its own slice of it (same
    results, less memory, cache-friendly). ``value_stats`` must be per slot (not per row).
    ``compile``: the fused cost kernel (:func:`cimnas.hw.evaluate`)."""
    if arch.batch_size != hardware.batch_size:
        raise ValueError(f"arch has B = {arch.batch_size}, hardware has B = {hardware.batch_size}")
    lower, probes = _lowering(space, value_stats)
    if arch.batch_size == 1:  # the cost model then scores the probe itself
        probe = workload_from_arch(space, arch, value_stats=value_stats)
    else:  # only its layers and value statistics are read: the same for every architecture
        probe = probes.get(arch.device)
        if probe is None:
            probe = probes[arch.device] = workload_from_arch(space, arch[:1], value_stats=value_stats)
    return evaluate_rows(probe, lambda sl: arch[sl], hardware, reference_compat=reference_compat,
                         per_layer=per_layer, chunk_rows=chunk_rows, num_threads=num_threads, compile=compile,
                         lower=lower)


_LOWERINGS: dict[Any, Any] = {}


def _lowering(space: SearchSpace, value_stats: Any):
    """(``workload_from_arch(space, ·, value_stats=value_stats)`` as one function object per
    (space, value statistics), so that the fused cost kernel compiles it once; that pair's
    one-row probe workloads by device). The function holds ``value_stats``, so its ``id`` in
    the key stays unique while the entry lives."""
    key = (space, value_stats if isinstance(value_stats, (str, type(None))) else id(value_stats))
    entry = _LOWERINGS.get(key)
    if entry is None:
        if len(_LOWERINGS) > 64:
            _LOWERINGS.clear()
        entry = _LOWERINGS[key] = (lambda arch: workload_from_arch(space, arch, value_stats=value_stats), {})
    return entry


__all__ = ["typical_value_stats", "workload_from_arch", "evaluate_arch"]
