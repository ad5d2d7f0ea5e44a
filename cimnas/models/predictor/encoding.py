"""One-hot feature encoding of (architecture, quantization policy) batches, APQ layout.

Layout (APQ ``utils/converter.py``, ``docs/reference/ofa-predictor.md`` §4.2):

    [ kernel one-hot, block-major (NB x |K|)
    | hidden-channel one-hot, block-major (sum_b |hidden_choices(b)|)
    | resolution one-hot (|R|, only when the space has more than one resolution)   ]  arch part
    [ pw_w | pw_a | dw_w | dw_a, each block-major (NB x |bits|) one-hot                ]  quant part

Inactive blocks (index in stage >= stage depth) are all-zero in every part. For the ``apq_mbv2``
ImageNet space this is exactly APQ's 772-dim vector: 21 x 3 kernel + 457 hidden = 520 arch dims,
then 4 x 21 x 3 = 252 quant dims, field-major as APQ's ``q_info[it]`` blocks.

A one-hot row has at most ``2 NB (+1)`` arch ones and ``4 NB`` quant ones, so the encoder also
returns the *index form* (column indices plus 0/1 weights per slot): a first Linear layer on the
dense vector equals an ``embedding_bag`` sum over those columns, which is what makes batched
prediction cheap (see :mod:`cimnas.models.predictor.mlp`). Both forms are one gather + one
scatter over the whole batch, with lookup tables precomputed per space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cimnas.space import BIT_FIELDS, ArchBatch, SearchSpace, SpaceError, get_space


@dataclass
class EncodedIndices:
    """Index form of a batch: ``arch_index [B, Na]`` / ``quant_index [B, Nq]`` columns (quant
    columns counted from the start of the quant part) and matching ``*_weight`` (1.0 for active
    blocks, 0.0 for inactive ones)."""

    arch_index: torch.Tensor
    arch_weight: torch.Tensor
    quant_index: torch.Tensor
    quant_weight: torch.Tensor


def _lookup_table(values: list[int] | tuple[int, ...], base: int = 0) -> torch.Tensor:
    """``table[v] = base + position of v in values`` and -1 for values not in the list."""
    table = torch.full((max(values) + 1,), -1, dtype=torch.long)
    for pos, v in enumerate(values):
        table[v] = base + pos
    return table


class ArchEncoder:
    """Feature encoder of one :class:`SearchSpace` (offsets and lookup tables precomputed)."""

    def __init__(self, space: SearchSpace | str | dict):
        self.space = space = get_space(space)
        nb = space.num_blocks
        self.num_blocks = nb
        self.kernel_choices = tuple(space.kernel_choices)
        self.bit_choices = tuple(space.bit_choices)
        self.hidden_choices = [space.hidden_choices(b) for b in range(nb)]
        self.resolution_choices = tuple(space.resolution_choices)

        n_k = len(self.kernel_choices)
        self.kernel_dim = nb * n_k
        self.hidden_dim = sum(len(h) for h in self.hidden_choices)
        self.resolution_dim = len(self.resolution_choices) if len(self.resolution_choices) > 1 else 0
        self.arch_dim = self.kernel_dim + self.hidden_dim + self.resolution_dim
        self.quant_dim = len(BIT_FIELDS) * nb * len(self.bit_choices)
        self.dim = self.arch_dim + self.quant_dim

        # Lookup tables: value -> position in its choice list (-1: not allowed).
        self._kernel_table = _lookup_table(self.kernel_choices)
        self._bits_table = _lookup_table(self.bit_choices)
        self._resolution_table = _lookup_table(self.resolution_choices, base=self.kernel_dim + self.hidden_dim)
        max_hidden = max(max(h) for h in self.hidden_choices)
        self._hidden_table = torch.full((nb, max_hidden + 1), -1, dtype=torch.long)
        base = self.kernel_dim
        self.hidden_offsets = []
        for b, choices in enumerate(self.hidden_choices):
            self.hidden_offsets.append(base)
            for pos, h in enumerate(choices):
                self._hidden_table[b, h] = base + pos
            base += len(choices)
        self._hidden_offsets = torch.tensor(self.hidden_offsets)
        self._kernel_offsets = torch.arange(nb) * n_k
        # quant column of (field f, block b, bit position p) = f*NB*|bits| + b*|bits| + p
        n_q = len(self.bit_choices)
        self._quant_offsets = (torch.arange(len(BIT_FIELDS)).view(1, -1) * nb * n_q
                               + torch.arange(nb).view(-1, 1) * n_q)  # [NB, 4]
        self._block_stage = torch.tensor(space.block_stage)
        self._block_pos = torch.tensor(space.block_index_in_stage)
        max_depth = max(s.max_depth for s in space.stages)
        self._depth_allowed = torch.zeros(space.num_stages, max(max_depth, max(space.depth_choices)) + 1,
                                          dtype=torch.bool)
        for s in range(space.num_stages):
            for d in space.stage_depth_choices(s):
                self._depth_allowed[s, d] = True
        # Flat per-(block[, field]) tables for the fast path: column = table[value + row_offset].
        k_span, h_span, b_span = max(self.kernel_choices) + 1, max_hidden + 1, max(self.bit_choices) + 1
        self._kernel_flat = torch.full((nb * k_span,), -1, dtype=torch.long)
        self._quant_flat = torch.full((nb * len(BIT_FIELDS) * b_span,), -1, dtype=torch.long)
        for b in range(nb):
            for pos, k in enumerate(self.kernel_choices):
                self._kernel_flat[b * k_span + k] = b * n_k + pos
            for f in range(len(BIT_FIELDS)):
                for pos, v in enumerate(self.bit_choices):
                    self._quant_flat[(b * len(BIT_FIELDS) + f) * b_span + v] = int(self._quant_offsets[b, f]) + pos
        self._hidden_flat = self._hidden_table.flatten()
        self._kernel_row = (torch.arange(nb) * k_span).view(1, nb)
        self._hidden_row = (torch.arange(nb) * h_span).view(1, nb)
        self._quant_row = (torch.arange(nb * len(BIT_FIELDS)) * b_span).view(1, nb, len(BIT_FIELDS))
        self._spans = (k_span, h_span, b_span)
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------ helpers
    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = {
                name: getattr(self, "_" + name).to(device)
                for name in ("kernel_table", "bits_table", "resolution_table", "hidden_table",
                             "kernel_offsets", "quant_offsets", "block_stage", "block_pos",
                             "depth_allowed", "hidden_offsets", "kernel_flat", "quant_flat",
                             "hidden_flat", "kernel_row", "hidden_row", "quant_row")
            }
        return self._device_cache[device]

    @staticmethod
    def _lookup(table: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``table[values]`` with out-of-range values mapped to -1."""
        inside = (values >= 0) & (values < table.shape[-1])
        return torch.where(inside, table[values.clamp(0, table.shape[-1] - 1)], -1)

    def _fail(self, field: str, values: torch.Tensor, bad: torch.Tensor, allowed_of) -> None:
        row, col = (int(i) for i in bad.nonzero()[0].tolist())
        raise SpaceError(
            f"{field}[{col}]={int(values[row, col])} (batch row {row}) is not allowed; "
            f"allowed values: {list(allowed_of(col))}"
        )

    def _check_shapes(self, batch: ArchBatch) -> None:
        b, nb, s = batch.batch_size, self.num_blocks, self.space.num_stages
        expected = {"depths": (b, s), "kernels": (b, nb), "hidden": (b, nb), "resolution": (b,),
                    "bits": (b, nb, len(BIT_FIELDS))}
        for name, shape in expected.items():
            got = tuple(getattr(batch, name).shape)
            if got != shape:
                raise SpaceError(f"ArchBatch.{name} has shape {list(got)}; expected {list(shape)} "
                                 f"for space {self.space.name!r}")

    # ------------------------------------------------------------------ encoding
    def active_blocks(self, batch: ArchBatch) -> torch.Tensor:
        t = self._tables(batch.device)
        return t["block_pos"].unsqueeze(0) < batch.depths[:, t["block_stage"]]

    def indices(self, batch: ArchBatch, validate: bool = True) -> EncodedIndices:
        """Index form of ``batch`` (see :class:`EncodedIndices`); values of inactive blocks are
        ignored, values of active blocks are checked against the space when ``validate``.

        Fast path: a few flat-table gathers and one host sync; only a batch holding a value
        outside its choice list takes the careful path (which raises for active blocks)."""
        self._check_shapes(batch)
        t = self._tables(batch.device)
        k_span, h_span, b_span = self._spans
        ranges_ok = torch.stack([
            batch.kernels.min() >= 0, batch.kernels.max() < k_span,
            batch.hidden.min() >= 0, batch.hidden.max() < h_span,
            batch.bits.min() >= 0, batch.bits.max() < b_span,
            batch.depths.min() >= 0, batch.depths.max() < t["depth_allowed"].shape[1],
        ]).all()
        if bool(ranges_ok):
            kernel_col = t["kernel_flat"][batch.kernels + t["kernel_row"]]
            hidden_col = t["hidden_flat"][batch.hidden + t["hidden_row"]]
            quant_col = t["quant_flat"][batch.bits + t["quant_row"]]
            stage_ids = torch.arange(self.space.num_stages, device=batch.device)
            depth_ok = t["depth_allowed"][stage_ids, batch.depths]
            values_ok = torch.stack([kernel_col.min() >= 0, hidden_col.min() >= 0, quant_col.min() >= 0,
                                     depth_ok.all()]).all()
            if bool(values_ok):
                active = t["block_pos"].unsqueeze(0) < batch.depths[:, t["block_stage"]]
                weight = active.to(torch.float32)
                arch_index, arch_weight = [kernel_col, hidden_col], [weight, weight]
                if self.resolution_dim:
                    res_col = self._lookup(t["resolution_table"], batch.resolution)
                    if validate and bool((res_col < 0).any()):
                        return self._indices_careful(batch, validate)
                    arch_index.append(res_col.clamp(min=self.kernel_dim + self.hidden_dim).unsqueeze(1))
                    arch_weight.append(torch.ones(batch.batch_size, 1, device=batch.device))
                # quant slots in [block, field] order: a sum over slots does not care
                quant_weight = weight.unsqueeze(-1).expand(-1, -1, len(BIT_FIELDS))
                return EncodedIndices(torch.cat(arch_index, 1), torch.cat(arch_weight, 1),
                                      quant_col.flatten(1), quant_weight.flatten(1))
        return self._indices_careful(batch, validate)

    def _indices_careful(self, batch: ArchBatch, validate: bool) -> EncodedIndices:
        t = self._tables(batch.device)
        bsz, nb = batch.batch_size, self.num_blocks
        stage_rows = torch.arange(self.space.num_stages, device=batch.device).expand(bsz, -1)
        depths_clamped = batch.depths.clamp(0, t["depth_allowed"].shape[1] - 1)
        depth_ok = t["depth_allowed"][stage_rows, depths_clamped] & (batch.depths == depths_clamped)
        active = t["block_pos"].unsqueeze(0) < batch.depths[:, t["block_stage"]]  # [B, NB]

        kernel_pos = self._lookup(t["kernel_table"], batch.kernels)  # [B, NB]
        hidden_table = t["hidden_table"]
        h_inside = (batch.hidden >= 0) & (batch.hidden < hidden_table.shape[1])
        block_rows = torch.arange(nb, device=batch.device).expand(bsz, -1)
        hidden_col = torch.where(
            h_inside, hidden_table[block_rows, batch.hidden.clamp(0, hidden_table.shape[1] - 1)], -1)
        bits_pos = self._lookup(t["bits_table"], batch.bits)  # [B, NB, 4]

        if validate:
            checks = [
                ("depths", batch.depths, ~depth_ok, self.space.stage_depth_choices),
                ("kernels", batch.kernels, active & (kernel_pos < 0), lambda _b: self.kernel_choices),
                ("hidden", batch.hidden, active & (hidden_col < 0), lambda b: self.hidden_choices[b]),
            ]
            bad_bits = active.unsqueeze(-1) & (bits_pos < 0)
            for f, name in enumerate(BIT_FIELDS):
                checks.append((name, batch.bits[..., f], bad_bits[..., f], lambda _b: self.bit_choices))
            if self.resolution_dim:
                res_col = self._lookup(t["resolution_table"], batch.resolution)
                checks.append(("resolution", batch.resolution.unsqueeze(1), (res_col < 0).unsqueeze(1),
                               lambda _b: self.resolution_choices))
            any_bad = torch.stack([bad.any() for *_, bad, _ in checks]).any()
            if bool(any_bad):  # one host sync per call
                for name, values, bad, allowed in checks:
                    if bool(bad.any()):
                        self._fail(name, values, bad, allowed)

        weight = active.to(torch.float32)
        kernel_col = t["kernel_offsets"].unsqueeze(0) + kernel_pos.clamp(min=0)
        hidden_col = torch.where(hidden_col < 0, t["hidden_offsets"].unsqueeze(0), hidden_col)
        arch_index = [kernel_col, hidden_col]
        arch_weight = [weight, weight]
        if self.resolution_dim:
            res_col = self._lookup(t["resolution_table"], batch.resolution).clamp(min=self.kernel_dim + self.hidden_dim)
            arch_index.append(res_col.unsqueeze(1))
            arch_weight.append(torch.ones(bsz, 1, device=batch.device))
        quant_col = t["quant_offsets"].unsqueeze(0) + bits_pos.clamp(min=0)  # [B, NB, 4]
        # field-major order (APQ): all pw_w columns first, then pw_a, dw_w, dw_a
        quant_index = quant_col.transpose(1, 2).reshape(bsz, -1)
        quant_weight = weight.unsqueeze(1).expand(-1, len(BIT_FIELDS), -1).reshape(bsz, -1)
        return EncodedIndices(torch.cat(arch_index, 1), torch.cat(arch_weight, 1), quant_index, quant_weight)

    def encode(self, batch: ArchBatch, quantized: bool = True, validate: bool = True) -> torch.Tensor:
        """Dense one-hot features ``float32 [B, dim]`` (``[B, arch_dim]`` when not ``quantized``)."""
        idx = self.indices(batch, validate=validate)
        bsz = batch.batch_size
        arch = torch.zeros(bsz, self.arch_dim, device=batch.device)
        arch.scatter_add_(1, idx.arch_index, idx.arch_weight)
        if not quantized:
            return arch
        quant = torch.zeros(bsz, self.quant_dim, device=batch.device)
        quant.scatter_add_(1, idx.quant_index, idx.quant_weight)
        return torch.cat([arch, quant], 1)

    def decode(self, features: torch.Tensor) -> ArchBatch:
        """Inverse of :meth:`encode` for quantized features ``[B, dim]``. Inactive blocks (all
        zero) come back with the smallest kernel, hidden width and bit width."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise SpaceError(f"features have shape {list(features.shape)}; expected [B, {self.dim}]")
        dev, bsz, nb = features.device, features.shape[0], self.num_blocks
        kernel_part = features[:, : self.kernel_dim].view(bsz, nb, -1)
        active = kernel_part.sum(-1) > 0
        kernels = torch.tensor(self.kernel_choices, device=dev)[kernel_part.argmax(-1)]
        hidden = torch.empty(bsz, nb, dtype=torch.long, device=dev)
        for b, choices in enumerate(self.hidden_choices):  # NB small slices, not per candidate
            lo = self.hidden_offsets[b]
            part = features[:, lo: lo + len(choices)]
            hidden[:, b] = torch.tensor(choices, device=dev)[part.argmax(-1)]
        stage = torch.tensor(self.space.block_stage, device=dev)
        depths = torch.zeros(bsz, self.space.num_stages, dtype=torch.long, device=dev)
        depths.index_add_(1, stage, active.long())
        if self.resolution_dim:
            r = features[:, self.kernel_dim + self.hidden_dim: self.arch_dim].argmax(-1)
            resolution = torch.tensor(self.resolution_choices, device=dev)[r]
        else:
            resolution = torch.full((bsz,), self.resolution_choices[0], dtype=torch.long, device=dev)
        quant = features[:, self.arch_dim:].view(bsz, len(BIT_FIELDS), nb, -1)
        bits = torch.tensor(self.bit_choices, device=dev)[quant.argmax(-1)].transpose(1, 2)
        return ArchBatch(depths, kernels, hidden, resolution, bits.contiguous())


__all__ = ["ArchEncoder", "EncodedIndices"]
