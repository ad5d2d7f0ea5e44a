"""Typed configuration of ``search.py`` (one dataclass tree, loaded by jsonargparse from YAML +
dotted overrides, the same style as ``train.py``'s LightningCLI)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from cimnas.search.constraints import ConstraintConfig
from cimnas.search.ga import GAConfig
from cimnas.search.objectives import ObjectiveConfig

MODES = ("joint", "hardware_only", "two_stage", "random", "fixed", "compare")

#: Default artifacts shipped with the package (Fashion-MNIST, ``apq_mbv2_tiny``).
DEFAULT_PREDICTOR = "cimnas/artifacts/fmnist/predictor_rank.pt"  # ranking predictor (rank_fit); APQ layout: predictor.pt
DEFAULT_VALUE_STATS = "cimnas/artifacts/fmnist/value_stats.pt"

#: The reference's single-design check hardware ("baseline-like", ``cimnas-reference-code.md`` §1.8):
#: 0.7 V, 4 bits/cell, 4 ns, 128x128, router groups 8, tiles 16, macros 16, GLB 16384 words.
REFERENCE_BASELINE_HARDWARE: dict[str, float] = {
    "voltage": 0.7, "bits_per_cell": 4, "cycle_s": 4e-9, "rows": 128, "cols": 128,
    "router_groups": 8, "tiles_per_group": 16, "macros_per_tile": 16, "glb_depth_words": 16384,
}


#: The default objective of ``python search.py``: EDAP, with accuracy as a floor constraint.
DEFAULT_OBJECTIVE = "ela"
#: Quantile of the predictor's accuracies over random designs that sets the default floor.
DEFAULT_ACCURACY_QUANTILE = 0.9

@dataclass
class ExpertDesign:
    """A fixed design evaluated as is: a network (``baseline_like`` / ``largest`` / ``smallest``,
    a design JSON path, or ``{architecture, quantization}``) on hardware given as gene values
    (genes not listed take the value of :data:`REFERENCE_BASELINE_HARDWARE` or the first option)."""

    name: str = "baseline_like"
    network: Union[str, dict] = "baseline_like"
    hardware: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputConfig:
    """Attributes:
        dir: results folder (best.json, population.csv, pareto.csv, generations.csv, plots, checkpoint).
        checkpoint_every: write ``checkpoint.pt`` every N generations (and at the end).
        plots: write convergence, Pareto and breakdown plots.
        progress: show a progress bar with the best objective.
        overwrite: replace the results of a search with another configuration in ``dir``
            (without it such a folder is refused; a folder of the same configuration resumes).
        finish: where the figures and an offline W&B run are written once the results are
            (:mod:`cimnas.search.finish`): ``background`` (a detached worker; the command returns
            at once), ``inline`` (in this process, before it returns) or ``auto`` (background for
            the ``search.py`` command, inline for a Python call); ``$CIMNAS_SEARCH_FINISH`` overrides.
    """

    dir: str = "results/default"
    checkpoint_every: int = 1
    plots: bool = True
    progress: bool = True
    overwrite: bool = False
    finish: Literal["auto", "inline", "background"] = "auto"


@dataclass
class WandbConfig:
    """W&B logging; the ``WANDB_MODE`` environment variable, when set, overrides ``mode``."""

    mode: Literal["online", "offline", "disabled"] = "offline"
    project: str = "cimnas"
    name: Optional[str] = None
    group: str = "search"


@dataclass
class SearchConfig:
    """The whole search job.

    Attributes:
        mode: ``joint`` (network x quantization x hardware), ``hardware_only`` (fixed network),
            ``two_stage`` (network + quantization by an accuracy/size proxy, then hardware),
            ``random`` (uniform random designs, same number of evaluations), ``fixed`` (evaluate
            ``experts``) or ``compare`` (all of them, plus a comparison table).
        space: search-space preset name (``apq_mbv2_tiny``, ``apq_mbv2``, ``ofa_mbv3``, ``ofa_resnet50``,
            ``ofa_resnet50_tiny``; ``cimnas.space.PRESETS``) or a full
            space description (``SearchSpace`` fields: stages, kernel / depth / bit choices, ...).
        hardware: hardware-space YAML (gene order and option lists), e.g. ``configs/hw/reference.yaml``.
        predictor: accuracy-predictor checkpoint.
        value_stats: per-slot layer value statistics for the cost model (``python -m
            cimnas.search.value_stats``); null: the cost model's typical per-role histograms.
        objective / constraints / ga: see their classes. Default: minimum EDAP (``ela``) subject to
            an accuracy floor at the 0.9 quantile of the predictor's accuracies over random designs
            of the space (``constraints.min_accuracy_quantile``) besides capacity and area, so the
            predictor decides which designs may compete (docs/search.md, "The default objective");
            the reference's ``ela_acc`` (E·L·A / Acc) is ``--objective.name ela_acc
            --constraints.min_accuracy_quantile null``.
        network: the fixed network of ``hardware_only`` (default: the reference's baseline-like MobileNetV2).
        experts: fixed designs of ``fixed`` / ``compare``; the first is the reference point for
            EDAP ratios and the breakdown plot. null = the reference's baseline-like design
            (baseline-like MobileNetV2, all 8-bit, on :data:`REFERENCE_BASELINE_HARDWARE`).
        compare_methods: methods run by ``compare``.
        device: ``cpu`` or ``cuda`` (population, predictor and cost model).
        reference_compat: the cost model's reference-compatibility switch.
        hw_compile: the fused (``torch.compile``) cost kernel: true, false or ``auto`` (on when
            popsize x generations repays the compile, :func:`cimnas.hw.cost_compile.compile_pays_off`).
        predictor_hidden_dtype: opt-in lower precision of the accuracy predictor: ``bfloat16`` runs
            the ranking predictor's ensemble members (an APQ-layout predictor: its hidden layers)
            in bf16, the rest in float32 (measured 1.3x faster prediction on a CPU with
            avx512_bf16; Kendall tau >= 0.999 against float32 and the same top 100 on the shipped
            records, tests/test_predictor_rank.py, tests/test_hw_speed.py); null (default): float32.
        num_actors: evaluate with this many EvoTorch Ray actors (null: in-process).
        num_gpus_per_actor: GPUs given to each actor (e.g. 1); an actor with a GPU evaluates its
            piece of the population there.
        threads: torch CPU threads (``torch.set_num_threads``); the per-generation tensors are
            small, so one thread is fastest (about 10x faster than 2 threads on a busy 2-core
            machine); null keeps torch's default.
        resume: continue from ``output.dir/checkpoint.pt`` (same config required).
        variation: device-variation model file (``python -m cimnas.experiments.variation fit``); when
            set, the objective uses the accuracy under RRAM conductance variation (the predictor's
            accuracy times the model's retention at the design's bits per cell and weight bits).
    """

    mode: Literal["joint", "hardware_only", "two_stage", "random", "fixed", "compare"] = "joint"
    space: Union[str, dict] = "apq_mbv2_tiny"
    hardware: str = "configs/hw/reference.yaml"
    predictor: str = DEFAULT_PREDICTOR
    value_stats: Optional[str] = DEFAULT_VALUE_STATS
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(name=DEFAULT_OBJECTIVE))
    constraints: ConstraintConfig = field(default_factory=lambda: ConstraintConfig(
        min_accuracy_quantile=DEFAULT_ACCURACY_QUANTILE))
    ga: GAConfig = field(default_factory=GAConfig)
    network: Union[str, dict] = "baseline_like"
    experts: Optional[list[ExpertDesign]] = None
    compare_methods: list[str] = field(default_factory=lambda: ["joint", "hardware_only", "two_stage", "random", "fixed"])
    output: OutputConfig = field(default_factory=OutputConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    device: str = "cpu"
    reference_compat: bool = False
    hw_compile: Union[bool, Literal["auto"]] = "auto"
    predictor_hidden_dtype: Optional[Literal["bfloat16"]] = None
    num_actors: Optional[int] = None
    num_gpus_per_actor: Optional[float] = None
    threads: Optional[int] = 1
    resume: bool = False
    variation: Optional[str] = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not allowed; allowed values: {list(MODES)}")
        for m in self.compare_methods:
            if m not in MODES or m == "compare":
                raise ValueError(f"compare_methods entry {m!r} is not allowed; allowed values: {list(MODES[:-1])}")
        if self.output.checkpoint_every < 1:
            raise ValueError(f"output.checkpoint_every={self.output.checkpoint_every} must be >= 1")

    @property
    def expert_designs(self) -> list[ExpertDesign]:
        return list(self.experts) if self.experts is not None else [ExpertDesign()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that determines the search trajectory (not output / logging / resume)."""
        d = self.to_dict()
        for key in ("output", "wandb", "resume", "device", "num_actors", "num_gpus_per_actor", "threads"):
            d.pop(key, None)
        if d.get("predictor_hidden_dtype") is None:  # the default: fingerprints from before the option
            d.pop("predictor_hidden_dtype", None)
        if isinstance(d.get("ga"), dict) and d["ga"].get("offspring") is None:  # likewise (null = popsize)
            d["ga"].pop("offspring", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


__all__ = ["ExpertDesign", "OutputConfig", "REFERENCE_BASELINE_HARDWARE", "SearchConfig", "WandbConfig"]
