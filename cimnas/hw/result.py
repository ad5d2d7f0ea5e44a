"""What the cost model returns: :class:`CostResult` (every field ``[B]``, or ``[B, L]`` per layer),
the feasibility reasons and the component names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch


#: Feasibility codes. Area is NOT checked here: the search compares ``area_mm2`` with its budget.
REASONS: tuple[str, ...] = ("ok", "capacity", "layer-exceeds-chip", "empty-workload")


COMPONENTS: tuple[str, ...] = ("cim_unit", "row_drivers", "column_drivers", "adc", "input_buffer",
                               "output_buffer", "router", "glb", "main_memory")


@dataclass
class CostResult:
    """Per-design results ``[B]`` (SI units: J, s, mm²)."""

    energy_j: torch.Tensor
    latency_s: torch.Tensor
    area_mm2: torch.Tensor
    edap: torch.Tensor  # J·s·mm² (the reference reports J·s·cm² = edap / 100)
    feasible: torch.Tensor
    reason: torch.Tensor
    required_cells: torch.Tensor
    available_cells: torch.Tensor
    energy_by_component_j: dict[str, torch.Tensor]
    area_by_component_mm2: dict[str, torch.Tensor]
    ops: torch.Tensor
    tops: torch.Tensor
    tops_per_w: torch.Tensor
    tops_per_mm2: torch.Tensor
    tops_per_w_layer_mean: torch.Tensor
    tops_per_w_layer_max: torch.Tensor
    tops_per_mm2_layer_mean: torch.Tensor
    tops_per_mm2_layer_max: torch.Tensor
    tops_layer_mean: torch.Tensor
    utilization: torch.Tensor  # max over layers (CIMNAS "u"), fraction
    utilization_layer_mean: torch.Tensor
    cycles: torch.Tensor
    weight_bits: torch.Tensor  # stored weight bits of the network: sum of C*M*R*S*G*w_bits over active layers
    layers: dict[str, torch.Tensor] = field(default_factory=dict)  # per-layer [B, L] (optional)

    @property
    def batch_size(self) -> int:
        return int(self.energy_j.shape[0])

    @property
    def edap_j_s_cm2(self) -> torch.Tensor:
        return self.edap / 100.0

    @property
    def reason_names(self) -> list[str]:
        return [REASONS[int(r)] for r in self.reason.tolist()]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per design."""
        scalars = {f.name: getattr(self, f.name).tolist() for f in fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        eb = {k: v.tolist() for k, v in self.energy_by_component_j.items()}
        ab = {k: v.tolist() for k, v in self.area_by_component_mm2.items()}
        out = []
        for i in range(self.batch_size):
            rec: dict[str, Any] = {}
            for k, v in scalars.items():
                x = v[i]
                rec[k] = x if not isinstance(x, float) or math.isfinite(x) else None
            rec["reason"] = REASONS[int(rec["reason"])]
            rec["edap_j_s_cm2"] = None if rec["edap"] is None else rec["edap"] / 100.0
            rec["energy_by_component_j"] = {k: v[i] for k, v in eb.items()}
            rec["area_by_component_mm2"] = {k: v[i] for k, v in ab.items()}
            out.append(rec)
        return out
