"""Off-chip weight memory (CiMLoop system ``fetch_weights_lpddr4``).

The authors' SRAM code runs CiMLoop with the system ``fetch_weights_lpddr4``
(cimnas-reference-code.md §1.3): a ``main_memory`` DRAM component (``type: LPDDR4``, width 128)
that keeps only the weights, above the chip. Weights that are not resident on chip stream from it
for every inference instead of making the design infeasible.

Energy per bit: the Accelergy CACTI plug-in's DRAM model charges a fixed energy per bit by DRAM
type, ``LPDDR4: 8 pJ/bit`` ("public data"; ``cacti_wrapper.py`` ``CactiDRAM.type2energy`` in
Accelergy-Project/accelergy-cacti-plug-in) [src]. DRAM area and leakage are 0 in that model (off
chip), and so here.

Bandwidth: one LPDDR4-3200 x32 device, 3200 MT/s × 32 bit = 102.4 Gbit/s (JEDEC JESD209-4 peak
data rate) [inf: the CiMLoop system charges no DRAM latency at all; the paper's SRAM setup does
not say which part]. The weight fetch is charged to latency without overlap with compute (an
upper bound: a double-buffered chip would hide part of it).

Which bits are fetched [inf]: when the whole network fits on chip the weights stay resident
(weight-stationary, fetched once and amortised over inferences: nothing charged per inference);
otherwise every weight bit of the network is read once per inference (layer by layer the chip's
cells are overwritten, so nothing survives to the next inference) and written once into the
cells. SRAM cell write energy is inside NeuroSim's array periphery for SRAM, which CIMNAS's stack
does not charge for inference; we add no write term (documented gap).
"""

from __future__ import annotations

import torch

#: Where the weights live: on chip only (capacity is a constraint) or streamed from LPDDR4.
WEIGHT_MEMORIES: tuple[str, ...] = ("on_chip", "lpddr4")

#: Accelergy CACTI plug-in ``CactiDRAM.type2energy["LPDDR4"]`` [src].
LPDDR4_ENERGY_PJ_PER_BIT = 8.0
#: LPDDR4-3200, x32 (JESD209-4 peak) [inf].
LPDDR4_BANDWIDTH_BITS_PER_S = 3200e6 * 32


def fetch_cost(weight_bits: torch.Tensor, required_cells: torch.Tensor, available_cells: torch.Tensor,
               weight_memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(energy J, latency s) ``[B]`` of the per-inference weight fetch: zero on designs whose
    weights fit (or whose ``weight_memory`` is ``on_chip``), every weight bit otherwise."""
    streams = (weight_memory == WEIGHT_MEMORIES.index("lpddr4")) & (required_cells > available_cells)
    bits = torch.where(streams, weight_bits.double(), torch.zeros_like(weight_bits, dtype=torch.float64))
    return bits * LPDDR4_ENERGY_PJ_PER_BIT * 1e-12, bits / LPDDR4_BANDWIDTH_BITS_PER_S


__all__ = ["WEIGHT_MEMORIES", "LPDDR4_ENERGY_PJ_PER_BIT", "LPDDR4_BANDWIDTH_BITS_PER_S", "fetch_cost"]
