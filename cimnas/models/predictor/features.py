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
    """Batched capacity / bit features of one space (``names`` lists the columns).

    Per block the parameters and MACs of its point-wise slots (``pw_*`` bits) and of its
    depthwise / middle slot (``dw_*`` bits) depend only on (resolution, kernel, hidden), so they
    are tabulated once per space from the layer plan; a query is one gather per block."""

    def __init__(self, space: SearchSpace | str | dict, bits: bool = True, quantized_indicator: bool = False):
        self.space = space = get_space(space)
        self.bits = bool(bits)
        self.quantized_indicator = bool(quantized_indicator)
        self._max_hidden = torch.tensor([float(space.max_hidden(b)) for b in range(space.num_blocks)])
        names = list(CAPACITY_NAMES) + (list(BIT_NAMES) if self.bits else [])
        names += ["active_depth"] + [f"depth_stage{s}" for s in range(space.num_stages)]
        names += ["mean_kernel", "mean_width_ratio"]
        if self.bits:
            names += ["mean_pw_w_bits", "mean_pw_a_bits", "mean_dw_w_bits", "mean_dw_a_bits"]
        if self.quantized_indicator:
            names.append("is_quantized")
        self.names = tuple(names)
        self._build_tables()
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        return len(self.names)

    def _build_tables(self) -> None:
        space, plan = self.space, layer_plan(self.space)
        nb, ks = space.num_blocks, tuple(space.kernel_choices)
        hs = [space.hidden_choices(b) for b in range(nb)]
        n_res, n_k, n_h = len(plan.resolutions), len(ks), max(len(h) for h in hs)
        block, role = plan.block, plan.role
        is_dw = (role == ROLE_DW) | (role == ROLE_MID)
        # value tables: position in the choice list (kernel: shared; hidden: per block)
        k_span = max(ks) + 1
        h_span = max(max(h) for h in hs) + 1
        self._kernel_pos = torch.zeros(k_span, dtype=torch.long)
        for i, k in enumerate(ks):
            self._kernel_pos[k] = i
        self._hidden_pos = torch.zeros(nb * h_span, dtype=torch.long)
        for b, choices in enumerate(hs):
            for i, h in enumerate(choices):
                self._hidden_pos[b * h_span + h] = i
        self._h_row = (torch.arange(nb) * h_span).view(1, nb)
        self._spans = (k_span, h_span)
        # table [n_res, NB, n_k, n_h, 4] of (pw params, pw MACs, dw params, dw MACs) per block
        table = torch.zeros(n_res, nb, n_k, n_h, 4, dtype=torch.float64)
        fixed = torch.zeros(n_res, 2, dtype=torch.float64)  # params, MACs of the fixed slots
        for r in range(n_res):
            for ki, k in enumerate(ks):
                for hi in range(n_h):
                    hidden = torch.tensor([[h[min(hi, len(h) - 1)] for h in hs]])
                    kernels = torch.full((1, nb), k)
                    params, macs = _slot_params_macs(space, plan, hidden, kernels, r)
                    for q, (vals, dw) in enumerate(((params, False), (macs, False), (params, True), (macs, True))):
                        sel = (block >= 0) & (is_dw == dw)
                        table[r, :, ki, hi, q].index_add_(0, block[sel], vals[0, sel])
                    fixed[r, 0] = params[0, block < 0].sum()
                    fixed[r, 1] = macs[0, block < 0].sum()
        self._table = table.view(-1, 4).float()
        self._fixed = fixed.float()
        self._resolutions = plan.resolutions
        self._dims = (nb, n_k, n_h)

    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = {n: getattr(self, "_" + n).to(device) for n in (
                "kernel_pos", "hidden_pos", "h_row", "table", "fixed", "resolutions", "max_hidden")}
        return self._device_cache[device]

    def __call__(self, batch: ArchBatch, is_quantized: torch.Tensor | float | None = None) -> torch.Tensor:
        """``float32 [B, dim]``. ``is_quantized``: per-row (or scalar) indicator, default 1.
        Values of inactive blocks are ignored (clamped into the tables)."""
        space, dev = self.space, batch.device
        t = self._tables(dev)
        nb, n_k, n_h = self._dims
        k_span, h_span = self._spans
        B = batch.batch_size
        res = torch.searchsorted(t["resolutions"], batch.resolution.contiguous()).clamp(max=len(t["resolutions"]) - 1)
        kpos = t["kernel_pos"][batch.kernels.clamp(0, k_span - 1)]
        hpos = t["hidden_pos"][batch.hidden.clamp(0, h_span - 1) + t["h_row"]]
        row = ((res.unsqueeze(1) * nb + torch.arange(nb, device=dev)) * n_k + kpos) * n_h + hpos
        active = batch.active_blocks(space)
        act = active.float()
        vals = t["table"][row] * act.unsqueeze(-1)  # [B, NB, 4]
        fixed = t["fixed"][res]  # [B, 2]
        pw_p, pw_m, dw_p, dw_m = vals.unbind(-1)
        cols = [(fixed[:, 1] + (pw_m + dw_m).sum(1)).log(), (fixed[:, 0] + (pw_p + dw_p).sum(1)).log()]
        if self.bits:
            bits = batch.bits.float()
            fb = float(space.fixed_bits)
            wbits = fixed[:, 0] * fb + (pw_p * bits[..., 0] + dw_p * bits[..., 2]).sum(1)
            bitops = fixed[:, 1] * fb * fb + (pw_m * bits[..., 0] * bits[..., 1] + dw_m * bits[..., 2] * bits[..., 3]).sum(1)
            cols += [wbits.log(), bitops.log()]
        n_active = act.sum(1).clamp(min=1.0)
        cols.append(act.sum(1))
        cols += list(batch.depths.float().unbind(1))
        cols.append((batch.kernels.float() * act).sum(1) / n_active)
        cols.append((batch.hidden.float() / t["max_hidden"].float() * act).sum(1) / n_active)
        if self.bits:
            cols += list(((bits * act.unsqueeze(-1)).sum(1) / n_active.unsqueeze(1)).unbind(1))
        if self.quantized_indicator:
            flag = 1.0 if is_quantized is None else is_quantized
            cols.append(torch.as_tensor(flag, dtype=torch.float32, device=dev).expand(B))
        return torch.stack(cols, 1)


def _slot_params_macs(space: SearchSpace, plan, hidden: torch.Tensor, kernels: torch.Tensor,
                      res_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters and MACs ``[B, L]`` of every slot (all blocks taken active) at one resolution."""
    B, L = hidden.shape[0], plan.num_slots
    block, role = plan.block, plan.role
    blk = block.clamp(min=0).unsqueeze(0).expand(B, L)
    h = hidden.gather(1, blk)
    k = kernels.gather(1, blk)
    se = plan.se_lut[h.clamp(max=len(plan.se_lut) - 1)]

    def pick(static: torch.Tensor, **by_role: torch.Tensor) -> torch.Tensor:
        out = static.unsqueeze(0).expand(B, L)
        for name, value in by_role.items():
            out = torch.where(role == ROLES[name], value, out)
        return out

    C = pick(plan.C, se_reduce=h, se_expand=se, project=h, mid=h).double()
    M = pick(plan.M, expand=h, se_reduce=se, se_expand=h, mid=h).double()
    R = pick(plan.R, dw=k, mid=k).double()
    G = pick(plan.G, dw=h).double()
    P = plan.P_by_res[res_index].double().unsqueeze(0)
    params = G * C * M * R * R
    return params, params * P * P


__all__ = ["CapacityFeatures", "CAPACITY_NAMES", "BIT_NAMES"]
