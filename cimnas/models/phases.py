"""Progressive-shrinking phases: which part of the space a training phase samples and how
(:class:`PhaseSpec`), and OFA's default order."""

from __future__ import annotations

from dataclasses import dataclass


HIDDEN_MODES = ("max", "upper", "all")


#: How a phase picks the subnets of one training step (see :class:`PhaseSpec`).
SAMPLERS = ("sandwich", "random")


@dataclass
class PhaseSpec:
    """One progressive-shrinking phase: which part of the space is sampled, and how it trains.

    ``kernels`` / ``depths`` restrict the space's choices (None = all); ``hidden`` is ``max``
    (largest hidden width only), ``upper`` (the upper half of each block's choices) or ``all``;
    ``quantize`` samples bit widths together with architectures. ``subnets_per_step`` subnets
    are trained per batch: ``sampler='sandwich'`` takes the phase's largest and smallest, then
    random ones; ``sampler='random'`` takes them all at random (OFA's ``dynamic_batch_size``: 1,
    2 and 4 random subnets per step in the kernel, depth and width phases, no sandwich; OFA
    §3.1, docs/reference/ofa-predictor.md). ``kd`` distils each non-largest subnet from the
    phase's largest one (with ``random``, a no-grad forward of the largest gives the targets). ``sort_channels`` re-sorts hidden channels by
    importance when the phase starts (OFA §2.3). ``lr`` is the peak learning rate, decayed by a
    cosine over the phase after ``warmup_epochs`` of linear warm-up.
    """

    name: str
    epochs: int = 1
    kernels: list[int] | None = None
    depths: list[int] | None = None
    hidden: str = "all"
    quantize: bool = False
    subnets_per_step: int = 1
    kd: bool = True
    sort_channels: bool = False
    lr: float = 0.05
    warmup_epochs: float = 0.0
    sampler: str = "sandwich"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"phase {self.name!r}: sampler={self.sampler!r} is not allowed; allowed values: {list(SAMPLERS)}")
        if self.hidden not in HIDDEN_MODES:
            raise ValueError(f"phase {self.name!r}: hidden={self.hidden!r} is not allowed; allowed values: {list(HIDDEN_MODES)}")
        if self.epochs < 0:
            raise ValueError(f"phase {self.name!r}: epochs={self.epochs} must be >= 0")
        if self.subnets_per_step < 1:
            raise ValueError(f"phase {self.name!r}: subnets_per_step={self.subnets_per_step} must be >= 1")


def default_phases() -> list[PhaseSpec]:
    """The progressive-shrinking order (full → kernel → depth → width → quantization-aware),
    one epoch each; configs scale epochs and learning rates."""
    return [
        PhaseSpec("full", kernels=[7], depths=[4], hidden="max", subnets_per_step=1, kd=False, lr=0.1),
        PhaseSpec("kernel", depths=[4], hidden="max", subnets_per_step=2, lr=0.03),
        PhaseSpec("depth", hidden="max", subnets_per_step=2, lr=0.03),
        PhaseSpec("width", hidden="all", subnets_per_step=4, sort_channels=True, lr=0.03),
        PhaseSpec("quant", hidden="all", subnets_per_step=4, quantize=True, lr=0.01),
    ]


def _phase_by_name(name: str) -> PhaseSpec:
    table = {p.name: p for p in default_phases()}
    if name not in table:
        raise ValueError(f"phase={name!r} is not allowed; allowed values: {sorted(table)}")
    return table[name]
