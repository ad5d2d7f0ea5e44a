"""Search set-up: everything loaded once per job (spaces, genome, value statistics, accuracy
source, evaluator), and hardware genes from named values."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cimnas.hw.params import option_index
from cimnas.space import SearchSpace, get_space
from cimnas.search.config import REFERENCE_BASELINE_HARDWARE, ExpertDesign, SearchConfig
from cimnas.search.designs import resolve_network
from cimnas.search.accuracy import REGENERATE_HINT, ArtifactError, load_predictor
from cimnas.search.evaluator import DesignEvaluator
from cimnas.search.genome import GenomeError, JointGenome

log = logging.getLogger("cimnas.search")



@dataclass
class Setup:
    """Everything loaded once per job."""

    config: SearchConfig
    space: SearchSpace
    hw_space: Any
    genome: JointGenome
    evaluator: DesignEvaluator
    device: torch.device


def load_value_stats(path: str | None, space: SearchSpace) -> Any:
    """Per-slot layer value statistics (``cimnas.search.value_stats``), or the cost model's typical
    per-role histograms when ``path`` is None."""
    if path is None:
        return "typical"
    p = Path(path)
    if not p.exists():
        raise ArtifactError(
            f"layer value statistics {str(p)!r} not found. The default search needs the shipped default "
            f"artifacts; regenerate them with: {REGENERATE_HINT}; or pass --value_stats null to use the cost "
            "model's typical histograms."
        )
    from cimnas.search.value_stats import load_value_stats as read_value_stats

    return read_value_stats(p, space)


def load_hardware_space(path: str) -> Any:
    from cimnas.hw import HardwareSpace

    if not Path(path).is_file():
        raise FileNotFoundError(f"hardware space {path!r} not found; shipped: configs/hw/reference.yaml, configs/hw/paper.yaml")
    return HardwareSpace.from_yaml(path)


def build_setup(config: SearchConfig, accuracy: Any | None = None) -> Setup:
    """Load space, hardware space, predictor and value statistics; ``accuracy`` overrides the
    predictor (tests pass their own :class:`~cimnas.search.accuracy.AccuracySource`)."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but CUDA is not available; use --device cpu")
    space = get_space(config.space)
    hw_space = load_hardware_space(config.hardware)
    genome = JointGenome(space, hw_space)
    if accuracy is None:
        accuracy = load_predictor(config.predictor, device)
        pred_space = getattr(accuracy, "space", None)
        if pred_space is not None and pred_space.name != space.name:
            raise ValueError(f"predictor {config.predictor!r} was trained for space {pred_space.name!r}, "
                             f"but space={space.name!r}")
    if config.predictor_hidden_dtype is not None:
        from cimnas.models.predictor.predictor import set_hidden_dtype

        set_hidden_dtype(accuracy, getattr(torch, config.predictor_hidden_dtype), "predictor_hidden_dtype")
    if config.variation:
        from cimnas.models.variation import RetentionModel
        from cimnas.search.accuracy import NoiseAwareAccuracy

        accuracy = NoiseAwareAccuracy(accuracy, RetentionModel.load(config.variation), space=space)
    value_stats = load_value_stats(config.value_stats, space)
    evaluator = DesignEvaluator(genome, accuracy, config.constraints, value_stats=value_stats,
                                reference_compat=config.reference_compat, hw_compile=config.hw_compile,
                                expected_evaluations=config.ga.popsize * config.ga.generations)
    log.info("%s", genome.describe())
    if evaluator.accuracy_floor is not None:
        log.info("accuracy floor %.4f (constraints: min_accuracy=%s, min_accuracy_quantile=%s, max_accuracy_drop=%s)",
                 evaluator.accuracy_floor, config.constraints.min_accuracy, config.constraints.min_accuracy_quantile,
                 config.constraints.max_accuracy_drop)
    return Setup(config, space, hw_space, genome, evaluator, device)


def hardware_dict(setup: Setup, values: dict[str, Any]) -> dict[str, Any]:
    """Complete a hardware dict: missing genes from the reference baseline, else the first option."""
    out = {}
    for gene in setup.genome.hw_genes:
        if gene.name in values:
            out[gene.name] = values[gene.name]
        elif gene.name in REFERENCE_BASELINE_HARDWARE and _has_option(gene.choices, REFERENCE_BASELINE_HARDWARE[gene.name]):
            out[gene.name] = REFERENCE_BASELINE_HARDWARE[gene.name]
        else:
            out[gene.name] = gene.choices[0]
    unknown = sorted(set(values) - {g.name for g in setup.genome.hw_genes})
    if unknown:
        raise GenomeError(f"hardware keys {unknown} are not genes of {setup.config.hardware}; "
                         f"genes: {[g.name for g in setup.genome.hw_genes]}")
    return out


def _has_option(choices: tuple, value: Any) -> bool:
    return option_index(choices, value) is not None


def expert_genome(setup: Setup, expert: ExpertDesign) -> torch.Tensor:
    arch, policy = resolve_network(setup.space, expert.network)
    return setup.genome.encode_designs([(arch, policy, hardware_dict(setup, expert.hardware))], device=setup.device)
