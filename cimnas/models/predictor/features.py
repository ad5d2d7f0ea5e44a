"""Capacity and bit-operation features of an :class:`ArchBatch`, beside APQ's one-hots.

One batched pass over the space's layer plan (:func:`cimnas.space.layers.layer_plan`, the same
slots the cost-model lowering prices) gives ``[B, F]`` float32 features, no loop over candidates:

    log MACs, log parameters, log weight bits (sum params x weight bits), log bit-ops
    (sum MACs x weight bits x activation bits), active depth, depth per stage, mean kernel,
    mean width ratio (hidden / the block's largest hidden) and mean pw_w / pw_a / dw_w / dw_a
    bits over the active blocks   [, is_quantized]

A slot's parameters are ``G * C * M * R * S`` (``C``, ``M`` per group; the depthwise slot is
``C = M = 1``, ``G = hidden``), its MACs ``params * P * Q``; fixed slots (stem, head) use the
space's ``fixed_bits``. The bit features are left out for a full-precision model
(``bits=False``); ``is_quantized`` is the indicator that lets one model learn from float and
quantized records together (1 for a quantized design, 0 for a float measurement).
"""

from __future__ import annotations

import torch

from cimnas.space import ArchBatch, SearchSpace, get_space
from cimnas.space.layers import ROLES, ROLE_DW, ROLE_MID, layer_plan

CAPACITY_NAMES = ("log_macs", "log_params")
BIT_NAMES = ("log_weight_bits", "log_bitops")


class CapacityFeatures:
    """Batched capacity / bit features of one space (``names`` lists the columns)."""

    def __init__(self, space: SearchSpace | str | dict, bits: bool = True, quantized_indicator: bool = False):
        self.space = space = get_space(space)
        self.bits = bool(bits)
        self.quantized_indicator = bool(quantized_indicator)
        plan = layer_plan(space)
        self._plan = plan
        self._max_hidden = torch.tensor([float(space.max_hidden(b)) for b in range(space.num_blocks)])
        names = list(CAPACITY_NAMES) + (list(BIT_NAMES) if self.bits else [])
        names += ["active_depth"] + [f"depth_stage{s}" for s in range(space.num_stages)]
        names += ["mean_kernel", "mean_width_ratio"]
        if self.bits:
            names += ["mean_pw_w_bits", "mean_pw_a_bits", "mean_dw_w_bits", "mean_dw_a_bits"]
        if self.quantized_indicator:
            names.append("is_quantized")
        self.names = tuple(names)

    @property
    def dim(self) -> int:
        return len(self.names)

    def __call__(self, batch: ArchBatch, is_quantized: torch.Tensor | float | None = None) -> torch.Tensor:
        """``float32 [B, dim]``. ``is_quantized``: per-row (or scalar) indicator, default 1."""
        space, plan, dev = self.space, self._plan, batch.device
        B, L = batch.batch_size, plan.num_slots
        block, role = plan.block.to(dev), plan.role.to(dev)
        blk = block.clamp(min=0).unsqueeze(0).expand(B, L)
        hidden = batch.hidden.gather(1, blk)
        kernel = batch.kernels.gather(1, blk)
        se = plan.se_lut.to(dev)[hidden.clamp(max=len(plan.se_lut) - 1)]

        def pick(static: torch.Tensor, **by_role: torch.Tensor) -> torch.Tensor:
            out = static.to(dev).unsqueeze(0).expand(B, L)
            for name, value in by_role.items():
                out = torch.where(role == ROLES[name], value, out)
            return out

        C = pick(plan.C, se_reduce=hidden, se_expand=se, project=hidden, mid=hidden).double()
        M = pick(plan.M, expand=hidden, se_reduce=se, se_expand=hidden, mid=hidden).double()
        R = pick(plan.R, dw=kernel, mid=kernel).double()
        G = pick(plan.G, dw=hidden).double()
        res_index = torch.searchsorted(plan.resolutions.to(dev), batch.resolution.contiguous())
        P = plan.P_by_res.to(dev)[res_index.clamp(max=len(plan.resolutions) - 1)].double()
        active = batch.active_blocks(space)  # [B, NB]
        slot_on = torch.where(block.unsqueeze(0) < 0, torch.ones(B, L, dtype=torch.bool, device=dev),
                              active.gather(1, blk)).double()
        params = G * C * M * R * R * slot_on
        macs = params * P * P
        cols = [macs.sum(1).log(), params.sum(1).log()]
        if self.bits:
            bits = batch.bits.double()
            is_dw = ((role == ROLE_DW) | (role == ROLE_MID)).unsqueeze(0)
            fixed = (block < 0).unsqueeze(0)
            w = torch.where(is_dw, bits[:, :, 2].gather(1, blk), bits[:, :, 0].gather(1, blk))
            a = torch.where(is_dw, bits[:, :, 3].gather(1, blk), bits[:, :, 1].gather(1, blk))
            w = torch.where(fixed, float(space.fixed_bits), w)
            a = torch.where(fixed, float(space.fixed_bits), a)
            cols += [(params * w).sum(1).log(), (macs * w * a).sum(1).log()]
        act = active.double()
        n_active = act.sum(1).clamp(min=1.0)
        cols.append(act.sum(1))
        cols += [batch.depths[:, s].double() for s in range(space.num_stages)]
        cols.append((batch.kernels.double() * act).sum(1) / n_active)
        cols.append((batch.hidden.double() / self._max_hidden.to(dev).double() * act).sum(1) / n_active)
        if self.bits:
            for f in range(4):
                cols.append((batch.bits[:, :, f].double() * act).sum(1) / n_active)
        if self.quantized_indicator:
            flag = 1.0 if is_quantized is None else is_quantized
            cols.append(torch.as_tensor(flag, dtype=torch.float64, device=dev).expand(B))
        return torch.stack(cols, 1).float()


__all__ = ["CapacityFeatures", "CAPACITY_NAMES", "BIT_NAMES"]
