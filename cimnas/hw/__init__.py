"""Batched CIM hardware cost model (a torch re-implementation of the CiMLoop stack CIMNAS uses).

Public API: :class:`Workload` (+ :func:`workload_from_module`, :func:`workload_from_arch`),
:class:`HardwareParams` / :class:`HardwareBatch` / :class:`HardwareSpace`, and
:func:`evaluate` -> :class:`CostResult`. Commands: ``python -m cimnas.hw.evaluate`` and
``python -m cimnas.hw.validate``. Model, sources and calibration: ``docs/cost_model.md``.
"""

from cimnas.hw.cost_model import COMPONENTS, REASONS, CostResult, evaluate, evaluate_arch
from cimnas.hw.params import FIELDS, HardwareBatch, HardwareError, HardwareParams, HardwareSpace
from cimnas.hw.workload import (LAYER_KINDS, Workload, WorkloadError, workload_from_arch,
                                workload_from_module)

__all__ = [
    "COMPONENTS", "REASONS", "CostResult", "evaluate", "evaluate_arch", "FIELDS", "HardwareBatch", "HardwareError",
    "HardwareParams", "HardwareSpace", "LAYER_KINDS", "Workload", "WorkloadError",
    "workload_from_arch", "workload_from_module",
]
