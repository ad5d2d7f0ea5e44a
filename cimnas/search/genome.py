"""The joint genome: one row of integers per candidate (network x quantization x CIM hardware).

Every gene is an *index* into its own option list. The order follows the reference
implementation (``docs/reference/cimnas-reference-code.md`` §1.3, §5.1):

    hardware (9 reference genes + optional tech / ADC-bits / cell genes, in the order of the
    hardware space's YAML) - depth (one per stage) - kernel (one per block) - pw_w_bits -
    pw_a_bits - dw_w_bits - dw_a_bits (one per block each) - expansion / hidden channels (one
    per block) [- resolution, only when the space has more than one input resolution]

Genes of blocks that a shallower depth skips are still carried (the reference's redundant
encoding), so a genome is a fixed-length integer vector and :meth:`JointGenome.space_size` is the
product of the option counts (6.8e85 with the reference lists, 9.92e85 with the paper's lists for
``apq_mbv2``).

Decoding a population is one gather per part: ``table[gene, genome[:, gene]]`` for the software
genes (-> :class:`~cimnas.space.ArchBatch`) and the hardware space's own batched decode
for the hardware genes (-> ``HardwareBatch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from cimnas.hw.params import option_index
from cimnas.space import BIT_FIELDS, Architecture, ArchBatch, QuantPolicy, SearchSpace

#: Software gene groups in genome order (after the hardware genes).
SW_GROUPS: tuple[str, ...] = ("depth", "kernel", *BIT_FIELDS, "hidden", "resolution")


class GenomeError(ValueError):
    """A genome, design or gene list that does not fit the joint space."""


@dataclass(frozen=True)
class Gene:
    """One gene: its name (``kernel[3]``), its group (``kernel``; hardware genes use the
    hardware parameter's name), the block / stage it belongs to (or -1) and its option list."""

    name: str
    group: str
    choices: tuple[Any, ...]
    position: int = -1

    @property
    def cardinality(self) -> int:
        return len(self.choices)


def software_genes(space: SearchSpace) -> list[Gene]:
    """The software genes of ``space`` in the reference order.

    Every stage carries a full depth gene (its own ``depth_choices`` or the space's), as the
    reference genome does; a stage with fewer blocks clips the value (its options decode to ``min(d, max_depth)``),
    so the reference's space size is reproduced and :meth:`JointGenome.canonical` maps such
    redundant indices to the first equivalent one."""
    genes = [
        Gene(f"depth[{s}]", "depth", tuple(space.stages[s].depth_choices)
             or tuple(min(d, space.stages[s].max_depth) for d in space.depth_choices), s)
        for s in range(space.num_stages)
    ]
    genes += [Gene(f"kernel[{b}]", "kernel", space.kernel_choices, b) for b in range(space.num_blocks)]
    for field in BIT_FIELDS:
        genes += [Gene(f"{field}[{b}]", field, space.bit_choices, b) for b in range(space.num_blocks)]
    genes += [Gene(f"hidden[{b}]", "hidden", space.hidden_choices(b), b) for b in range(space.num_blocks)]
    if len(space.resolution_choices) > 1:
        genes.append(Gene("resolution", "resolution", space.resolution_choices))
    return genes


def hardware_genes(hw_space: Any) -> list[Gene]:
    """The hardware genes of a ``cimnas.hw.HardwareSpace`` (its ordered genes and choice lists)."""
    return [Gene(name, name, tuple(choices)) for name, choices in hw_space.genes.items()]


class JointGenome:
    """Encoder / decoder between integer genomes ``[B, G]`` and (``ArchBatch``, ``HardwareBatch``).

    ``hw_space`` is a ``cimnas.hw.HardwareSpace`` (anything with an ordered ``genes`` mapping
    ``{name: choices}`` and a batched ``decode(indices [B, G_hw]) -> HardwareBatch``). It may be
    ``None`` for a software-only genome (used by tests and the first stage of the two-stage
    baseline).
    """

    def __init__(self, space: SearchSpace, hw_space: Any | None = None):
        self.space = space
        self.hw_space = hw_space
        self.hw_genes = hardware_genes(hw_space) if hw_space is not None else []
        self.sw_genes = software_genes(space)
        self.genes: list[Gene] = [*self.hw_genes, *self.sw_genes]
        self.num_hw = len(self.hw_genes)
        self.cardinalities = torch.tensor([g.cardinality for g in self.genes], dtype=torch.long)
        if (self.cardinalities < 1).any():
            empty = [g.name for g in self.genes if g.cardinality < 1]
            raise GenomeError(f"genes {empty} have no options")
        # Software value table [G_sw, max_options], padded with the last option (never indexed).
        width = max(g.cardinality for g in self.sw_genes)
        self._sw_table = torch.tensor(
            [[int(c) for c in g.choices] + [int(g.choices[-1])] * (width - g.cardinality) for g in self.sw_genes],
            dtype=torch.long,
        )
        groups = [g.group for g in self.sw_genes]
        self._slices: dict[str, slice] = {}
        for group in SW_GROUPS:
            idx = [i for i, g in enumerate(groups) if g == group]
            if idx:
                self._slices[group] = slice(idx[0], idx[-1] + 1)
        self._tables: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ shape
    @property
    def length(self) -> int:
        return len(self.genes)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    def upper_bounds(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Largest index of every gene (``cardinality - 1``), ``long [G]``."""
        return (self.cardinalities - 1).to(device)

    def space_size(self) -> float:
        """Number of distinct genomes (product of option counts), as a float."""
        return float(math.prod(int(c) for c in self.cardinalities))

    def log10_space_size(self) -> float:
        return float(torch.log10(self.cardinalities.double()).sum())

    def space_size_by_part(self) -> dict[str, float]:
        hw = math.prod(g.cardinality for g in self.hw_genes) if self.hw_genes else 1
        sw = math.prod(g.cardinality for g in self.sw_genes)
        return {"hardware": float(hw), "software": float(sw), "total": float(hw) * float(sw)}

    def describe(self) -> str:
        parts = self.space_size_by_part()
        return (
            f"joint genome for space {self.space.name!r}: {self.length} genes "
            f"({self.num_hw} hardware + {self.length - self.num_hw} network/quantization); "
            f"space size {parts['total']:.3g} = {parts['hardware']:.6g} hardware x {parts['software']:.3g} software"
        )

    def _table(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = self._sw_table.to(device)
        return self._tables[key]

    # ------------------------------------------------------------------ checks
    def check(self, genome: torch.Tensor) -> torch.Tensor:
        """Validate shape, dtype and index ranges; returns ``genome`` as ``long``."""
        if genome.ndim != 2 or genome.shape[1] != self.length:
            raise GenomeError(f"genome must have shape [B, {self.length}], got {list(genome.shape)}")
        if genome.is_floating_point():
            raise GenomeError("genome must hold integer option indices, got a floating-point tensor")
        genome = genome.long()
        upper = self.upper_bounds(genome.device)
        bad = (genome < 0) | (genome > upper)
        if bad.any():
            row, col = (int(v) for v in bad.nonzero()[0])
            raise GenomeError(
                f"gene {self.genes[col].name!r} of row {row} has index {int(genome[row, col])}; "
                f"allowed 0..{int(upper[col])} (options {list(self.genes[col].choices)})"
            )
        return genome

    # ------------------------------------------------------------------ decode
    def decode_arch(self, genome: torch.Tensor) -> ArchBatch:
        """Software part of ``genome [B, G]`` -> :class:`ArchBatch` with one gather."""
        sw = genome[:, self.num_hw:].long()
        table = self._table(genome.device)
        gene = torch.arange(table.shape[0], device=genome.device)
        values = table[gene, sw]  # [B, G_sw]: the whole decode is this one gather
        s = self._slices
        batch = values.shape[0]
        bits = torch.stack([values[:, s[f]] for f in BIT_FIELDS], dim=-1)
        if "resolution" in s:
            resolution = values[:, s["resolution"]].reshape(batch)
        else:
            resolution = torch.full((batch,), self.space.resolution_choices[0], dtype=torch.long, device=genome.device)
        return ArchBatch(
            depths=values[:, s["depth"]], kernels=values[:, s["kernel"]], hidden=values[:, s["hidden"]],
            resolution=resolution, bits=bits,
        )

    def canonical(self, genome: torch.Tensor) -> torch.Tensor:
        """``genome`` with redundant option indices (equal decoded values) replaced by the first
        equivalent index: ``encode(decode(g)) == canonical(g)``."""
        sw = self.encode_arch(self.decode_arch(genome))
        return torch.cat([genome[:, : self.num_hw].long(), sw], dim=1)

    def hw_indices(self, genome: torch.Tensor) -> torch.Tensor:
        return genome[:, : self.num_hw].long()

    def decode_hardware(self, genome: torch.Tensor) -> Any:
        if self.hw_space is None:
            raise GenomeError("this genome has no hardware genes (hw_space=None)")
        return self.hw_space.decode(self.hw_indices(genome))

    def decode(self, genome: torch.Tensor) -> tuple[ArchBatch, Any]:
        """``genome [B, G]`` -> (``ArchBatch``, ``HardwareBatch``), both batched on the genome's device."""
        arch = self.decode_arch(genome)
        return arch, (self.decode_hardware(genome) if self.hw_space is not None else None)

    # ------------------------------------------------------------------ encode
    def encode_arch(self, arch: ArchBatch) -> torch.Tensor:
        """:class:`ArchBatch` -> software gene indices ``[B, G_sw]`` (inverse of :meth:`decode_arch`)."""
        batch = arch.batch_size
        parts = [arch.depths, arch.kernels, *[arch.bits[..., i] for i in range(len(BIT_FIELDS))], arch.hidden]
        if "resolution" in self._slices:
            parts.append(arch.resolution.reshape(batch, 1))
        values = torch.cat([p.long().reshape(batch, -1) for p in parts], dim=1)
        table = self._table(values.device)
        if values.shape[1] != table.shape[0]:
            raise GenomeError(f"architecture batch gives {values.shape[1]} software genes, expected {table.shape[0]}")
        card = self.cardinalities[self.num_hw:].to(values.device)
        valid = torch.arange(table.shape[1], device=values.device).unsqueeze(0) < card.unsqueeze(1)
        match = (values.unsqueeze(-1) == table.unsqueeze(0)) & valid.unsqueeze(0)  # [B, G_sw, max_options]
        found = match.any(-1)
        if not found.all():
            row, col = (int(v) for v in (~found).nonzero()[0])
            gene = self.sw_genes[col]
            raise GenomeError(
                f"{gene.name}={int(values[row, col])} in row {row} is not allowed; allowed values: {list(gene.choices)}"
            )
        return match.long().argmax(-1)

    def encode_hw_values(self, values: Sequence[Mapping[str, Any]], device: torch.device | str = "cpu") -> torch.Tensor:
        """Hardware parameter dicts (gene name -> value) -> hardware gene indices ``[B, G_hw]``."""
        rows = []
        for r, design in enumerate(values):
            missing = [g.name for g in self.hw_genes if g.name not in design]
            if missing:
                raise GenomeError(f"hardware design {r} lacks genes {missing}; expected {[g.name for g in self.hw_genes]}")
            row = []
            for gene in self.hw_genes:
                value = design[gene.name]
                index = _index_of(gene, value)
                row.append(index)
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), self.num_hw)

    def encode(self, arch: ArchBatch, hw_indices: torch.Tensor | None = None) -> torch.Tensor:
        """(``ArchBatch``, hardware indices ``[B, G_hw]``) -> genome ``[B, G]``."""
        sw = self.encode_arch(arch)
        if self.num_hw == 0:
            return sw
        if hw_indices is None:
            raise GenomeError(f"this genome has {self.num_hw} hardware genes; pass hw_indices [B, {self.num_hw}]")
        return torch.cat([hw_indices.long().to(sw.device), sw], dim=1)

    def encode_designs(
        self, designs: Sequence[tuple[Architecture, QuantPolicy, Mapping[str, Any] | None]],
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Plain designs (architecture, quantization, hardware dict) -> genome ``[B, G]``."""
        arch = ArchBatch.from_designs(self.space, [d[0] for d in designs], [d[1] for d in designs], device=device)
        hw = self.encode_hw_values([d[2] or {} for d in designs], device=device) if self.num_hw else None
        return self.encode(arch, hw)

    # ------------------------------------------------------------------ plain data
    def hw_values(self, genome_row: torch.Tensor) -> dict[str, Any]:
        """Hardware gene values of one genome row as a plain dict (name -> chosen option)."""
        idx = genome_row[: self.num_hw].tolist()
        return {g.name: g.choices[i] for g, i in zip(self.hw_genes, idx)}

    def to_designs(self, genome: torch.Tensor) -> list[dict[str, Any]]:
        """Genome rows -> plain dicts ``{space, architecture, quantization, hardware}``."""
        genome = self.check(genome)
        arch = self.decode_arch(genome).to("cpu")
        out = []
        for row, (a, q) in zip(genome.cpu(), arch.to_designs()):
            out.append({
                "space": self.space.name,
                "architecture": a.to_dict(),
                "quantization": q.to_dict(),
                "hardware": self.hw_values(row),
            })
        return out

    def random(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` uniformly random genomes (each gene uniform over its options)."""
        card = self.cardinalities.to(device)
        u = torch.rand((n, self.length), generator=generator, device=device, dtype=torch.float64)
        return torch.minimum((u * card).long(), card - 1)


def _index_of(gene: Gene, value: Any) -> int:
    index = option_index(gene.choices, value)
    if index is not None:
        return index
    raise GenomeError(f"{gene.name}={value!r} is not allowed; allowed values: {list(gene.choices)}")


__all__ = ["Gene", "GenomeError", "JointGenome", "SW_GROUPS", "hardware_genes", "software_genes"]
