"""The search's constraints, handled by constraint domination (never a silent score).

Whole-network capacity (required cells <= available cells) and chip area <= budget (default
800 mm² = the reference's 8 cm²), and optionally an accuracy floor (:class:`ConstraintConfig`,
resolved against the accuracy source by
:func:`cimnas.search.evaluator.resolve_accuracy_floor`). The total violation is
the sum of relative violations, ``max(0, required/available - 1) + max(0, area/budget - 1)`` (+
the floor's), so cells and mm² add up without a unit clash. A design that cannot be evaluated gets
:data:`FAILED_CV`; each design's reason code (:data:`REASONS`) names what it violates.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Constraint violation given to designs that could not be evaluated.
FAILED_CV = 1e30

#: Reason codes stored per design (``reason_code`` column); the accuracy-floor codes come after
#: ``evaluation_failed`` so the codes of searches without a floor stay what they were.
REASONS = ("ok", "capacity", "area", "capacity+area", "evaluation_failed",
           "accuracy", "capacity+accuracy", "area+accuracy", "capacity+area+accuracy")
#: reason code of each violation bit mask (1 capacity, 2 area, 4 accuracy floor)
CODE_OF_MASK = (0, 1, 2, 3, 5, 6, 7, 8)
#: Where a relative accuracy floor is measured: subnets of the space at its highest bit width.
ACCURACY_REFERENCES = ("largest", "median", "smallest")


@dataclass
class ConstraintConfig:
    """Constraints handled by constraint domination.

    Attributes:
        area_budget_mm2: chip-area budget (reference: 8 cm² = 800 mm²); null disables it.
        capacity: require the whole network's weights to fit on chip (weight-stationary).
        min_accuracy: accuracy floor as a fraction (0.85 = 85 %); null: none.
        min_accuracy_quantile: accuracy floor at this quantile of the accuracy source's values over
            ``floor_samples`` uniformly random designs of the space (0.9: a design must be
            predicted at least as accurate as 90 % of the space) — a floor that adapts to the
            data set and the predictor; null: none.
        max_accuracy_drop: accuracy floor this far (fraction; 0.01 = 1 point) below the
            ``accuracy_reference`` subnet at the space's highest bit width; null: none.
        accuracy_reference: ``largest``, ``median`` or ``smallest`` (for ``max_accuracy_drop``).
        floor_samples: random designs for ``min_accuracy_quantile`` (drawn with ``floor_seed``).
        floor_seed: seed of those designs (fixed, so the floor does not move with the GA seed).

    With several floors the highest applies. A design below the floor violates it by
    ``(floor - accuracy) / floor``, added to the total violation like capacity and area.
    """

    area_budget_mm2: float | None = 800.0
    capacity: bool = True
    min_accuracy: float | None = None
    min_accuracy_quantile: float | None = None
    max_accuracy_drop: float | None = None
    accuracy_reference: str = "largest"
    floor_samples: int = 4096
    floor_seed: int = 0

    def __post_init__(self) -> None:
        if self.area_budget_mm2 is not None and self.area_budget_mm2 <= 0:
            raise ValueError(f"constraints.area_budget_mm2={self.area_budget_mm2} must be positive or null")
        if self.min_accuracy is not None and not 0.0 < self.min_accuracy <= 1.0:
            raise ValueError(f"constraints.min_accuracy={self.min_accuracy} must be a fraction in (0, 1] or null")
        if self.min_accuracy_quantile is not None and not 0.0 <= self.min_accuracy_quantile <= 1.0:
            raise ValueError(f"constraints.min_accuracy_quantile={self.min_accuracy_quantile} must be in [0, 1] or null")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop < 1.0:
            raise ValueError(f"constraints.max_accuracy_drop={self.max_accuracy_drop} must be in [0, 1) or null")
        if self.accuracy_reference not in ACCURACY_REFERENCES:
            raise ValueError(f"constraints.accuracy_reference={self.accuracy_reference!r} is not allowed; "
                             f"allowed values: {list(ACCURACY_REFERENCES)}")
        if self.floor_samples < 1:
            raise ValueError(f"constraints.floor_samples={self.floor_samples} must be >= 1")

    @property
    def has_accuracy_floor(self) -> bool:
        return any(v is not None for v in (self.min_accuracy, self.min_accuracy_quantile, self.max_accuracy_drop))


__all__ = ["ACCURACY_REFERENCES", "CODE_OF_MASK", "FAILED_CV", "REASONS", "ConstraintConfig"]
