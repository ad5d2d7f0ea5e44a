"""Reference-implementation design keys and result files (cim-cost-model.md §8.2).

A CIMNAS result key reads
``A_<V>_<bpc>_<clock>_<rows>_<cols>_<srg>_<tiles>_<macros>_<glb>_<d: 6 digits>_<ks: 21 digits>_
<pw_w: 21>_<pw_a: 21>_<dw_w: 21>_<dw_a: 21>_<e_0>_..._<e_20>`` where ``e_i`` indexes block i's
hidden-channel choices (APQ's 4·C_in .. 6·C_in in steps of 8). Keys describe the 224-px ImageNet
MobileNetV2 space (:func:`cimnas.space.apq_mbv2`); the last stage's depth digit is unused
(its single block is always present). Result values: ``e`` (J), ``l`` (s), ``a`` (cm²),
``a_tpw`` / ``a_tpm`` (layer means), ``m_tpw`` / ``m_tpm`` (layer maxima), ``u``, ``tp``, ``acc``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimnas.hw.params import HardwareBatch, HardwareError, HardwareParams
from cimnas.space import Architecture, ArchBatch, QuantPolicy, SearchSpace, apq_mbv2


class ReferenceKeyError(ValueError):
    """A malformed reference key."""


@dataclass
class ReferenceDesign:
    key: str
    architecture: Architecture
    quantization: QuantPolicy
    hardware: HardwareParams


def _digits(field: str, text: str, n: int) -> list[int]:
    if len(text) != n or not text.isdigit():
        raise ReferenceKeyError(f"key field {field}={text!r} must be {n} digits")
    return [int(c) for c in text]


def parse_key(key: str, space: SearchSpace | None = None) -> ReferenceDesign:
    """Parse one reference key (errors name the field and what it must look like)."""
    space = space or apq_mbv2()
    parts = key.strip().split("_")
    nb = space.num_blocks
    expected = 1 + 9 + 6 + nb
    if not parts or parts[0] != "A":
        raise ReferenceKeyError(f"key {key[:40]!r}... must start with 'A_'")
    if len(parts) != expected:
        raise ReferenceKeyError(f"key has {len(parts)} '_'-separated fields, expected {expected}: "
                        "A, V, bpc, clock, rows, cols, srg, tiles, macros, glb, d(6 digits), ks, pw_w, pw_a, "
                        f"dw_w, dw_a ({nb} digits each), then {nb} expansion indices")
    names = ("voltage", "bits_per_cell", "cycle_s", "rows", "cols", "router_groups", "tiles_per_group",
             "macros_per_tile", "glb_depth_words")
    hw = {}
    for name, text in zip(names, parts[1:10]):
        try:
            value = float(text)
        except ValueError:
            raise ReferenceKeyError(f"key field {name}={text!r} is not a number") from None
        hw[name] = value if name in ("voltage", "cycle_s") else int(value)
    try:
        hardware = HardwareParams(**hw)
    except HardwareError as exc:
        raise ReferenceKeyError(f"key hardware: {exc}") from None
    depths = _digits("d", parts[10], space.num_stages)
    depths = [min(d, max(space.stage_depth_choices(s))) for s, d in enumerate(depths)]
    kernels = _digits("ks", parts[11], nb)
    bits = [_digits(f, parts[12 + i], nb) for i, f in enumerate(("pw_w", "pw_a", "dw_w", "dw_a"))]
    hidden = []
    for b, text in enumerate(parts[16:16 + nb]):
        choices = space.hidden_choices(b)
        if not text.isdigit() or int(text) >= len(choices):
            raise ReferenceKeyError(f"key expansion index e[{b}]={text!r} must be in 0..{len(choices) - 1}")
        hidden.append(choices[int(text)])
    arch = Architecture(depths=depths, kernels=kernels, hidden=hidden, resolution=max(space.resolution_choices))
    policy = QuantPolicy(*bits)
    try:
        arch.validate(space)
        policy.validate(space)
    except ValueError as exc:
        raise ReferenceKeyError(f"key software part: {exc}") from None
    return ReferenceDesign(key=key, architecture=arch, quantization=policy, hardware=hardware)


def designs_to_batches(designs: list[ReferenceDesign], space: SearchSpace | None = None,
                       device: str = "cpu") -> tuple[ArchBatch, HardwareBatch]:
    space = space or apq_mbv2()
    arch = ArchBatch.from_designs(space, [d.architecture for d in designs], [d.quantization for d in designs], device)
    return arch, HardwareBatch.from_params([d.hardware for d in designs], device)


__all__ = ["ReferenceKeyError", "ReferenceDesign", "parse_key", "designs_to_batches"]
