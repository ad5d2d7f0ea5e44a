"""Objectives of the joint search, all minimised, computed from batched metrics.

The reference family (``docs/reference/cimnas-reference-code.md`` §1.5): ``e``, ``l``, ``a``,
``el``, ``ela`` (EDAP), ``e_acc``, ``l_acc``, ``a_acc``, ``el_acc``, ``ela_acc`` (= E·L·A / Acc, the
default). Units: energy in J, latency in s, area in mm² (the reference uses cm²; a constant factor
that changes no ranking), accuracy as a fraction.

The paper's *priority-based* objective is not in the released code and its formula is unknown
(§1.5 [unv]). Two hypotheses are offered and labelled as such:

- ``priority``: weighted exponents ``E^a · L^b · A^c / Acc^d`` (the unused ``coeff_*`` hooks of
  the reference code point this way), computed in log space;
- ``lexicographic``: metrics compared in priority order, each bucketed with a tolerance (a design
  is better if it wins the first metric by more than its tolerance, else the next metric decides).

``pareto`` is the two-objective mode: EDAP (min) and accuracy (max), ranked by NSGA-II.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch

#: Exponents (energy, latency, area, accuracy) of the reference's objectives; value = E^e L^l A^a / Acc^acc.
REFERENCE_OBJECTIVES: dict[str, tuple[float, float, float, float]] = {
    "e": (1, 0, 0, 0), "l": (0, 1, 0, 0), "a": (0, 0, 1, 0),
    "el": (1, 1, 0, 0), "ela": (1, 1, 1, 0),
    "e_acc": (1, 0, 0, 1), "l_acc": (0, 1, 0, 1), "a_acc": (0, 0, 1, 1),
    "el_acc": (1, 1, 0, 1), "ela_acc": (1, 1, 1, 1),
}

#: Stage-1 proxy of the two-stage baseline: stored weight bits per unit accuracy (no hardware).
PROXY_OBJECTIVES = ("bits_acc", "acc")

MODES = (*REFERENCE_OBJECTIVES, *PROXY_OBJECTIVES, "priority", "lexicographic", "pareto")

#: Metric names usable in ``lexicographic.order`` (minimised forms; ``accuracy`` means 1 - acc).
LEX_METRICS = ("accuracy", *REFERENCE_OBJECTIVES)


class ObjectiveError(ValueError):
    pass


@dataclass
class ObjectiveConfig:
    """Which objective to minimise.

    Attributes:
        name: one of ``e, l, a, el, ela, e_acc, l_acc, a_acc, el_acc, ela_acc`` (reference family),
            ``priority`` / ``lexicographic`` (hypotheses of the paper's unreleased priority-based
            objective), ``pareto`` (EDAP vs accuracy), or ``bits_acc`` / ``acc`` (network-only
            proxies used by the two-stage baseline's first stage).
        weights: exponents for ``priority``: value = E^energy · L^latency · A^area / Acc^accuracy.
        order: metric priority for ``lexicographic`` (``accuracy`` or any reference objective name).
        tolerance: per entry of ``order``: absolute accuracy points for ``accuracy`` (0.005 = half a
            point), relative for cost metrics (0.1 = within 10 % counts as a tie); 0 = exact.
    """

    name: str = "ela_acc"
    weights: dict[str, float] = field(default_factory=lambda: {"energy": 1.0, "latency": 1.0, "area": 1.0, "accuracy": 1.0})
    order: list[str] = field(default_factory=lambda: ["accuracy", "ela"])
    tolerance: list[float] = field(default_factory=lambda: [0.005, 0.0])

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ObjectiveError(f"objective.name={self.name!r} is not allowed; allowed values: {list(MODES)}")
        unknown = sorted(set(self.weights) - {"energy", "latency", "area", "accuracy"})
        if unknown:
            raise ObjectiveError(f"objective.weights has unknown keys {unknown}; allowed keys: energy, latency, area, accuracy")
        if self.name == "lexicographic":
            for m in self.order:
                if m not in LEX_METRICS:
                    raise ObjectiveError(f"objective.order entry {m!r} is not allowed; allowed values: {list(LEX_METRICS)}")
            if len(self.tolerance) != len(self.order):
                raise ObjectiveError(
                    f"objective.tolerance has {len(self.tolerance)} entries; objective.order has {len(self.order)}")
            if any(t < 0 for t in self.tolerance):
                raise ObjectiveError("objective.tolerance entries must be >= 0")

    @property
    def is_pareto(self) -> bool:
        return self.name == "pareto"

    @property
    def senses(self) -> list[str]:
        """EvoTorch objective senses of the values :func:`objective_values` returns."""
        return ["min", "max"] if self.is_pareto else ["min"]

    @property
    def num_keys(self) -> int:
        """Number of lexicographic sort keys (1 except for ``lexicographic``)."""
        return len(self.order) if self.name == "lexicographic" else 1

    @property
    def uses_hardware(self) -> bool:
        return self.name not in PROXY_OBJECTIVES

    def label(self) -> str:
        if self.name == "priority":
            w = self.weights
            return (f"priority E^{w.get('energy', 0):g} L^{w.get('latency', 0):g} A^{w.get('area', 0):g}"
                    f" / Acc^{w.get('accuracy', 0):g} (hypothesis)")
        if self.name == "lexicographic":
            return "lexicographic " + " > ".join(f"{m}(tol {t:g})" for m, t in zip(self.order, self.tolerance)) + " (hypothesis)"
        return self.name


def _log_product(metrics: Mapping[str, torch.Tensor], exps: tuple[float, float, float, float]) -> torch.Tensor:
    e, l, a, acc = exps
    tiny = 1e-300
    log_value = torch.zeros_like(metrics["energy_j"], dtype=torch.float64)
    for exponent, key in ((e, "energy_j"), (l, "latency_s"), (a, "area_mm2")):
        if exponent:
            log_value = log_value + exponent * metrics[key].double().clamp_min(tiny).log()
    if acc:
        log_value = log_value - acc * metrics["accuracy"].double().clamp_min(tiny).log()
    return log_value


def objective_keys(config: ObjectiveConfig, metrics: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sort keys ``[B, K]`` (minimised lexicographically) or, for ``pareto``, ``[B, 2]`` =
    (EDAP, accuracy) with senses (min, max). Non-finite inputs give ``+inf`` (or ``-inf`` accuracy)."""
    name = config.name
    if name in REFERENCE_OBJECTIVES:
        keys = _log_product(metrics, REFERENCE_OBJECTIVES[name]).exp().unsqueeze(1)
    elif name == "priority":
        w = config.weights
        exps = (w.get("energy", 0.0), w.get("latency", 0.0), w.get("area", 0.0), w.get("accuracy", 0.0))
        keys = _log_product(metrics, exps).exp().unsqueeze(1)
    elif name == "bits_acc":
        keys = (metrics["weight_bits"].double() / metrics["accuracy"].double().clamp_min(1e-300)).unsqueeze(1)
    elif name == "acc":
        keys = (1.0 - metrics["accuracy"].double()).unsqueeze(1)
    elif name == "lexicographic":
        cols = []
        for metric, tol in zip(config.order, config.tolerance):
            if metric == "accuracy":
                err = 1.0 - metrics["accuracy"].double()
                cols.append(torch.floor(err / tol) if tol > 0 else err)
            else:
                value = _log_product(metrics, REFERENCE_OBJECTIVES[metric])
                cols.append(torch.floor(value / math.log1p(tol)) if tol > 0 else value.exp())
        keys = torch.stack(cols, dim=1)
    elif name == "pareto":
        edap = _log_product(metrics, REFERENCE_OBJECTIVES["ela"]).exp()
        keys = torch.stack([edap, metrics["accuracy"].double()], dim=1)
    else:  # pragma: no cover - guarded by ObjectiveConfig
        raise ObjectiveError(f"unknown objective {name!r}")
    bad = ~torch.isfinite(keys).all(dim=1, keepdim=True)
    if name == "pareto":
        worst = torch.tensor([math.inf, -math.inf], dtype=keys.dtype, device=keys.device)
        return torch.where(bad, worst.expand_as(keys), keys)
    return torch.where(bad, torch.full_like(keys, math.inf), keys)


__all__ = ["MODES", "ObjectiveConfig", "ObjectiveError", "REFERENCE_OBJECTIVES", "objective_keys"]
