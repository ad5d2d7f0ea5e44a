"""Batched evaluation of genomes: decode -> accuracy source + CIM cost model -> metrics, constraints.

``genome [B, G]`` -> (``ArchBatch``, ``HardwareBatch``) -> ``AccuracySource.predict`` ``[B]`` and
``cimnas.search.lowering.evaluate_arch(space, arch, hardware)`` ``[B]`` -> :class:`Evaluation`: metrics,
the total constraint violation and a reason code per design. No per-candidate Python loop on the
normal path.

Constraints (:mod:`cimnas.search.constraints`): whole-network capacity and chip area, optionally an
accuracy floor, as relative violations summed. A design the cost model or the predictor cannot
evaluate (non-finite result, cost-model failure) is infeasible with violation :data:`FAILED_CV`
and its reason is logged; it can never rank above a feasible design (the reference scores such
designs 0 = best, ``cimnas-reference-code.md`` §1.9). The accuracy sources are in
:mod:`cimnas.search.accuracy`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from cimnas.search.accuracy import AccuracySource
from cimnas.search.constraints import CODE_OF_MASK, FAILED_CV, REASONS, ConstraintConfig
from cimnas.search.genome import JointGenome
from cimnas.space import ArchBatch

log = logging.getLogger("cimnas.search")

#: Metric columns of an :class:`Evaluation`, in the order they are stored and written to CSV.
METRIC_COLUMNS = (
    "accuracy", "energy_j", "latency_s", "area_mm2", "edap_j_s_mm2", "tops", "tops_per_w", "tops_per_mm2",
    "tops_per_w_layer_mean", "tops_per_mm2_layer_mean", "utilization", "required_cells", "available_cells",
    "weight_bits", "capacity_violation", "area_violation", "reason_code", "accuracy_violation",
)


@dataclass
class Evaluation:
    """Metrics of a batch (``float64 [B]`` each, NaN where unknown), the total constraint violation
    ``cv [B]`` (0 = feasible) and ``messages``: the distinct failure reasons seen in this batch."""

    metrics: dict[str, torch.Tensor]
    cv: torch.Tensor
    messages: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> torch.Tensor:
        return self.cv <= 0

    @property
    def failed(self) -> torch.Tensor:
        return self.metrics["reason_code"] == REASONS.index("evaluation_failed")

    def columns(self) -> torch.Tensor:
        """``float64 [B, len(METRIC_COLUMNS)]`` in :data:`METRIC_COLUMNS` order."""
        return torch.stack([self.metrics[c].double() for c in METRIC_COLUMNS], dim=1)


def _metric(result: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    value = getattr(result, name, None)
    if value is None:
        return torch.full_like(like, math.nan)
    return value.to(like.device, torch.float64).reshape(like.shape)


class DesignEvaluator:
    """Scores genomes of a :class:`JointGenome`.

    Args:
        genome: the joint genome (its ``hw_space`` decodes the hardware genes).
        accuracy: an :class:`AccuracySource` (the trained predictor in every shipped config).
        constraints: :class:`ConstraintConfig`.
        value_stats: layer value statistics passed to ``cimnas.search.lowering.workload_from_arch``: a dict of
            per-slot histograms, ``"typical"`` (the cost model's per-role typical histograms) or
            ``None`` (its generic default).
        reference_compat: reproduce the reference code's cost-model quirks.
        hw_compile: the fused cost kernel (``cimnas.hw.evaluate(compile=...)``): true, false, or
            ``"auto"`` = on when ``expected_evaluations`` repays the compile
            (:func:`cimnas.hw.cost_compile.compile_pays_off`).
    """

    def __init__(self, genome: JointGenome, accuracy: AccuracySource, constraints: ConstraintConfig | None = None,
                 value_stats: Any = "typical", reference_compat: bool = False, hw_compile: bool | str = False,
                 expected_evaluations: int = 0):
        if not isinstance(accuracy, AccuracySource):
            raise TypeError(f"accuracy source {type(accuracy).__name__} has no predict(ArchBatch) method")
        self.genome = genome
        self.accuracy = accuracy
        self.constraints = constraints or ConstraintConfig()
        self.value_stats = value_stats
        self.reference_compat = reference_compat
        from cimnas.hw.cost_compile import resolve_compile

        self.hw_compile = resolve_compile(hw_compile, expected_evaluations)
        self._decoded: tuple[torch.Tensor, ArchBatch, Any] | None = None  # (genome, arch, hardware) being evaluated
        self._seen_messages: set[str] = set()
        self._accuracy_floor: float | None = None
        self._floor_resolved = False

    @property
    def accuracy_floor(self) -> float | None:
        """The accuracy floor (fraction) of :attr:`constraints`, resolved once against the accuracy
        source (see :class:`ConstraintConfig`); None without one."""
        if not self._floor_resolved:
            self._accuracy_floor = resolve_accuracy_floor(self.constraints, self.accuracy, self.genome)
            self._floor_resolved = True
        return self._accuracy_floor

    def to(self, device: torch.device | str) -> "DesignEvaluator":
        """Move the accuracy source (when it is a module) to ``device``; the genome, hardware
        space and value statistics follow the genome's device on their own."""
        if hasattr(self.accuracy, "to"):
            self.accuracy = self.accuracy.to(device)
        return self

    # ------------------------------------------------------------------ cost model
    def cost(self, genome: torch.Tensor) -> tuple[ArchBatch, Any, None, Any]:
        """(ArchBatch, HardwareBatch, None, CostResult) of ``genome`` (raises on cost-model errors).
        The workload is lowered chunk by chunk inside the cost model
        (:func:`cimnas.search.lowering.evaluate_arch`) and never materialised, hence ``None``;
        the genome :meth:`evaluate` is scoring is not decoded a second time."""
        from cimnas.search.lowering import evaluate_arch

        if self._decoded is not None and self._decoded[0] is genome:
            arch, hardware = self._decoded[1], self._decoded[2]
        else:
            arch, hardware = self.genome.decode(genome)
        result = evaluate_arch(self.genome.space, arch, hardware, value_stats=self.value_stats,
                               reference_compat=self.reference_compat, compile=self.hw_compile)
        return arch, hardware, None, result

    def _cost_metrics(self, genome: torch.Tensor, like: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[str | None]]:
        """Cost-model metrics of a batch and one error message (or None) per row. If the batched
        call raises, the batch is split in halves until the failing rows are isolated (error path
        only), so a single bad design cannot take the population down with it."""
        try:
            result = self.cost(genome)[3]
        except Exception as exc:  # noqa: BLE001 - any cost-model error makes designs infeasible
            if genome.shape[0] == 1:
                return {}, [f"cost model raised {type(exc).__name__}: {exc}"]
            half = genome.shape[0] // 2
            m1, e1 = self._cost_metrics(genome[:half], like[:half])
            m2, e2 = self._cost_metrics(genome[half:], like[half:])
            keys = sorted(set(m1) | set(m2))
            merged = {c: torch.cat([m1.get(c, like[:half]), m2.get(c, like[half:])]) for c in keys}
            return merged, e1 + e2
        metrics = self._result_metrics(result, like)
        metrics["weight_bits"] = result.weight_bits.to(like)
        errors = self._model_failures(result, genome.shape[0])
        return metrics, errors

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, genome: torch.Tensor) -> Evaluation:
        genome = self.genome.check(genome)
        batch = genome.shape[0]
        device = genome.device
        nan = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
        arch, hardware = self.genome.decode(genome)
        messages: list[str] = []

        # hardware-aware sources (device variation: cimnas.search.accuracy.NoiseAwareAccuracy)
        with_hw = getattr(self.accuracy, "predict_with_hardware", None)
        if with_hw is not None and self.genome.hw_space is not None:
            accuracy = with_hw(arch, hardware).to(device, torch.float64).reshape(batch)
        else:
            accuracy = self.accuracy.predict(arch).to(device, torch.float64).reshape(batch)
        failed = ~torch.isfinite(accuracy)
        if failed.any():
            messages.append("accuracy source returned a non-finite value")

        metrics = {c: nan.clone() for c in METRIC_COLUMNS}
        metrics["accuracy"] = accuracy
        if self.genome.hw_space is not None:
            self._decoded = (genome, arch, hardware)
            try:
                cost_metrics, errors = self._cost_metrics(genome, nan)
            finally:
                self._decoded = None
            metrics.update(cost_metrics)
            metrics["accuracy"] = accuracy
            failed |= torch.tensor([e is not None for e in errors], device=device)
            messages += sorted({e for e in errors if e is not None})
            core = torch.stack([metrics[k] for k in ("energy_j", "latency_s", "area_mm2")], dim=1)
            bad = ~torch.isfinite(core).all(dim=1) | (core <= 0).any(dim=1)
            if (bad & ~failed).any():
                messages.append("cost model returned non-finite or non-positive energy/latency/area")
            failed |= bad

        cap_v = torch.zeros(batch, dtype=torch.float64, device=device)
        area_v = torch.zeros_like(cap_v)
        if self.genome.hw_space is not None and self.constraints.capacity:
            cap_v = (metrics["required_cells"] / metrics["available_cells"] - 1.0).clamp_min(0.0)
        if self.genome.hw_space is not None and self.constraints.area_budget_mm2 is not None:
            area_v = (metrics["area_mm2"] / self.constraints.area_budget_mm2 - 1.0).clamp_min(0.0)
        cap_v = torch.nan_to_num(cap_v, nan=0.0)
        area_v = torch.nan_to_num(area_v, nan=0.0)
        acc_v = torch.zeros_like(cap_v)
        floor = self.accuracy_floor
        if floor is not None:
            acc_v = torch.nan_to_num(((floor - accuracy) / floor).clamp_min(0.0), nan=0.0)
        cv = torch.where(failed, torch.full_like(cap_v, FAILED_CV), cap_v + area_v + acc_v)
        mask = (cap_v > 0).long() + 2 * (area_v > 0).long() + 4 * (acc_v > 0).long()
        code = torch.tensor(CODE_OF_MASK, device=device)[mask]
        code = torch.where(failed, torch.full_like(code, REASONS.index("evaluation_failed")), code)
        metrics["capacity_violation"] = cap_v
        metrics["area_violation"] = area_v
        metrics["accuracy_violation"] = acc_v
        metrics["reason_code"] = code.double()
        for m in messages:
            if m not in self._seen_messages:
                self._seen_messages.add(m)
                log.warning("design evaluation failed (design made infeasible): %s", m)
        return Evaluation(metrics=metrics, cv=cv, messages=messages)

    def _result_metrics(self, result: Any, like: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {
            "energy_j": _metric(result, "energy_j", like),
            "latency_s": _metric(result, "latency_s", like),
            "area_mm2": _metric(result, "area_mm2", like),
            "tops": _metric(result, "tops", like),
            "tops_per_w": _metric(result, "tops_per_w", like),
            "tops_per_mm2": _metric(result, "tops_per_mm2", like),
            "tops_per_w_layer_mean": _metric(result, "tops_per_w_layer_mean", like),
            "tops_per_mm2_layer_mean": _metric(result, "tops_per_mm2_layer_mean", like),
            "utilization": _metric(result, "utilization", like),
            "required_cells": _metric(result, "required_cells", like),
            "available_cells": _metric(result, "available_cells", like),
        }
        out["edap_j_s_mm2"] = out["energy_j"] * out["latency_s"] * out["area_mm2"]
        return out

    def _model_failures(self, result: Any, batch: int) -> list[str | None]:
        """Designs the cost model itself flags as unevaluable: infeasible for a reason other than
        capacity (capacity and area are recomputed here as graded constraint violations)."""
        from cimnas.hw import REASONS as HW_REASONS

        codes = getattr(result, "reason", None)
        if codes is None:
            return [None] * batch
        graded = {HW_REASONS.index(r) for r in ("ok", "capacity") if r in HW_REASONS}
        return [None if int(c) in graded else f"cost model: {HW_REASONS[int(c)]}" for c in codes.tolist()]

    # ------------------------------------------------------------------ sampling
    def sample_capacity_feasible(self, n: int, lower: torch.Tensor, upper: torch.Tensor, generator: torch.Generator,
                                 max_rounds: int = 50) -> torch.Tensor:
        """``n`` distinct genomes within ``[lower, upper]`` that pass the capacity check (the
        reference's rejection sampling); after ``max_rounds`` the least-violating rest fills up."""
        device = lower.device
        kept = torch.zeros((0, lower.numel()), dtype=torch.long, device=device)
        spare_values, spare_cv = [], []
        span = (upper - lower + 1).double()
        for _ in range(max_rounds):
            u = torch.rand((4 * n, lower.numel()), generator=generator, device=device, dtype=torch.float64)
            cand = torch.minimum(lower + (u * span).long(), upper)
            ev = self.evaluate(cand)
            ok = (ev.metrics["capacity_violation"] <= 0) & ~ev.failed
            spare_values.append(cand[~ok])
            spare_cv.append(torch.where(ev.failed, torch.full_like(ev.cv, FAILED_CV), ev.metrics["capacity_violation"])[~ok])
            pool = torch.cat([kept, cand[ok]])
            from cimnas.search.operators import first_occurrence

            kept = pool[first_occurrence(pool)][:n]
            if kept.shape[0] >= n:
                return kept
        values = torch.cat(spare_values)
        order = torch.argsort(torch.cat(spare_cv), stable=True)
        log.warning("only %d of %d initial designs pass the capacity check after %d rounds; filling with the "
                    "least-violating ones", kept.shape[0], n, max_rounds)
        return torch.cat([kept, values[order][: n - kept.shape[0]]])


def resolve_accuracy_floor(constraints: ConstraintConfig, accuracy: AccuracySource, genome: JointGenome) -> float | None:
    """The highest of the floors ``constraints`` asks for, measured with ``accuracy`` (fraction),
    or None when it asks for none."""
    from cimnas.space import Architecture, QuantPolicy

    floors: list[float] = []
    if constraints.min_accuracy is not None:
        floors.append(float(constraints.min_accuracy))
    space = genome.space
    params = getattr(accuracy, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    device = first.device if first is not None else "cpu"
    if constraints.min_accuracy_quantile is not None:
        gen = torch.Generator().manual_seed(constraints.floor_seed)
        arch = genome.decode_arch(genome.random(constraints.floor_samples, gen)).to(device)
        values = accuracy.predict(arch).double().reshape(-1)
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            raise ValueError("constraints.min_accuracy_quantile: the accuracy source gave no finite value "
                             "on random designs")
        floors.append(float(torch.quantile(values.cpu(), constraints.min_accuracy_quantile)))
    if constraints.max_accuracy_drop is not None:
        make = {"largest": Architecture.largest, "median": Architecture.median, "smallest": Architecture.smallest}
        ref = make[constraints.accuracy_reference](space)
        arch = ArchBatch.from_designs(space, [ref], [QuantPolicy.uniform(space, max(space.bit_choices))], device=device)
        floors.append(float(accuracy.predict(arch).double().reshape(-1)[0]) - float(constraints.max_accuracy_drop))
    return max(floors) if floors else None


__all__ = ["METRIC_COLUMNS", "DesignEvaluator", "Evaluation", "resolve_accuracy_floor"]
