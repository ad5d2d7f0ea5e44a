"""Histogram encoder: value histograms -> average encoded slice values (x̄, w̄).

CiMLoop describes each operand by a symmetric, zero-centred histogram with 2^n - 1 bins (bin i is
the signed integer i - centre). An encoding maps every bin to an n-bit pattern; slicing splits a
B-bit operand into slices of s bits; the scalar the NeuroSim components see is the mean over
slices of the average normalised slice value. Semantics follow CiMLoop's
``workspace/models/include/slicing_encoding.py`` as summarised in
``docs/reference/cim-cost-model.md`` §3.2-3.3:

- offset: pattern = bin index (signed value + centre), n bits, MSB first;
- magnitude: pattern = |bin - centre| in n - 1 bits;
- bits beyond the pattern's length (B > pattern bits) take the pattern's mean bit density;
- every slice is normalised by the full-slice maximum 2^s_max - 1.

Everything is batched: :func:`slice_value_matrix` builds, once per (encoding, n bins), a matrix
``V[B, s, bin]`` so that ``x̄ = hist @ V[B, s]`` for any batch of histograms.
"""

from __future__ import annotations

import functools

import torch

ENCODINGS = ("offset", "magnitude")
MAX_BITS = 8  #: operand widths 1..8 are tabulated


def _check_bins(nbins: int) -> int:
    n = (nbins + 1).bit_length() - 1
    if nbins < 1 or 2**n - 1 != nbins:
        raise ValueError(f"histogram length {nbins} must be 2^n - 1 (e.g. 7, 15, 31)")
    return n


def bin_patterns(nbins: int, encoding: str = "offset") -> list[list[int]]:
    """Bit pattern (MSB first) of every bin under ``encoding``."""
    n = _check_bins(nbins)
    centre = nbins // 2
    out = []
    for i in range(nbins):
        if encoding == "offset":
            value, width = i, n
        elif encoding == "magnitude":
            value, width = abs(i - centre), n - 1
        else:
            raise ValueError(f"encoding={encoding!r} is not allowed; allowed values: {list(ENCODINGS)}")
        full = [int(b) for b in format(value, f"0{n}b")]
        out.append(full[n - width:] if width > 0 else [0])
    return out


def slice_widths(total_bits: int, bits_per_slice: int) -> list[int]:
    """Slices of ``bits_per_slice`` bits; a last partial slice carries the remainder."""
    s = max(1, min(bits_per_slice, total_bits))
    widths = [s] * (total_bits // s)
    if sum(widths) != total_bits:
        widths.append(total_bits - sum(widths))
    return widths


def _average_slice_value(pattern: list[int], total_bits: int, bits_per_slice: int) -> float:
    widths = slice_widths(total_bits, bits_per_slice)
    max_val = max(2 ** max(widths) - 1, 1)
    density = sum(pattern) / len(pattern)
    per_slice = [0.0] * len(widths)
    bit = 0
    for k, w in enumerate(widths):
        for j in range(w):
            value = pattern[bit] if bit < len(pattern) else density
            per_slice[k] += value * max(2 ** (w - j - 1), 1) / max_val
            bit += 1
    return sum(per_slice) / len(per_slice)


@functools.lru_cache(maxsize=16)
def _matrix(nbins: int, encoding: str) -> torch.Tensor:
    patterns = bin_patterns(nbins, encoding)
    v = torch.zeros(MAX_BITS + 1, MAX_BITS + 1, nbins, dtype=torch.float64)
    for b in range(1, MAX_BITS + 1):
        for s in range(1, MAX_BITS + 1):
            for i, p in enumerate(patterns):
                v[b, s, i] = _average_slice_value(p, b, s)
    return v


def slice_value_matrix(nbins: int = 31, encoding: str = "offset", dtype=torch.float32,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """``V[B, s, bin]`` (B, s in 0..8; row 0 unused): average slice value of each bin's pattern
    for a B-bit operand cut into s-bit slices."""
    return _matrix(nbins, encoding).to(dtype=dtype, device=device)


def normalize(hist: torch.Tensor) -> torch.Tensor:
    """Normalise the last dimension to sum 1 (an all-zero histogram stays zero)."""
    total = hist.sum(-1, keepdim=True)
    return hist / torch.where(total > 0, total, torch.ones_like(total))


def average_slice_value(hist: torch.Tensor, total_bits: int, bits_per_slice: int,
                        encoding: str = "offset") -> torch.Tensor:
    """x̄ (or w̄) of each histogram in ``hist [..., nbins]`` for one (B, s) choice."""
    if not 1 <= total_bits <= MAX_BITS:
        raise ValueError(f"total_bits={total_bits} is not allowed; allowed values: 1..{MAX_BITS}")
    v = slice_value_matrix(hist.shape[-1], encoding, torch.float64, hist.device)
    s = max(1, min(bits_per_slice, total_bits))
    return (normalize(hist.double()) @ v[total_bits, s]).to(hist.dtype if hist.is_floating_point() else torch.float32)


def slice_value_table(hist: torch.Tensor, encoding: str = "offset") -> torch.Tensor:
    """All (B, s) at once: ``[..., 9, 9]`` with entry [B, s] = average slice value."""
    v = slice_value_matrix(hist.shape[-1], encoding, torch.float32, hist.device)
    return torch.einsum("...n,bsn->...bs", normalize(hist.float()), v)


def reference_lossy_histogram(values: torch.Tensor, nbins: int = 31, levels: int = 8) -> torch.Tensor:
    """The reference code's histogram (``softwareSample.py``, cim-cost-model.md §1.5 / 1.7):
    min-max normalise the whole tensor, round to ``levels`` levels whatever the bit width, spread
    those levels over ``nbins`` bins, zero the centre bin, renormalise."""
    v = values.detach().flatten().double()
    lo, hi = v.min(), v.max()
    span = (hi - lo) if hi > lo else torch.ones((), dtype=v.dtype)
    q = torch.round((v - lo) / span * (levels - 1))
    idx = torch.round(q * (nbins - 1) / (levels - 1)).long().clamp(0, nbins - 1)
    h = torch.bincount(idx, minlength=nbins).double()
    h[nbins // 2] = 0.0
    return normalize(h).float()


def integer_histogram(levels: torch.Tensor, bits: int, signed: bool, nbins: int = 31) -> torch.Tensor:
    """Histogram of integer quantisation levels on CiMLoop's 2^n-1 bin grid.

    Signed levels in [-(2^(b-1)-1), 2^(b-1)-1] and unsigned levels in [0, 2^b - 1] are scaled to
    the grid's signed range [-(nbins//2), nbins//2] (unsigned ones land on the upper half, as
    CiMLoop's post-ReLU input histograms do)."""
    centre = nbins // 2
    v = levels.detach().flatten().double()
    full = float(2 ** (bits - 1) - 1) if signed else float(2**bits - 1)
    full = max(full, 1.0)
    idx = torch.round(v / full * centre).long().clamp(-centre, centre) + centre
    return normalize(torch.bincount(idx, minlength=nbins).double()).float()


__all__ = [
    "ENCODINGS", "MAX_BITS", "bin_patterns", "slice_widths", "slice_value_matrix", "normalize",
    "average_slice_value", "slice_value_table", "reference_lossy_histogram", "integer_histogram",
]
