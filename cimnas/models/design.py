"""Design files: one network design (search space, architecture, bit widths, hardware) as data.

The search writes ``best.json`` / ``pareto.json`` (``cimnas.search.designs.design_record``)::

    {"format": "cimnas.design/1", "space": "apq_mbv2_tiny", "space_config": {...SearchSpace...},
     "architecture": {"depths", "kernels", "hidden", "resolution"},
     "quantization": {"pw_w_bits", "pw_a_bits", "dw_w_bits", "dw_a_bits"},
     "hardware": {gene: value}, "metrics": {"accuracy": <predicted fraction>, ...}, ...}

and ``population.csv`` (one design per row, best first; list fields as space-separated ints).
:func:`load_design` is the one way in for everything that consumes a design (fine-tuning,
export, batch evaluation): it checks the file once, against the supernet's space when given,
and raises :class:`DesignError` naming the file, the field and the allowed values.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cimnas.space import (
    BIT_FIELDS,
    PRESETS,
    Architecture,
    QuantPolicy,
    SearchSpace,
    SpaceError,
    check_mapping_keys,
    get_space,
)

DESIGN_FORMATS = ("cimnas.design/1",)
ARCH_FIELDS = ("depths", "kernels", "hidden", "resolution")
#: Accepted spellings of the two required sections (the supernet's export config uses arch/policy).
ARCH_KEYS = ("architecture", "arch")
QUANT_KEYS = ("quantization", "policy")


class DesignError(SpaceError):
    """A design file or mapping that is malformed or does not fit the supernet's space."""


@dataclass
class Design:
    """One network design: its space, architecture and per-block bit widths (validated), plus
    whatever else the search recorded (hardware genes, metrics such as the predicted accuracy)."""

    space: SearchSpace
    architecture: Architecture
    quantization: QuantPolicy
    hardware: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = "design"
    source: str | None = None
    genome: list[int] | None = None  # the search's gene indices, when the file records them

    @property
    def predicted_accuracy(self) -> float | None:
        """The accuracy predictor's value (fraction) recorded by the search, if any."""
        value = self.metrics.get("accuracy")
        return None if value is None else float(value)

    def network_key(self) -> tuple:
        """Identity of the network that runs (architecture + bits of the active blocks, not
        hardware, not the genes a shallower depth skips): equal keys fine-tune alike."""
        a, q = self.architecture, self.quantization
        active = a.active_blocks(self.space)
        keep = lambda values: tuple(v if on else None for v, on in zip(values, active))  # noqa: E731
        return (tuple(a.depths), keep(a.kernels), keep(a.hidden), a.resolution,
                *(keep(getattr(q, f)) for f in BIT_FIELDS))

    def to_record(self) -> dict[str, Any]:
        """Plain-dict design file content (same layout as the search's ``best.json``)."""
        return {
            "format": DESIGN_FORMATS[0], "space": self.space.name, "space_config": self.space.to_dict(),
            "architecture": self.architecture.to_dict(), "quantization": self.quantization.to_dict(),
            "hardware": dict(self.hardware), "metrics": dict(self.metrics), "name": self.name,
        }


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _first_key(data: Mapping[str, Any], keys: tuple[str, ...], what: str, source: str | None) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    raise DesignError(f"{_where(source)}design lacks the key {keys[0]!r} ({what}); "
                      f"required keys: ['space' or 'space_config', 'architecture', 'quantization']; "
                      f"found keys: {sorted(data)}")


def _space_differences(a: SearchSpace, b: SearchSpace) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in set(da) | set(db) if k != "name" and da.get(k) != db.get(k))


def _resolve_space(data: Mapping[str, Any], expected: SearchSpace | None, source: str | None) -> SearchSpace:
    """The design's space, checked against ``expected`` (the supernet's) when given."""
    name = data.get("space")
    config = data.get("space_config")
    if isinstance(name, Mapping) and config is None:  # a full space dict under "space"
        name, config = name.get("name"), name
    if name is None and config is None:
        if expected is None:
            raise DesignError(f"{_where(source)}design lacks the key 'space'; allowed values: {sorted(PRESETS)} "
                              "(or a 'space_config' mapping)")
        return expected
    if config is not None:
        try:
            space = SearchSpace.from_dict(dict(config))
        except (SpaceError, TypeError) as err:
            raise DesignError(f"{_where(source)}space_config: {err}") from err
        if name is not None and name != space.name:
            raise DesignError(f"{_where(source)}space={name!r} but space_config.name={space.name!r}")
    else:
        if not isinstance(name, str):
            raise DesignError(f"{_where(source)}space={name!r} must be a preset name; allowed values: {sorted(PRESETS)}")
        if expected is not None and name == expected.name:
            space = expected  # a preset name with the supernet's own overrides (e.g. num_classes)
        else:
            try:
                space = get_space(name)
            except SpaceError as err:
                raise DesignError(f"{_where(source)}space: {err}") from err
    if expected is not None:
        if space.name != expected.name:
            raise DesignError(f"{_where(source)}space={space.name!r} does not match the supernet's space; "
                              f"allowed values: [{expected.name!r}]")
        diff = _space_differences(space, expected)
        if diff:
            raise DesignError(f"{_where(source)}space_config differs from the supernet's space "
                              f"{expected.name!r} in the fields {diff}")
        space = expected
    return space


