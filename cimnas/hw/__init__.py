"""Batched CIM hardware cost model (a torch re-implementation of the CiMLoop stack CIMNAS uses).

Plain workloads in, costs out; this package knows no network. Public API: :class:`Workload`,
:class:`HardwareParams` / :class:`HardwareBatch` / :class:`HardwareSpace`, and :func:`evaluate`
/ :func:`evaluate_rows` -> :class:`CostResult`. Workloads come from
:func:`cimnas.search.lowering.workload_from_arch` (architectures) or
:func:`cimnas.models.workload_trace.workload_from_module` (a real network). Commands:
``python -m cimnas.experiments.hw_evaluate`` and ``python -m cimnas.hw.validate``. Model, sources
and calibration: ``docs/cost_model.md``.
"""

from cimnas.hw.cost_model import evaluate, evaluate_rows
from cimnas.hw.result import COMPONENTS, REASONS, CostResult
from cimnas.hw.params import FIELDS, HardwareBatch, HardwareError, HardwareParams, HardwareSpace
from cimnas.hw.workload import LAYER_KINDS, Workload, WorkloadError

__all__ = [
    "COMPONENTS", "REASONS", "CostResult", "evaluate", "evaluate_rows", "FIELDS", "HardwareBatch",
    "HardwareError", "HardwareParams", "HardwareSpace", "LAYER_KINDS", "Workload", "WorkloadError",
]
