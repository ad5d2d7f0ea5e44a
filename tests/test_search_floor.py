"""The default objective listens to accuracy: minimum EDAP subject to an accuracy floor
(issue 18). Floors resolve against the accuracy source; designs below it are infeasible by
constraint domination; the shipped predictor and a wrong one lead the default search to
different designs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cimnas.hw import HardwareSpace
from cimnas.search.cli import parse_config
from cimnas.search.config import OutputConfig, WandbConfig
from cimnas.search.constraints import REASONS, ConstraintConfig
from cimnas.search.evaluator import DesignEvaluator, resolve_accuracy_floor
from cimnas.search.ga import GAConfig
from cimnas.search.genome import JointGenome
from cimnas.search.run import run_search
from cimnas.space import Architecture, ArchBatch, QuantPolicy, apq_mbv2_tiny

REPO = Path(__file__).resolve().parents[1]
SHIPPED_QUANT = REPO / "cimnas/artifacts/fmnist/predictor_rank.pt"  # the default search's accuracy source
SHIPPED_FP = REPO / "cimnas/artifacts/fmnist/predictor_fp.pt"


class WidthAccuracy:
    """Deterministic accuracy proxy: rises with mean hidden width and mean bits."""

    def predict(self, arch):
        return (0.6 + 0.001 * arch.hidden.double().mean(1) + 0.01 * arch.bits.double().mean((1, 2))).reshape(-1)


@pytest.fixture(scope="module")
def genome() -> JointGenome:
    return JointGenome(apq_mbv2_tiny(), HardwareSpace.from_yaml(REPO / "configs/hw/reference.yaml"))


def test_floors_resolve_against_the_source_and_the_highest_wins(genome):
    source = WidthAccuracy()
    assert resolve_accuracy_floor(ConstraintConfig(), source, genome) is None
    assert resolve_accuracy_floor(ConstraintConfig(min_accuracy=0.7), source, genome) == 0.7
    q = resolve_accuracy_floor(ConstraintConfig(min_accuracy_quantile=0.75, floor_samples=500, floor_seed=4), source, genome)
    arch = genome.decode_arch(genome.random(500, torch.Generator().manual_seed(4)))
    assert q == pytest.approx(float(torch.quantile(source.predict(arch), 0.75)), rel=0, abs=1e-12)
    space = genome.space
    largest = ArchBatch.from_designs(space, [Architecture.largest(space)], [QuantPolicy.uniform(space, max(space.bit_choices))])
    drop = resolve_accuracy_floor(ConstraintConfig(max_accuracy_drop=0.02), source, genome)
    assert drop == pytest.approx(float(source.predict(largest)[0]) - 0.02)
    both = resolve_accuracy_floor(ConstraintConfig(min_accuracy=0.1, max_accuracy_drop=0.02), source, genome)
    assert both == drop  # the highest floor applies


@pytest.mark.parametrize("field,value", [("min_accuracy", 1.5), ("min_accuracy_quantile", -0.1),
                                         ("max_accuracy_drop", 1.0), ("accuracy_reference", "biggest"),
                                         ("floor_samples", 0)])
def test_bad_floor_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"constraints.{field}"):
        ConstraintConfig(**{field: value})


def test_designs_below_the_floor_are_infeasible_with_a_graded_violation(genome):
    source = WidthAccuracy()
    values = genome.random(300, torch.Generator().manual_seed(1))
    free = DesignEvaluator(genome, source, ConstraintConfig(area_budget_mm2=None)).evaluate(values)
    floor = float(free.metrics["accuracy"].median())
    ev = DesignEvaluator(genome, source, ConstraintConfig(area_budget_mm2=None, min_accuracy=floor)).evaluate(values)
    acc = ev.metrics["accuracy"]
    below = acc < floor
    assert below.any() and (~below).any()
    expected = ((floor - acc) / floor).clamp_min(0)
    assert torch.allclose(ev.metrics["accuracy_violation"], expected)
    assert torch.allclose(ev.cv, free.cv + expected)
    assert not ev.feasible[below].any()
    reasons = {REASONS[int(c)] for c in ev.metrics["reason_code"][below & ~ev.failed]}
    assert reasons <= {"accuracy", "capacity+accuracy", "area+accuracy", "capacity+area+accuracy"}
    # above the floor nothing changes
    assert torch.equal(ev.metrics["reason_code"][~below], free.metrics["reason_code"][~below])


def _default_search(tmp_path: Path, predictor: Path) -> dict:
    config = parse_config(["--config", str(REPO / "configs/search/default.yaml"), f"--predictor={predictor}",
                           f"--output.dir={tmp_path}", "--output.plots=false", "--output.progress=false",
                           "--wandb.mode=disabled", "--ga.popsize=60", "--ga.generations=25",
                           f"--hardware={REPO / 'configs/hw/reference.yaml'}",
                           f"--value_stats={REPO / 'cimnas/artifacts/fmnist/value_stats.pt'}"])
    run_search(config)
    return json.loads((tmp_path / "best.json").read_text()), json.loads((tmp_path / "summary.json").read_text())


def test_default_search_follows_the_predictor_and_keeps_its_floor(tmp_path):
    """The default objective (EDAP under an accuracy floor) ends on different designs with the
    shipped quantization-aware (ranking) predictor and with the float APQ predictor in its place
    (E·L·A/Acc found the same design with both), and the winner meets the floor."""
    best_q, summary_q = _default_search(tmp_path / "quant", SHIPPED_QUANT)
    best_f, summary_f = _default_search(tmp_path / "fp", SHIPPED_FP)
    for best, summary in ((best_q, summary_q), (best_f, summary_f)):
        assert summary["accuracy_floor"] is not None
        assert best["metrics"]["feasible"]
        assert best["metrics"]["accuracy"] >= summary["accuracy_floor"] - 1e-12
    assert summary_q["accuracy_floor"] != summary_f["accuracy_floor"]
    assert (best_q["architecture"], best_q["quantization"]) != (best_f["architecture"], best_f["quantization"])
