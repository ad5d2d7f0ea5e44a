"""The joint search as a vectorized EvoTorch :class:`~evotorch.Problem`.

One call scores the whole population: ``genome [N, G] -> DesignEvaluator -> objective keys``.
Evaluation columns (``batch.evals``): the objective values (1, or 2 for the Pareto mode: EDAP
min, accuracy max), then the eval data ``cv`` (total constraint violation, 0 = feasible), the
extra lexicographic keys, and every metric of :data:`~cimnas.search.evaluator.METRIC_COLUMNS`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from evotorch import Problem, SolutionBatch

from cimnas.search.constraints import REASONS
from cimnas.search.evaluator import METRIC_COLUMNS, DesignEvaluator, Evaluation
from cimnas.search.objectives import ObjectiveConfig, objective_keys
from cimnas.search.operators import first_index


#: Rows per piece when a large population is evaluated on the CPU: the pieces' temporaries are
#: reused from the heap instead of being mapped (and page-faulted) afresh, and stay cache-warm
#: (at 1e5 designs: 0.2-1 s of page-fault system time per call before, none after). A multiple
#: of the rank predictor's 4,096-row chunks, so every piece of the pipeline sees the same row
#: chunks as one whole-batch call; every result is per row: the same evaluations (tested).
EVAL_CHUNK_ROWS = 8192


class JointProblem(Problem):
    """Args:
        evaluator: :class:`DesignEvaluator` of the joint genome.
        objective: :class:`ObjectiveConfig`.
        fixed_genes: ``{gene index: option index}`` frozen during the search (baselines).
        device: where the population lives and is evaluated (``cpu`` / ``cuda``).
        num_actors: EvoTorch Ray actors (``None``: evaluate in-process). With actors the population
            stays on the CPU; each actor evaluates a piece vectorized (see docs/search.md).
    """

    def __init__(self, evaluator: DesignEvaluator, objective: ObjectiveConfig, *, fixed_genes: dict[int, int] | None = None,
                 device: str | torch.device = "cpu", num_actors: int | str | None = None,
                 num_gpus_per_actor: float | str | None = None):
        self.evaluator = evaluator
        self.objective = objective
        self.eval_chunk_rows: int | None = EVAL_CHUNK_ROWS  # None: one piece
        genome = evaluator.genome
        lower = torch.zeros(genome.length, dtype=torch.long)
        upper = genome.upper_bounds().clone()
        for index, value in (fixed_genes or {}).items():
            if not 0 <= value <= int(upper[index]):
                gene = genome.genes[index]
                raise ValueError(f"fixed gene {gene.name}: index {value} outside 0..{int(upper[index])}")
            lower[index] = value
            upper[index] = value
        self.num_objectives = len(objective.senses)
        self.extra_keys = objective.num_keys - 1 if not objective.is_pareto else 0
        self.data_columns = ["cv", *[f"key{i + 1}" for i in range(self.extra_keys)], *METRIC_COLUMNS]
        self.eval_columns = (["edap_j_s_mm2_objective", "accuracy_objective"] if objective.is_pareto
                             else [f"objective_{objective.name}"]) + self.data_columns
        self.cv_column = self.num_objectives
        self.key_columns = [0] + [self.num_objectives + 1 + i for i in range(self.extra_keys)]
        actor_kwargs: dict[str, Any] = {}
        if num_actors is not None:
            actor_kwargs["num_actors"] = num_actors
            if num_gpus_per_actor is not None:
                actor_kwargs["num_gpus_per_actor"] = num_gpus_per_actor
        super().__init__(
            objective.senses if objective.is_pareto else objective.senses[0],
            solution_length=genome.length, dtype=torch.int64, bounds=(lower.tolist(), upper.tolist()), eval_dtype=torch.float64,
            eval_data_length=len(self.data_columns), device=device, store_solution_stats=False, **actor_kwargs,
        )

    @property
    def linked_genes(self) -> list[int]:
        """Genes whose joint two-gene moves the GA's final local polish tries (the free hardware
        genes: total macros are a product of three of them, and re-splitting that product needs
        two genes changed together)."""
        free = (self.upper_bounds > self.lower_bounds).tolist()
        return [i for i in range(self.evaluator.genome.num_hw) if free[i]]

    def network_keys(self, values: torch.Tensor) -> torch.Tensor:
        """``long [N, K]``: equal rows for genomes that decode to the same network and bit widths
        (the depths, the resolution, the active blocks' kernel, width and bits; genes of skipped
        blocks and the hardware genes ignored)."""
        genome = self.evaluator.genome
        arch = genome.decode_arch(values.long())
        active = arch.active_blocks(genome.space)
        return torch.cat([
            arch.depths, arch.resolution.unsqueeze(1), arch.kernels * active, arch.hidden * active,
            (arch.bits * active.unsqueeze(-1)).flatten(1),
        ], dim=1)

    def network_ids(self, values: torch.Tensor) -> torch.Tensor:
        """``long [N]``: the index of the first genome with the same network (see :meth:`network_keys`)."""
        return first_index(self.network_keys(values))

    def column(self, name: str) -> int:
        """Index of a named column in ``batch.evals``."""
        return self.eval_columns.index(name)

    # ------------------------------------------------------------------ what the GA's status reports
    #: failure reasons by ``reason_code`` (0 = ok)
    reasons = REASONS

    def reason_codes(self, evals: torch.Tensor) -> torch.Tensor:
        """``long [N]``: the failure reason code of each row of ``evals`` (index into :attr:`reasons`)."""
        return evals[:, self.column("reason_code")].long()

    def report_objective(self, evals: torch.Tensor) -> torch.Tensor:
        """``[N]``: the objective a run reports per design: the objective value, or in the Pareto
        mode EDAP / accuracy (J·s·mm² per unit accuracy; the best compromise minimises it)."""
        if self.objective.is_pareto:
            return evals[:, self.column("edap_j_s_mm2")] / evals[:, self.column("accuracy")]
        return evals[:, 0]

    def best_index(self, evals: torch.Tensor) -> int:
        """Row of the single best design: the first in survival order, or in the Pareto mode the
        feasible design with the lowest EDAP / accuracy (the front's best compromise)."""
        if not self.objective.is_pareto:
            return 0
        feasible = evals[:, self.cv_column] <= 0
        if not feasible.any():
            return 0
        ratio = evals[:, self.column("edap_j_s_mm2")] / evals[:, self.column("accuracy")].clamp_min(1e-12)
        return int(torch.where(feasible, ratio, torch.full_like(ratio, math.inf)).argmin())

    def evaluation_to_evals(self, ev: Evaluation) -> torch.Tensor:
        """Objective values + eval data ``[N, M + D]`` of an :class:`Evaluation`."""
        keys = objective_keys(self.objective, ev.metrics)
        objs = keys[:, : self.num_objectives]
        parts = [objs, ev.cv.unsqueeze(1)]
        if self.extra_keys:
            parts.append(keys[:, 1:])
        parts.append(ev.columns())
        return torch.cat(parts, dim=1)

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        device = None
        if self.is_remote and self._num_gpus_per_actor:
            # a Ray actor that owns a GPU evaluates its piece there (population stays on the CPU)
            device = torch.device(self.aux_device)
            if getattr(self, "_moved_to", None) != device:
                self.evaluator.to(device)
                self._moved_to = device
        n = len(batch)
        step = max(n, 1)
        if self.eval_chunk_rows and batch.values.device.type == "cpu" and device is None:
            step = min(step, self.eval_chunk_rows)
        parts = []
        for start in range(0, max(n, 1), step):
            genome = batch.values[start:start + step].clone().long()
            if device is not None:
                genome = genome.to(device)
            parts.append(self.evaluation_to_evals(self.evaluator.evaluate(genome)))
        evals = parts[0] if len(parts) == 1 else torch.cat(parts)
        batch.set_evals(evals.to(batch.device, batch.eval_dtype))

    def sample_initial(self, n: int, generator: torch.Generator, max_rounds: int = 50) -> torch.Tensor:
        """Capacity-feasible, distinct initial genomes within this problem's bounds."""
        lower = self.lower_bounds.to(generator.device).long()
        upper = self.upper_bounds.to(generator.device).long()
        return self.evaluator.sample_capacity_feasible(n, lower, upper, generator, max_rounds=max_rounds)


__all__ = ["JointProblem"]
