"""Hardware parameters: one design (:class:`HardwareParams`), a batch (:class:`HardwareBatch`)
and a searchable space of them (:class:`HardwareSpace`).

Field names are those of the validation records' ``hardware`` object
(``tests/data/cimloop-layer-runs.json``). The reference's nine genes are voltage,
bits_per_cell, cycle_s, rows, cols, router_groups, tiles_per_group, macros_per_tile and
glb_depth_words (cim-cost-model.md §1.3); technology_nm, adc_bits and cell may be searched too.
Choice lists come from YAML (``configs/hw/*.yaml``), never from code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from cimnas.hw.components.adc import ADC_MODELS
from cimnas.hw.components.cell import CELL_NAMES, CELLS
from cimnas.hw.components.dram import WEIGHT_MEMORIES

#: Field order shared by params, batches, records and genes.
FIELDS: tuple[str, ...] = (
    "voltage", "bits_per_cell", "cycle_s", "rows", "cols", "router_groups", "tiles_per_group",
    "macros_per_tile", "glb_depth_words", "glb_width_bits", "technology_nm", "cell", "adc_bits",
    "adc_model", "weight_memory",
)
FLOAT_FIELDS = ("voltage", "cycle_s", "technology_nm")
CODE_FIELDS = {"cell": CELL_NAMES, "adc_model": ADC_MODELS, "weight_memory": WEIGHT_MEMORIES}
#: The reference's nine genes, in genome order (cim-cost-model.md §1.3).
REFERENCE_GENES = ("voltage", "bits_per_cell", "cycle_s", "rows", "cols", "router_groups",
                   "tiles_per_group", "macros_per_tile", "glb_depth_words")


#: Fields a hardware-space YAML may leave out (the reference's only weight memory is on chip).
OPTIONAL_YAML_FIELDS = ("weight_memory",)


class HardwareError(ValueError):
    """A hardware description that is malformed or outside the modelled range."""


_RANGES = {
    "voltage": (0.3, 1.2), "bits_per_cell": (1, 8), "cycle_s": (1e-11, 1e-6), "rows": (1, 4096),
    "cols": (1, 4096), "router_groups": (1, 4096), "tiles_per_group": (1, 4096),
    "macros_per_tile": (1, 4096), "glb_depth_words": (64, 1 << 24), "glb_width_bits": (8, 1 << 16),
    "technology_nm": (7, 65), "adc_bits": (1, 12),
}


def _check_value(name: str, value: Any) -> Any:
    if name in CODE_FIELDS:
        if value not in CODE_FIELDS[name]:
            raise HardwareError(f"{name}={value!r} is not allowed; allowed values: {list(CODE_FIELDS[name])}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareError(f"{name}={value!r} must be a number")
    lo, hi = _RANGES[name]
    if not lo <= value <= hi:
        raise HardwareError(f"{name}={value!r} is outside the modelled range [{lo}, {hi}]")
    if name not in FLOAT_FIELDS:
        if int(value) != value:
            raise HardwareError(f"{name}={value!r} must be an integer")
        return int(value)
    return float(value)


def _check_sram_bits(cell: str, bits_per_cell: Any) -> None:
    """An SRAM cell stores one bit (cim-cost-model.md §4.5; the authors' SRAM code drops the
    bits-per-cell gene, cimnas-reference-code.md §1.3)."""
    if CELLS[cell].kind == "sram" and bits_per_cell != 1:
        raise HardwareError(f"cell={cell!r} is an SRAM cell and stores 1 bit per cell; got bits_per_cell="
                            f"{bits_per_cell!r}; allowed values: [1]")



#: Relative tolerance when a float value is matched to a float option (values that went through
#: YAML / JSON / CSV text and back).
OPTION_REL_TOL = 1e-6


def option_index(choices: Sequence[Any], value: Any) -> int | None:
    """Index of the first of ``choices`` equal to ``value`` (floats within :data:`OPTION_REL_TOL`
    relative, everything else exactly), or None. The one matching rule of the project: hardware
    spaces, the genome and the search's baseline designs all use it."""
    for i, c in enumerate(choices):
        if c == value:
            return i
        if (isinstance(c, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isclose(c, float(value), rel_tol=OPTION_REL_TOL, abs_tol=0.0)):
            return i
    return None

@dataclass
class HardwareParams:
    """One chip design (defaults: the CIMNAS reference design point family, 32 nm RRAM)."""

    voltage: float = 0.8
    bits_per_cell: int = 8
    cycle_s: float = 1e-9
    rows: int = 256
    cols: int = 32
    router_groups: int = 1
    tiles_per_group: int = 32
    macros_per_tile: int = 64
    glb_depth_words: int = 2048
    glb_width_bits: int = 2048
    technology_nm: float = 32.0
    cell: str = "rram_neurosim_default"
    adc_bits: int = 8
    adc_model: str = "neurosim"
    weight_memory: str = "on_chip"

    def __post_init__(self) -> None:
        for f in FIELDS:
            setattr(self, f, _check_value(f, getattr(self, f)))
        _check_sram_bits(self.cell, self.bits_per_cell)

    @property
    def num_macros(self) -> int:
        return self.router_groups * self.tiles_per_group * self.macros_per_tile

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HardwareParams":
        if not isinstance(data, dict):
            raise HardwareError(f"hardware must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise HardwareError(f"unknown hardware keys {unknown}; allowed keys: {list(FIELDS)}")
        return cls(**data)


@dataclass
class HardwareBatch:
    """B designs as tensors ``[B]``: float32 for voltage / technology_nm, float64 for cycle_s,
    long for integer fields and for ``cell`` / ``adc_model`` / ``weight_memory`` codes (index
    into :data:`CELL_NAMES` / :data:`ADC_MODELS` / :data:`WEIGHT_MEMORIES`)."""

    voltage: torch.Tensor
    bits_per_cell: torch.Tensor
    cycle_s: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    router_groups: torch.Tensor
    tiles_per_group: torch.Tensor
    macros_per_tile: torch.Tensor
    glb_depth_words: torch.Tensor
    glb_width_bits: torch.Tensor
    technology_nm: torch.Tensor
    cell: torch.Tensor
    adc_bits: torch.Tensor
    adc_model: torch.Tensor
    weight_memory: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.voltage.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    @property
    def device(self) -> torch.device:
        return self.voltage.device

    @property
    def num_macros(self) -> torch.Tensor:
        return self.router_groups * self.tiles_per_group * self.macros_per_tile

    def _tensors(self) -> list[torch.Tensor]:
        # not dataclasses.astuple: it deep-copies every tensor
        return [getattr(self, f) for f in FIELDS]

    def to(self, device: torch.device | str) -> "HardwareBatch":
        return HardwareBatch(*(t.to(device) for t in self._tensors()))

    def __getitem__(self, index: Any) -> "HardwareBatch":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return HardwareBatch(*(t[index] for t in self._tensors()))

    @staticmethod
    def dtype_of(name: str) -> torch.dtype:
        if name == "cycle_s":
            return torch.float64
        return torch.float32 if name in FLOAT_FIELDS else torch.long

    @classmethod
    def from_params(cls, params: Iterable[HardwareParams | dict], device: torch.device | str = "cpu") -> "HardwareBatch":
        rows = [p if isinstance(p, HardwareParams) else HardwareParams.from_dict(p) for p in params]
        if not rows:
            raise HardwareError("HardwareBatch.from_params needs at least one design")
        cols = {}
        for f in FIELDS:
            values = [getattr(p, f) for p in rows]
            if f in CODE_FIELDS:
                values = [CODE_FIELDS[f].index(v) for v in values]
            cols[f] = torch.tensor(values, dtype=cls.dtype_of(f), device=device)
        return cls(**cols)

    def to_params(self) -> list[HardwareParams]:
        out = []
        columns = {f: getattr(self, f).tolist() for f in FIELDS}
        for i in range(self.batch_size):
            row = {f: columns[f][i] for f in FIELDS}
            for f, names in CODE_FIELDS.items():
                row[f] = names[int(row[f])]
            for f in FLOAT_FIELDS:
                row[f] = round(float(row[f]), 12) if f != "cycle_s" else float(row[f])
            row["voltage"] = round(row["voltage"], 6)
            out.append(HardwareParams(**row))
        return out

    @classmethod
    def cat(cls, batches: Sequence["HardwareBatch"]) -> "HardwareBatch":
        return cls(*(torch.cat(ts) for ts in zip(*(b._tensors() for b in batches))))


@dataclass
class HardwareSpace:
    """Ordered genes (name -> choice list) plus fixed values for the other fields."""

    genes: dict[str, list[Any]]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = "hw"

    def __post_init__(self) -> None:
        if not self.genes:
            raise HardwareError("a hardware space needs at least one gene")
        for g, choices in self.genes.items():
            if g not in FIELDS:
                raise HardwareError(f"gene {g!r} is not a hardware field; allowed: {list(FIELDS)}")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise HardwareError(f"gene {g!r} needs a non-empty list of choices")
            self.genes[g] = [_check_value(g, c) for c in choices]
        defaults = HardwareParams().to_dict()
        for f, v in self.fixed.items():
            if f not in FIELDS:
                raise HardwareError(f"fixed field {f!r} is not a hardware field; allowed: {list(FIELDS)}")
            if f in self.genes:
                raise HardwareError(f"field {f!r} is both a gene and fixed")
            self.fixed[f] = _check_value(f, v)
        self._fixed_all = {f: self.fixed.get(f, defaults[f]) for f in FIELDS if f not in self.genes}
        if "cell" not in self.genes:
            for bpc in self.genes.get("bits_per_cell", [self._fixed_all.get("bits_per_cell")]):
                _check_sram_bits(self._fixed_all["cell"], bpc)
        n = max(len(c) for c in self.genes.values())
        table = torch.full((len(self.genes), n), float("nan"), dtype=torch.float64)
        for i, (g, choices) in enumerate(self.genes.items()):
            vals = [CODE_FIELDS[g].index(c) if g in CODE_FIELDS else c for c in choices]
            table[i, : len(vals)] = torch.tensor(vals, dtype=torch.float64)
        self._table = table

    @property
    def gene_names(self) -> list[str]:
        return list(self.genes)

    @property
    def num_genes(self) -> int:
        return len(self.genes)

    @property
    def cardinalities(self) -> list[int]:
        return [len(c) for c in self.genes.values()]

    def size(self) -> int:
        return math.prod(self.cardinalities)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HardwareSpace":
        if not isinstance(data, dict) or "genes" not in data:
            raise HardwareError("a hardware space needs a 'genes' mapping (name -> list of choices)")
        unknown = sorted(set(data) - {"genes", "fixed", "name"})
        if unknown:
            raise HardwareError(f"unknown hardware-space keys {unknown}; allowed: ['fixed', 'genes', 'name']")
        return cls(genes={k: list(v) for k, v in dict(data["genes"]).items()},
                   fixed=dict(data.get("fixed") or {}), name=str(data.get("name", "hw")))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "HardwareSpace":
        """Load a hardware space YAML. It must name every hardware field (as a gene or fixed),
        except ``weight_memory`` (default ``on_chip``): a missing field would otherwise silently
        take the code's default. Errors name the file."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise HardwareError(f"hardware space file {str(p)!r} not found; shipped: configs/hw/*.yaml")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise HardwareError(f"hardware space file {str(p)!r}: YAML syntax error{where}: {problem}") from None
        if not isinstance(data, dict):
            raise HardwareError(f"hardware space file {str(p)!r}: expected a mapping with 'genes' and 'fixed', "
                                f"found {type(data).__name__}")
        try:
            genes, fixed = dict(data.get("genes") or {}), dict(data.get("fixed") or {})
        except (TypeError, ValueError):
            raise HardwareError(f"hardware space file {str(p)!r}: 'genes' and 'fixed' must be mappings") from None
        missing = [f for f in FIELDS if f not in genes and f not in fixed and f not in OPTIONAL_YAML_FIELDS]
        if missing:
            raise HardwareError(f"hardware space file {str(p)!r}: fields {missing} are neither genes nor fixed; a "
                                f"hardware YAML must name every field of {[f for f in FIELDS if f not in OPTIONAL_YAML_FIELDS]}")
        try:
            return cls.from_dict(data)
        except HardwareError as err:
            raise HardwareError(f"hardware space file {str(p)!r}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "genes": {k: list(v) for k, v in self.genes.items()}, "fixed": dict(self.fixed)}

    def decode(self, indices: torch.Tensor) -> HardwareBatch:
        """Gene indices ``[B, G]`` (long) -> :class:`HardwareBatch` (one gather)."""
        if indices.dim() != 2 or indices.shape[1] != self.num_genes:
            raise HardwareError(f"indices must be [B, {self.num_genes}], got {list(indices.shape)}")
        table = self._table.to(indices.device)
        values = table.gather(1, indices.t().long()).t() if indices.numel() else indices.double()
        if torch.isnan(values).any():
            raise HardwareError(f"gene index out of range; cardinalities: {self.cardinalities}")
        b = indices.shape[0]
        cols = {}
        for i, g in enumerate(self.genes):
            cols[g] = values[:, i].to(HardwareBatch.dtype_of(g))
        for f, v in self._fixed_all.items():
            code = CODE_FIELDS[f].index(v) if f in CODE_FIELDS else v
            cols[f] = torch.full((b,), code, dtype=HardwareBatch.dtype_of(f), device=indices.device)
        return HardwareBatch(**cols)

    def encode(self, params: Sequence[HardwareParams]) -> torch.Tensor:
        """Designs -> gene indices ``[B, G]`` (errors name the gene and the allowed values)."""
        out = []
        for p in params:
            row = []
            for g, choices in self.genes.items():
                v = getattr(p, g)
                index = option_index(choices, v)
                if index is None:
                    raise HardwareError(f"{g}={v!r} is not a choice of this space; allowed values: {choices}")
                row.append(index)
            out.append(row)
        return torch.tensor(out, dtype=torch.long)

    def random_indices(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> torch.Tensor:
        card = torch.tensor(self.cardinalities, dtype=torch.float64)
        u = torch.rand(n, self.num_genes, generator=generator, dtype=torch.float64)
        return (u * card).floor().long().clamp(max=card.long() - 1).to(device)


__all__ = [
    "FIELDS", "REFERENCE_GENES", "CELL_NAMES", "ADC_MODELS", "WEIGHT_MEMORIES", "HardwareError", "HardwareParams",
    "HardwareBatch", "HardwareSpace",
]
