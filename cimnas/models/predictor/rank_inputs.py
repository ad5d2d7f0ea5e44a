"""The :class:`~cimnas.models.predictor.ranking.RankPredictor`'s two inputs from per-block lookup tables.

A query needs, per design, the hot one-hot columns (:class:`ArchEncoder`) and the capacity
features (:class:`CapacityFeatures`). Both depend on a block only through its option positions
(kernel, hidden width, the four bit widths) and the resolution, so :class:`RankInputTables`
tabulates, once per space:

- the one-hot column of each (block, kernel value), (block, hidden value) and
  (block, bit-width combination);
- the per-block float32 terms the features sum over blocks (MACs, parameters, width ratio,
  weight bits, bit-ops), computed with exactly the float32 operations of
  :meth:`CapacityFeatures.__call__` (so a table entry *is* that block's term, bit for bit).

A query is then a handful of gathers: the bag of hot columns of the active blocks (the one-hot
row's non-zero entries, in the encoder's order, as ``embedding_bag`` indices + offsets), and the
features as sums of gathered per-block terms (each term's sum over blocks runs over a
contiguous ``[rows, NB]`` tensor, as in :class:`CapacityFeatures`, so the sums are the same to
the bit); integer-valued sums (active depth, kernels, bit widths) are exact in any order.
Results are identical to ``ArchEncoder.indices`` + ``CapacityFeatures`` (tested); a batch
holding a value outside the tables returns ``None`` so that the caller takes that path (which
raises for bad values of active blocks).
"""

from __future__ import annotations

import torch

from cimnas.models.predictor.encoding import ArchEncoder
from cimnas.models.predictor.features import CapacityFeatures
from cimnas.space import BIT_FIELDS, ArchBatch

_NF = len(BIT_FIELDS)


