"""Named network designs and the design-file format the search writes (and ``train.py`` reads).

A design file (``best.json``) is plain JSON::

    {"format": "cimnas.design/1", "space": "apq_mbv2_tiny", "space_config": {...SearchSpace...},
     "architecture": {...Architecture...}, "quantization": {...QuantPolicy...},
     "hardware": {gene name: value, ...}, "metrics": {...}, "genome": [...], "source": {...}}

Fine-tuning needs only ``space`` (or ``space_config``), ``architecture`` and ``quantization``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from cimnas.space import Architecture, QuantPolicy, SearchSpace, SpaceError

DESIGN_FORMAT = "cimnas.design/1"

#: The reference's "baseline-like" MobileNetV2 (``cimnas-reference-code.md`` §1.8): kernel 3,
#: expansion 6 (largest hidden width), depths [2, 3, 4, 3, 3, 2] (clipped per stage), all 8-bit.
BASELINE_LIKE_DEPTHS = (2, 3, 4, 3, 3, 2)


def named_network(space: SearchSpace, name: str) -> tuple[Architecture, QuantPolicy]:
    """``baseline_like``, ``largest`` or ``smallest`` network of ``space`` (8-bit, or 4-bit for smallest)."""
    if name == "baseline_like":
        depths = [
            min(BASELINE_LIKE_DEPTHS[s] if s < len(BASELINE_LIKE_DEPTHS) else max(space.depth_choices),
                space.stages[s].max_depth)
            for s in range(space.num_stages)
        ]
        depths = [d if d in space.stage_depth_choices(s) else max(space.stage_depth_choices(s))
                  for s, d in enumerate(depths)]
        kernel = 3 if 3 in space.kernel_choices else min(space.kernel_choices)
        arch = Architecture(
            depths=depths, kernels=[kernel] * space.num_blocks,
            hidden=[space.max_hidden(b) for b in range(space.num_blocks)], resolution=max(space.resolution_choices),
        )
        return arch.validate(space), QuantPolicy.uniform(space, max(space.bit_choices))
    if name == "largest":
        return Architecture.largest(space), QuantPolicy.uniform(space, max(space.bit_choices))
    if name == "smallest":
        return Architecture.smallest(space), QuantPolicy.uniform(space, min(space.bit_choices))
    raise SpaceError(f"network={name!r} is not a named network; allowed values: baseline_like, largest, smallest, "
                     "a design JSON path, or a mapping with 'architecture' and 'quantization'")


def resolve_network(space: SearchSpace, spec: str | Mapping[str, Any]) -> tuple[Architecture, QuantPolicy]:
    """A network given by name, by design-file path or inline ``{architecture, quantization}``."""
    if isinstance(spec, str) and spec.endswith(".json"):
        spec = read_design(spec)
    if isinstance(spec, str):
        return named_network(space, spec)
    if "architecture" not in spec or "quantization" not in spec:
        raise SpaceError(f"network mapping needs keys 'architecture' and 'quantization'; got {sorted(spec)}")
    arch = Architecture.from_dict(dict(spec["architecture"])).validate(space)
    quant = spec["quantization"]
    policy = QuantPolicy.uniform(space, int(quant)) if isinstance(quant, int) else QuantPolicy.from_dict(dict(quant))
    return arch, policy.validate(space)


def design_record(space: SearchSpace, design: Mapping[str, Any], metrics: Mapping[str, Any] | None = None,
                  genome: list[int] | None = None, source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Plain-dict design file content (see module docstring)."""
    return {
        "format": DESIGN_FORMAT,
        "space": space.name,
        "space_config": space.to_dict(),
        "architecture": dict(design["architecture"]),
        "quantization": dict(design["quantization"]),
        "hardware": {k: _plain(v) for k, v in dict(design.get("hardware") or {}).items()},
        "metrics": {k: _plain(v) for k, v in dict(metrics or {}).items()},
        "genome": list(genome or []),
        "source": dict(source or {}),
    }


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic JSON write (tmp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_design(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"design file {str(path)!r} not found")
    data = json.loads(path.read_text())
    for key in ("architecture", "quantization"):
        if key not in data:
            raise SpaceError(f"{path}: design file lacks the key {key!r}")
    return data


__all__ = ["DESIGN_FORMAT", "design_record", "named_network", "read_design", "resolve_network", "write_json"]
