"""Which designs a measurement job labels (issue 18: records also where the search goes).

Every set maps a sample index to one design from the index alone (``(seed, index)`` seeds any
randomness), so a set does not depend on sharding or interruptions, like uniform sampling:

- ``uniform``: every choice uniform (the default; a held-out test set of the space).
- ``stratified``: ``strata`` size strata; sample ``i`` is in stratum ``i % strata`` and picks
  every choice (depths, kernels, widths, resolution; bits with a size knob of their own) near
  the stratum's relative position in its sorted option list (± ``spread`` of the list), so the
  set covers the smallest and the largest designs, which uniform sampling almost never draws.
- ``grid``: the 27 uniform designs (minimum / middle / maximum depth × kernel × width on every
  block, largest resolution), quantized ones at each bit width everywhere: 27 × len(bit_choices).
- ``extremes``: largest, median, smallest; quantized at the lowest and the highest bit width.
- ``file``: the designs of a design file in file order (a search's ``population.csv``,
  ``pareto.json`` or ``best.json``; :func:`cimnas.models.design.load_designs`); in float the
  file's policies are dropped.
"""

from __future__ import annotations

from typing import Sequence

import torch

from cimnas.space import Architecture, QuantPolicy, SearchSpace
from cimnas.space.arch import BIT_FIELDS

DESIGN_SETS = ("uniform", "stratified", "grid", "extremes", "file")


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))


def _near(options: Sequence[int], t: float, spread: float, g: torch.Generator) -> int:
    """An option near relative position ``t`` of the sorted ``options`` (± ``spread`` of the list)."""
    opts = sorted(options)
    pos = (t + spread * (2.0 * float(torch.rand((), generator=g)) - 1.0)) * (len(opts) - 1)
    return opts[min(max(int(round(pos)), 0), len(opts) - 1)]


def _level(options: Sequence[int], level: int) -> int:
    """``level`` 0 / 1 / 2: the smallest, middle (lower middle) or largest option."""
    opts = sorted(options)
    return opts[(0, (len(opts) - 1) // 2, len(opts) - 1)[level]]


def set_size(space: SearchSpace, designs: str, quantized: bool, file_designs: int | None = None) -> int | None:
    """Number of designs in a finite set (None: unbounded)."""
    if designs == "grid":
        return 27 * (len(space.bit_choices) if quantized else 1)
    if designs == "extremes":
        return 3 * (2 if quantized else 1)
    if designs == "file":
        return file_designs
    return None


def design_at(space: SearchSpace, designs: str, seed: int, index: int, quantized: bool, *, strata: int = 10,
              spread: float = 0.2, file_designs: list | None = None) -> tuple[Architecture, QuantPolicy | None]:
    """The design of sample ``index`` in the set ``designs`` (see the module docstring)."""
    if designs not in DESIGN_SETS:
        raise ValueError(f"designs={designs!r} is not allowed; allowed values: {list(DESIGN_SETS)}")
    if index < 0:
        raise ValueError(f"sample index {index} must be >= 0")
    size = set_size(space, designs, quantized, len(file_designs) if file_designs is not None else None)
    if designs == "file" and file_designs is None:
        raise ValueError("designs='file' needs designs_file")
    if size is not None and index >= size:
        raise ValueError(f"num_samples: the {designs!r} set has {size} designs (quantized={quantized}); "
                         f"index {index} is past it")
    if designs == "uniform":
        g = _generator(seed, index)
        arch = Architecture.random(space, g)
        return arch, (QuantPolicy.random(space, g) if quantized else None)
    if designs == "stratified":
        if strata < 1 or not 0.0 <= spread <= 1.0:
            raise ValueError(f"strata={strata} must be >= 1 and spread={spread} in [0, 1]")
        g = _generator(seed, index)
        t = ((index % strata) + float(torch.rand((), generator=g))) / strata
        arch = Architecture(
            depths=[_near(space.stage_depth_choices(s), t, spread, g) for s in range(space.num_stages)],
            kernels=[_near(space.kernel_choices, t, spread, g) for _ in range(space.num_blocks)],
            hidden=[_near(space.hidden_choices(b), t, spread, g) for b in range(space.num_blocks)],
            resolution=_near(space.resolution_choices, t, spread, g),
        )
        if not quantized:
            return arch, None
        t_bits = float(torch.rand((), generator=g))
        policy = QuantPolicy(*[[_near(space.bit_choices, t_bits, spread, g) for _ in range(space.num_blocks)]
                               for _ in BIT_FIELDS])
        return arch, policy
    if designs == "grid":
        shape, bits_index = index % 27, index // 27
        d, k, w = shape // 9, (shape // 3) % 3, shape % 3
        arch = Architecture(
            depths=[_level(space.stage_depth_choices(s), d) for s in range(space.num_stages)],
            kernels=[_level(space.kernel_choices, k)] * space.num_blocks,
            hidden=[_level(space.hidden_choices(b), w) for b in range(space.num_blocks)],
            resolution=max(space.resolution_choices),
        )
        policy = QuantPolicy.uniform(space, sorted(space.bit_choices)[bits_index]) if quantized else None
        return arch, policy
    if designs == "extremes":
        which, bits_index = index % 3, index // 3
        arch = (Architecture.largest, Architecture.median, Architecture.smallest)[which](space)
        bits = (min(space.bit_choices), max(space.bit_choices))[bits_index] if quantized else None
        return arch, (QuantPolicy.uniform(space, bits) if quantized else None)
    design = file_designs[index]
    return design.architecture, (design.quantization if quantized else None)


__all__ = ["DESIGN_SETS", "design_at", "set_size"]