class RankInputTables:
    """Lookup tables of one (encoder, features) pair. ``quantized``: the bag includes the quant
    columns (counted after the ``encoder.arch_dim`` arch columns) and the features the bit terms
    (``features.bits``)."""

    def __init__(self, encoder: ArchEncoder, features: CapacityFeatures, quantized: bool):
        if features.space != encoder.space:
            raise ValueError("encoder and features belong to different spaces")
        if features.bits != bool(quantized):
            raise ValueError(f"features.bits={features.bits} but quantized={quantized}")
        self.encoder, self.features, self.quantized = encoder, features, bool(quantized)
        space = encoder.space
        nb = space.num_blocks
        k_span, h_span, b_span = encoder._spans
        n_k, n_q = len(encoder.kernel_choices), len(encoder.bit_choices)
        self._dims = (nb, n_k, n_q, n_q ** _NF)
        self._spans = (k_span, h_span, b_span)
        # kernel value -> its position (-1: not a choice); hidden (block, value) -> its one-hot column
        self._kernel_pos = torch.full((k_span,), -1, dtype=torch.long)
        for i, k in enumerate(encoder.kernel_choices):
            self._kernel_pos[k] = i
        self._kernel_row = (torch.arange(nb) * n_k).view(1, nb)
        self._hidden_col = encoder._hidden_flat.clone()
        self._hidden_row = encoder._hidden_row.clone()
        # bit values (b0, b1, b2, b3) -> value code sum(b_f * b_span^(3-f)) -> position code (or -1)
        self._bit_weights = torch.tensor([b_span ** (_NF - 1 - f) for f in range(_NF)], dtype=torch.long)
        n_combo = n_q ** _NF
        combo = torch.arange(n_combo)
        pos = torch.stack([(combo // n_q ** (_NF - 1 - f)) % n_q for f in range(_NF)], 1)  # [81, 4]
        bit_values = torch.tensor(encoder.bit_choices, dtype=torch.long)[pos]  # [81, 4]
        self._bit_code = torch.full((b_span ** _NF,), -1, dtype=torch.long)
        self._bit_code[(bit_values * self._bit_weights).sum(1)] = combo
        # (block, position code) -> the four quant columns, counted after the arch columns
        q_off = encoder._quant_offsets  # [NB, 4]: f*NB*n_q + b*n_q
        self._quant_cols = (q_off.unsqueeze(1) + pos.unsqueeze(0) + encoder.arch_dim).reshape(nb * n_combo, _NF)
        self._combo_row = (torch.arange(nb) * n_combo).view(1, nb)
        self._build_feature_tables(bit_values.float())
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _build_feature_tables(self, bit_values: torch.Tensor) -> None:
        """Per-block feature terms, code a = (res, hidden column, kernel position) and code b =
        a x 81 + bit position code; the last entry of each table is the zero of inactive blocks."""
        enc, feat = self.encoder, self.features
        nb, n_k, _, n_combo = self._dims
        _, n_fk, n_h = feat._dims
        n_res = len(feat._resolutions)
        # every hidden one-hot column -> (block, position in its list, value)
        col_block, col_pos, col_value = [], [], []
        for b, choices in enumerate(enc.hidden_choices):
            for i, h in enumerate(choices):
                col_block.append(b)
                col_pos.append(i)
                col_value.append(h)
        n_cols = enc.kernel_dim + enc.hidden_dim  # hidden columns start at kernel_dim
        self._code_a_res = n_cols * n_k  # code a stride of one resolution
        n_a = n_res * self._code_a_res
        blk = torch.full((n_cols,), 0, dtype=torch.long)
        hpos = torch.zeros(n_cols, dtype=torch.long)
        hval = torch.ones(n_cols, dtype=torch.long)
        lo = enc.kernel_dim
        blk[lo:] = torch.tensor(col_block)
        hpos[lo:] = torch.tensor(col_pos)
        hval[lo:] = torch.tensor(col_value)
        # code a = (res * n_cols + hidden column) * n_k + kernel position
        res = torch.arange(n_res).view(-1, 1, 1).expand(n_res, n_cols, n_k).reshape(-1)
        col = torch.arange(n_cols).view(1, -1, 1).expand(n_res, n_cols, n_k).reshape(-1)
        kpos = torch.arange(n_k).view(1, 1, -1).expand(n_res, n_cols, n_k).reshape(-1)
        row = ((res * nb + blk[col]) * n_fk + kpos) * n_h + hpos[col]  # CapacityFeatures' table row
        vals = feat._table[row]  # [n_a, 4] float32: pw params, pw MACs, dw params, dw MACs
        pw_p, pw_m, dw_p, dw_m = vals.unbind(-1)
        width = hval[col].float() / feat._max_hidden.float()[blk[col]]
        zero = torch.zeros(1)
        # [3, n_a + 1]: MACs, parameters, width ratio (the exact float32 terms of CapacityFeatures)
        self._terms_a = torch.stack([torch.cat([pw_m + dw_m, zero]), torch.cat([pw_p + dw_p, zero]),
                                     torch.cat([width, zero])])
        self._zero_a = n_a
        if self.quantized:
            bits = bit_values  # [81, 4] float32
            b0, b1, b2, b3 = (bits[:, f].view(1, -1) for f in range(_NF))
            pw_p, pw_m, dw_p, dw_m = (v.view(-1, 1) for v in (pw_p, pw_m, dw_p, dw_m))
            wbits = (pw_p * b0 + dw_p * b2).reshape(-1)
            bitops = (pw_m * b0 * b1 + dw_m * b2 * b3).reshape(-1)
            self._terms_b = torch.stack([torch.cat([wbits, zero]), torch.cat([bitops, zero])])  # [2, n_a*81 + 1]
            self._zero_b = n_a * n_combo

    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._device_cache:
            names = ["kernel_pos", "kernel_row", "hidden_col", "hidden_row", "bit_weights", "bit_code",
                     "quant_cols", "combo_row", "terms_a"] + (["terms_b"] if self.quantized else [])
            t = dict(self.encoder._tables(device))  # its depth / block tables (ours override same names)
            t.update({n: getattr(self, "_" + n).to(device) for n in names})
            t["features"] = self.features._tables(device)
            self._device_cache[device] = t
        return self._device_cache[device]

    @torch.no_grad()
    def __call__(self, batch: ArchBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(bag indices [N] long, bag offsets [B] long, raw features float32 [B, F])`` of
        ``batch`` (the features before standardisation, ``is_quantized`` = 1), or ``None`` when
        a value of some block is not in the tables."""
        self.encoder._check_shapes(batch)
        enc, feat = self.encoder, self.features
        t = self._tables(batch.device)
        nb, n_k, _, n_combo = self._dims
        k_span, h_span, b_span = self._spans
        depths, kernels, hidden, bits = batch.depths, batch.kernels, batch.hidden, batch.bits
        d_span = t["depth_allowed"].shape[1]
        k_lo, k_hi = torch.aminmax(kernels)
        h_lo, h_hi = torch.aminmax(hidden)
        d_lo, d_hi = torch.aminmax(depths)
        b_lo, b_hi = torch.aminmax(bits)  # checked for a full-precision model too, as the encoder does
        checks = [k_lo >= 0, k_hi < k_span, h_lo >= 0, h_hi < h_span, d_lo >= 0, d_hi < d_span, b_lo >= 0, b_hi < b_span]
        if not bool(torch.stack(checks).all()):
            return None
        kpos = t["kernel_pos"][kernels]
        hcol = t["hidden_col"][hidden + t["hidden_row"]]
        stage_ids = torch.arange(enc.space.num_stages, device=batch.device)
        pcode = t["bit_code"][(bits * t["bit_weights"]).sum(-1)]  # [B, NB] bit position code
        checks = [kpos.min() >= 0, hcol.min() >= 0, pcode.min() >= 0, t["depth_allowed"][stage_ids, depths].all()]
        res_col = None
        if enc.resolution_dim:
            res_col = enc._lookup(t["resolution_table"], batch.resolution)
            checks.append(res_col.min() >= 0)
        if not bool(torch.stack(checks).all()):
            return None
        B = batch.batch_size
        active = t["block_pos"].unsqueeze(0) < depths[:, t["block_stage"]]  # [B, NB]
        # bag: [kernel cols | hidden cols | resolution col | quant cols (block, field)], active entries
        parts, masks = [kpos + t["kernel_row"], hcol], [active, active]
        if res_col is not None:
            parts.append(res_col.unsqueeze(1))
            masks.append(torch.ones(B, 1, dtype=torch.bool, device=batch.device))
        if self.quantized:
            parts.append(t["quant_cols"][pcode + t["combo_row"]].view(B, nb * _NF))
            masks.append(active.unsqueeze(-1).expand(B, nb, _NF).reshape(B, nb * _NF))
        index = torch.cat(parts, 1).masked_select(torch.cat(masks, 1))
        n_active = active.sum(1)
        per_row = n_active * (2 + _NF * self.quantized) + (res_col is not None)
        offsets = torch.zeros(B, dtype=torch.long, device=batch.device)
        offsets[1:] = per_row.cumsum(0)[:-1]
        # features: sums over blocks of the tabulated per-block terms
        ft = t["features"]
        res = torch.searchsorted(ft["resolutions"], batch.resolution.contiguous()).clamp(max=len(ft["resolutions"]) - 1)
        code_a = hcol * n_k + kpos
        if len(ft["resolutions"]) > 1:
            code_a = code_a + (res * self._code_a_res).unsqueeze(1)
        zero_a = torch.full_like(code_a, self._zero_a)
        sums_a = t["terms_a"].index_select(1, torch.where(active, code_a, zero_a).view(-1)).view(3, B, nb).sum(-1)
        fixed = ft["fixed"][res]  # [B, 2]
        cols = [(fixed[:, 1] + sums_a[0]).log(), (fixed[:, 0] + sums_a[1]).log()]
        if self.quantized:
            code_b = torch.where(active, code_a * n_combo + pcode, torch.full_like(code_a, self._zero_b))
            sums_b = t["terms_b"].index_select(1, code_b.view(-1)).view(2, B, nb).sum(-1)
            fb = float(enc.space.fixed_bits)
            cols += [(fixed[:, 0] * fb + sums_b[0]).log(), (fixed[:, 1] * fb * fb + sums_b[1]).log()]
        count = n_active.float()
        n_act = count.clamp(min=1.0)
        cols.append(count)
        cols += list(depths.float().unbind(1))
        cols.append((kernels * active).sum(1).float() / n_act)
        cols.append(sums_a[2] / n_act)
        if self.quantized:
            cols += list(((bits * active.unsqueeze(-1)).sum(1).float() / n_act.unsqueeze(1)).unbind(1))
        if feat.quantized_indicator:
            cols.append(torch.ones(B, device=batch.device))
        return index, offsets, torch.stack(cols, 1)


__all__ = ["RankInputTables"]
