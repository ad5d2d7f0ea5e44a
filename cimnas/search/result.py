"""What one search method produces: :class:`MethodResult` (final population, evaluations,
history, the all-evaluations Pareto archive); the best-design rule shared by every method is
:meth:`JointProblem.best_index <cimnas.search.problem.JointProblem.best_index>`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cimnas.search.constraints import REASONS
from cimnas.search.evaluator import METRIC_COLUMNS
from cimnas.search.operators import first_occurrence
from cimnas.search.pareto import pareto_mask
from cimnas.search.problem import JointProblem

@dataclass
class MethodResult:
    """Outcome of one method: final population (sorted best-first) and its evals."""

    name: str
    problem: JointProblem
    values: torch.Tensor
    evals: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    n_evaluations: int = 0
    wall_s: float = 0.0
    archive: "ParetoArchive | None" = None  # non-dominated designs over every evaluation

    def metric(self, name: str) -> torch.Tensor:
        return self.evals[:, self.problem.column(name)]

    def best_metrics(self) -> dict[str, Any]:
        i = self.problem.best_index(self.evals)
        out: dict[str, Any] = {c: float(self.evals[i, self.problem.column(c)]) for c in METRIC_COLUMNS}
        out["objective"] = float(self.evals[i, 0])
        out["cv"] = float(self.evals[i, self.problem.cv_column])
        out["feasible"] = bool(self.evals[i, self.problem.cv_column] <= 0)
        out["reason"] = REASONS[int(out.pop("reason_code"))]
        return out


class ParetoArchive:
    """Feasible designs not dominated in (EDAP min, accuracy max) among *all* evaluated designs
    (the final population of a single-objective run holds little of that front)."""

    def __init__(self, problem: JointProblem, values: torch.Tensor | None = None, evals: torch.Tensor | None = None):
        self.problem = problem
        self.values = values
        self.evals = evals

    def add(self, values: torch.Tensor, evals: torch.Tensor) -> None:
        p = self.problem
        if self.values is not None:
            values = torch.cat([self.values, values.to(self.values.device)])
            evals = torch.cat([self.evals, evals.to(self.evals.device)])
        feasible = evals[:, p.cv_column] <= 0
        edap, acc = evals[:, p.column("edap_j_s_mm2")], evals[:, p.column("accuracy")]
        keep = pareto_mask(edap, acc, feasible).nonzero().reshape(-1)
        keep = keep[torch.argsort(edap[keep], stable=True)]
        keep = keep[first_occurrence(torch.stack([edap[keep], acc[keep]], dim=1))]
        self.values, self.evals = values[keep].clone(), evals[keep].clone()

    def state(self) -> dict[str, Any]:
        return {"values": None if self.values is None else self.values.cpu(),
                "evals": None if self.evals is None else self.evals.cpu()}