def _int_list(value: Any, field_name: str, source: str | None) -> list[int]:
    if isinstance(value, str):  # population.csv form: "3 5 7"
        value = value.split()
    if not isinstance(value, (list, tuple)):
        raise DesignError(f"{_where(source)}{field_name}={value!r} must be a list of integers")
    out = []
    for i, v in enumerate(value):
        try:
            as_int = int(v)
        except (TypeError, ValueError):
            raise DesignError(f"{_where(source)}{field_name}[{i}]={v!r} is not an integer") from None
        if isinstance(v, float) and v != as_int:
            raise DesignError(f"{_where(source)}{field_name}[{i}]={v!r} is not an integer")
        out.append(as_int)
    return out


def _architecture(value: Any, space: SearchSpace, source: str | None) -> Architecture:
    check_mapping_keys(f"{_where(source)}architecture", value, ARCH_FIELDS, DesignError)
    try:
        resolution = int(value["resolution"])
    except (TypeError, ValueError):
        raise DesignError(f"{_where(source)}architecture.resolution={value['resolution']!r} is not an integer; "
                          f"allowed values: {list(space.resolution_choices)}") from None
    arch = Architecture(
        depths=_int_list(value["depths"], "architecture.depths", source),
        kernels=_int_list(value["kernels"], "architecture.kernels", source),
        hidden=_int_list(value["hidden"], "architecture.hidden", source),
        resolution=resolution,
    )
    try:
        return arch.validate(space)
    except SpaceError as err:
        raise DesignError(f"{_where(source)}architecture.{err} (space {space.name!r})") from err


def _quantization(value: Any, space: SearchSpace, source: str | None) -> QuantPolicy:
    if isinstance(value, int) and not isinstance(value, bool):  # uniform bit width
        if value not in space.bit_choices:
            raise DesignError(f"{_where(source)}quantization={value} is not allowed; allowed values: "
                              f"{list(space.bit_choices)} or a mapping with keys {list(BIT_FIELDS)}")
        return QuantPolicy.uniform(space, value)
    check_mapping_keys(f"{_where(source)}quantization", value, BIT_FIELDS, DesignError)
    policy = QuantPolicy(*[_int_list(value[f], f"quantization.{f}", source) for f in BIT_FIELDS])
    try:
        return policy.validate(space)
    except SpaceError as err:
        raise DesignError(f"{_where(source)}quantization.{err} (space {space.name!r})") from err


def design_from_mapping(data: Mapping[str, Any], space: SearchSpace | str | dict | None = None,
                        source: str | None = None, name: str | None = None) -> Design:
    """Validate a design mapping (design-file content) against ``space`` (the supernet's; None =
    the space the design names)."""
    if not isinstance(data, Mapping):
        raise DesignError(f"{_where(source)}a design must be a JSON object; got {type(data).__name__}")
    fmt = data.get("format")
    if fmt is not None and fmt not in DESIGN_FORMATS:
        raise DesignError(f"{_where(source)}format={fmt!r} is not allowed; allowed values: {list(DESIGN_FORMATS)}")
    expected = None if space is None else get_space(space)
    resolved = _resolve_space(data, expected, source)
    arch = _architecture(_first_key(data, ARCH_KEYS, "Architecture", source), resolved, source)
    policy = _quantization(_first_key(data, QUANT_KEYS, "QuantPolicy", source), resolved, source)
    hardware = data.get("hardware") or {}
    metrics = data.get("metrics") or {}
    for key, value in (("hardware", hardware), ("metrics", metrics)):
        if not isinstance(value, Mapping):
            raise DesignError(f"{_where(source)}{key} must be a mapping; got {type(value).__name__}")
    if name is None:
        name = str(data.get("name") or (Path(source).stem if source else "design"))
    return Design(resolved, arch, policy, dict(hardware), dict(metrics), name, source)


def load_design(source: str | os.PathLike | Mapping[str, Any] | Design,
                space: SearchSpace | str | dict | None = None) -> Design:
    """Load and validate one design: a design JSON file, a mapping, or a :class:`Design` (then
    only re-checked against ``space``). Raises :class:`DesignError` naming file and field."""
    if isinstance(source, Design):
        return design_from_mapping(source.to_record(), space, source.source, source.name)
    if isinstance(source, Mapping):
        return design_from_mapping(source, space)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"design file {str(path)!r} not found (run `python search.py --config "
                                "configs/search/<name>.yaml` to write <results>/best.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DesignError(f"{path}: not valid JSON ({err})") from err
    if isinstance(data, list):
        raise DesignError(f"{path}: holds a list of {len(data)} designs (e.g. pareto.json); pass one design "
                          "file, or use load_designs() / the batch mode for lists")
    return design_from_mapping(data, space, str(path))


