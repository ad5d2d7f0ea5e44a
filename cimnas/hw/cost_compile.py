"""The fused form of the cost model's per-chunk math, and when it pays off.

:func:`kernels` gives the two per-chunk functions of :mod:`cimnas.hw.cost_chunk` (a chunk of a
shared workload, a chunk of a per-row workload) eager or as ``torch.compile`` graphs, made once per
process; :func:`resolve_compile` / :func:`compile_pays_off` decide whether a job compiles.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from cimnas.hw.cost_chunk import chunk_from_rows, evaluate_chunk

#: ``torch.compile`` versions of the per-chunk math, made on first use (one per function; the
#: compiled graphs are cached by torch per shape class, device and static arguments).
_COMPILED: dict[str, Callable] = {}


#: When the fused kernel repays its compile (measured on the loaded 2-core machine, apq_mbv2,
#: one thread): the cold compile takes ~30 s (27-46 s; ~8 s from the inductor cache) and saves
#: 7.5 us per design at B = 150, 18 at 1,000 and 9.6 at 20,000, so it pays from ~3e6 designs.
COMPILE_BREAK_EVEN_DESIGNS = 3_000_000


def compile_pays_off(num_designs: int) -> bool:
    """Whether scoring ``num_designs`` designs (e.g. popsize x generations) with the fused kernel
    is expected to repay its compile (:data:`COMPILE_BREAK_EVEN_DESIGNS`)."""
    return num_designs >= COMPILE_BREAK_EVEN_DESIGNS


def resolve_compile(setting: bool | str | None, num_designs: int) -> bool:
    """``True`` / ``False`` as given, ``None`` = off, ``"auto"`` = :func:`compile_pays_off`."""
    if setting is None or isinstance(setting, bool):
        return bool(setting)
    if setting == "auto":
        return compile_pays_off(num_designs)
    raise ValueError(f"compile={setting!r} is not allowed; allowed values: true, false, 'auto'")


def kernels(compile: bool) -> tuple[Callable, Callable]:
    """(chunk of a shared workload, chunk of a per-row workload), eager or fused."""
    if not compile:
        return evaluate_chunk, chunk_from_rows
    if not _COMPILED:
        # dynamic: one graph for every chunk size (the last chunk is shorter) and layer count
        _COMPILED["shared"] = _without_recompiles(torch.compile(evaluate_chunk, dynamic=True))
        _COMPILED["rows"] = _without_recompiles(torch.compile(chunk_from_rows, dynamic=True))
    return _COMPILED["shared"], _COMPILED["rows"]


def _without_recompiles(fn: Callable) -> Callable:
    """Call a compiled kernel so that its guards hold from call to call: without grad (callers
    in and outside ``no_grad`` share a graph) and without duck sizing (sizes or storage offsets
    that happen to be equal at the first call, e.g. a chunk's offset and a gene count, would
    otherwise be guarded equal and recompile the next chunk)."""
    from torch.fx.experimental import _config as fx_config

    def call(*args: Any) -> Any:
        with torch.no_grad(), fx_config.patch(use_duck_shape=False):
            return fn(*args)

    return call


__all__ = ["COMPILE_BREAK_EVEN_DESIGNS", "compile_pays_off", "kernels", "resolve_compile"]