# ---------------------------------------------------------------------- results folders


def _csv_row_design(row: Mapping[str, str], space: SearchSpace, source: str) -> Design:
    arch = {k: row.get(k) for k in ARCH_FIELDS}
    quant = {k: row.get(k) for k in BIT_FIELDS}
    for key, value in (*arch.items(), *quant.items()):
        if value is None:
            raise DesignError(f"{source}: column {key!r} missing; population.csv needs columns "
                              f"{list(ARCH_FIELDS) + list(BIT_FIELDS)}")
    metrics: dict[str, Any] = {}
    for key, value in row.items():
        if key in ARCH_FIELDS or key in BIT_FIELDS or key.startswith("hw_") or key == "genome":
            continue
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            metrics[key] = {"True": True, "False": False}.get(value, value)
    hardware = {k[3:]: v for k, v in row.items() if k.startswith("hw_")}
    rank = row.get("rank", "?")
    design = design_from_mapping({"architecture": arch, "quantization": quant, "hardware": hardware,
                                  "metrics": metrics}, space, source, name=f"rank{rank}")
    if row.get("genome"):
        design.genome = [int(v) for v in row["genome"].split()]
    return design


def load_designs(source: str | os.PathLike, space: SearchSpace | str | dict | None = None) -> list[Design]:
    """All designs of a file, in file order: a design JSON, a JSON list (``pareto.json``) or a
    search ``population.csv`` (best first; its space comes from ``best.json`` / ``summary.json``
    beside it, or from ``space``)."""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"design file {str(path)!r} not found")
    if path.suffix == ".csv":
        if space is None:
            space = _results_space(path.parent)
        resolved = get_space(space)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [_csv_row_design(r, resolved, f"{path}:row{i + 2}") for i, r in enumerate(rows)]
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return [design_from_mapping(d, space, f"{path}[{i}]", name=f"{path.stem}{i}") for i, d in enumerate(data)]
    return [design_from_mapping(data, space, str(path))]


def _results_space(folder: Path) -> SearchSpace:
    best = folder / "best.json"
    if best.is_file():
        return load_design(best).space
    summary = folder / "summary.json"
    if summary.is_file():
        name = json.loads(summary.read_text()).get("space")
        if name:
            return get_space(name)
    raise DesignError(f"{folder}: cannot tell the search space of population.csv (no best.json or summary.json "
                      "with a 'space' key); pass space=")


SELECTIONS = ("top", "spread")


def top_designs(results: str | os.PathLike, k: int, space: SearchSpace | str | dict | None = None,
                selection: str = "top", feasible_only: bool = True) -> list[Design]:
    """``k`` distinct networks of a search results folder (or of one design / population file);
    after the final population the all-evaluations Pareto archive (``pareto.json``) is read, so a
    collapsed population still yields ``k`` networks (a warning says when fewer exist).

    ``population.csv`` rows are best first; duplicates of a network (same architecture and bits,
    other hardware) are dropped. ``selection='top'`` takes the first ``k``; ``'spread'`` takes ``k``
    designs evenly spaced in predicted accuracy (a wider range, more telling for a predictor
    check). Without a population file the folder's ``best.json`` and ``pareto.json`` are used.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is not allowed; allowed values: {list(SELECTIONS)}")
    if k < 1:
        raise ValueError(f"top_k={k} must be >= 1")
    path = Path(results)
    if path.is_dir():
        # the final population first (best first), then the all-evaluations Pareto archive, so a
        # population that collapsed to a few networks still yields k distinct ones
        files = [path / "population.csv", path / "pareto.json"] if (path / "population.csv").is_file() else \
            [path / "best.json", path / "pareto.json"]
        files = [p for p in files if p.is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: no population.csv, best.json or pareto.json (not a search results folder)")
    else:
        files = [path]
    designs: list[Design] = []
    for f in files:
        designs += load_designs(f, space)
    if feasible_only:
        designs = [d for d in designs if d.metrics.get("feasible", True) in (True, 1.0)]
    seen, unique = set(), []
    for d in designs:
        key = d.network_key()
        if key not in seen:
            seen.add(key)
            unique.append(d)
    if len(unique) < k:
        warnings.warn(f"{path}: only {len(unique)} distinct networks (asked for top_k={k})", stacklevel=2)
    if selection == "top" or len(unique) <= k:
        return unique[:k]
    ranked = sorted(unique, key=lambda d: (d.predicted_accuracy or 0.0))
    if k == 1:
        return [ranked[-1]]
    picks = sorted({round(i * (len(ranked) - 1) / (k - 1)) for i in range(k)})
    return [ranked[i] for i in picks]


__all__ = ["Design", "DesignError", "DESIGN_FORMATS", "SELECTIONS", "design_from_mapping", "load_design",
           "load_designs", "top_designs"]
