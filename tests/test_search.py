"""Joint search end to end on the real cost model: constraint handling, failures, GA progress,
resume, results folder, baselines, CLI. The accuracy source is a random-init APQ predictor
saved to a temporary checkpoint (seeded), never the shipped default."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cimnas.hw.params import HardwareSpace
from cimnas.models.predictor import AccuracyPredictor
from cimnas.space import Architecture, QuantPolicy, apq_mbv2_tiny
from cimnas.search.config import OutputConfig, SearchConfig, WandbConfig
from cimnas.search.constraints import FAILED_CV, REASONS, ConstraintConfig
from cimnas.search.evaluator import DesignEvaluator
from cimnas.search.ga import ConstrainedGA, GAConfig
from cimnas.search.survival import make_batch, survival_order
from cimnas.search.genome import JointGenome
from cimnas.search.objectives import ObjectiveConfig
from cimnas.search.problem import JointProblem
from cimnas.search.run import build_setup, run_ga, run_search

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def predictor_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("artifacts") / "predictor.pt"
    AccuracyPredictor(apq_mbv2_tiny()).save(path)
    return path


@pytest.fixture(scope="module")
def genome() -> JointGenome:
    return JointGenome(apq_mbv2_tiny(), HardwareSpace.from_yaml(REPO / "configs/hw/reference.yaml"))


class FixedAccuracy:
    """Deterministic analytic accuracy proxy (tests only): rises with width and bit widths."""

    def __init__(self, nan_rows_with_kernel7_block0: bool = False):
        self.nan = nan_rows_with_kernel7_block0

    def predict(self, arch):
        acc = 0.5 + 0.002 * arch.hidden.float().mean(1) + 0.02 * arch.bits.float().mean((1, 2)) / 8
        if self.nan:
            acc = torch.where(arch.kernels[:, 0] == 7, torch.full_like(acc, math.nan), acc)
        return acc


def _config(tmp_path: Path, predictor_path: Path, **kw) -> SearchConfig:
    ga = kw.pop("ga", GAConfig(popsize=16, generations=6, seed=3))
    return SearchConfig(predictor=str(predictor_path), value_stats=None, hardware=str(REPO / "configs/hw/reference.yaml"),
                        ga=ga, output=OutputConfig(dir=str(tmp_path / "out"), progress=False, plots=kw.pop("plots", False)),
                        wandb=WandbConfig(mode="disabled"), **kw)


# ---------------------------------------------------------------------- constraints


def test_infeasible_never_ranks_above_feasible(genome):
    evaluator = DesignEvaluator(genome, FixedAccuracy(), ConstraintConfig(area_budget_mm2=800.0))
    values = genome.random(200, torch.Generator().manual_seed(5))
    for objective in (ObjectiveConfig(name="ela_acc"), ObjectiveConfig(name="pareto"),
                      ObjectiveConfig(name="lexicographic", order=["accuracy", "ela"], tolerance=[0.01, 0.0])):
        problem = JointProblem(evaluator, objective)
        batch = make_batch(problem, values)
        problem.evaluate(batch)
        cv = batch.evals[:, problem.cv_column]
        feasible = cv <= 0
        assert 0 < int(feasible.sum()) < 200  # a random population mixes both
        order = survival_order(problem, batch.evals, batch)
        ranked_feasible = feasible[order]
        n = int(feasible.sum())
        assert ranked_feasible[:n].all() and not ranked_feasible[n:].any()
        # infeasible designs are ordered by violation, whatever their (often better) objective
        tail = cv[order][n:]
        assert (tail[1:] >= tail[:-1]).all()
        # every infeasible design has a reason: graded capacity / area violations, or a cost-model
        # failure (e.g. a layer that cannot be mapped onto the chip) with the failure violation
        codes = batch.evals[:, problem.column("reason_code")].long()
        assert set(codes[~feasible].tolist()) <= set(range(1, len(REASONS)))
        assert (codes[feasible] == 0).all()
        assert (cv[codes == REASONS.index("evaluation_failed")] == FAILED_CV).all()
        area = batch.evals[:, problem.column("area_mm2")]
        assert (area[feasible] <= 800.0).all()


def test_failures_are_infeasible_with_reason(genome, monkeypatch, caplog):
    evaluator = DesignEvaluator(genome, FixedAccuracy(nan_rows_with_kernel7_block0=True))
    values = genome.random(60, torch.Generator().manual_seed(1))
    kernel0 = genome.names.index("kernel[0]")
    values[:20, kernel0] = 2  # kernel 7 -> predictor fails for these rows
    # the cost model raising for one specific design must not take the batch down
    original = evaluator.cost
    poison = values[30].clone()

    def flaky_cost(g):
        if (g == poison).all(dim=1).any():
            raise RuntimeError("simulated cost-model crash")
        return original(g)

    monkeypatch.setattr(evaluator, "cost", flaky_cost)
    with caplog.at_level("WARNING", logger="cimnas.search"):
        ev = evaluator.evaluate(values)
    failed = ev.failed
    assert failed[:20].all() and failed[30]
    assert (ev.cv[failed] == FAILED_CV).all() and not ev.feasible[failed].any()
    assert "simulated cost-model crash" in caplog.text and "non-finite" in caplog.text
    # the other rows were evaluated normally (apart from designs the cost model itself cannot map)
    ok = ~failed
    assert int(ok[20:30].sum()) >= 5 and torch.isfinite(ev.metrics["energy_j"][ok]).all()
    # a failure never ranks above a feasible design, even though its objective would be "best" (0 / nan)
    problem = JointProblem(evaluator, ObjectiveConfig())
    batch = make_batch(problem, values)
    problem.evaluate(batch)
    order = survival_order(problem, batch.evals, batch)
    first_failed = int(torch.nonzero(failed[order])[0])
    assert not (batch.evals[order][first_failed:, problem.cv_column] <= 0).any()


def test_cost_model_unevaluable_reason_is_a_failure(genome):
    # a hardware choice with 1-row crossbars of 32 columns on a 4x4x1 chip cannot hold a layer
    evaluator = DesignEvaluator(genome, FixedAccuracy())
    arch, policy = Architecture.largest(genome.space), QuantPolicy.uniform(genome.space, 8)
    hw = {"voltage": 0.5, "bits_per_cell": 1, "cycle_s": 1e-9, "rows": 32, "cols": 32, "router_groups": 1,
          "tiles_per_group": 4, "macros_per_tile": 4, "glb_depth_words": 2048}
    ev = evaluator.evaluate(genome.encode_designs([(arch, policy, hw)]))
    assert not bool(ev.feasible[0])
    assert REASONS[int(ev.metrics["reason_code"][0])] in ("capacity", "capacity+area", "evaluation_failed")


# ---------------------------------------------------------------------- GA


def test_large_batches_are_evaluated_in_pieces_with_the_same_evaluations(genome, predictor_path, tmp_path):
    setup = build_setup(_config(tmp_path, predictor_path))
    problem = JointProblem(setup.evaluator, ObjectiveConfig())
    values = genome.random(45, torch.Generator().manual_seed(4))
    whole, pieces = make_batch(problem, values), make_batch(problem, values)
    problem.eval_chunk_rows = None
    problem.evaluate(whole)
    problem.eval_chunk_rows = 8  # 5 pieces of 8 and one of 5
    problem.evaluate(pieces)
    a, b = whole.evals.as_subclass(torch.Tensor), pieces.evals.as_subclass(torch.Tensor)
    assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def test_capacity_feasible_initial_population_and_ga_improves(genome, predictor_path, tmp_path):
    setup = build_setup(_config(tmp_path, predictor_path))
    problem = JointProblem(setup.evaluator, ObjectiveConfig())
    ga = ConstrainedGA(problem, GAConfig(popsize=24, generations=15, seed=1))
    ga.step()
    init = ga.population.evals
    assert (init[:, problem.column("capacity_violation")] == 0).all()
    assert int(ga.status["n_unique"]) == 24
    first_best = float(init[0, 0])
    first_median = float(init[:, 0].median())
    for _ in range(14):
        ga.step()
    final = ga.population.evals
    assert ga.n_evaluations == 24 * 15
    assert (final[:, problem.cv_column] <= 0).all()
    assert float(final[0, 0]) < first_best
    assert float(final[:, 0].median()) < 0.2 * first_median
    assert int(ga.status["n_unique"]) == 24  # duplicate elimination keeps genomes distinct


@pytest.mark.parametrize("objective", ["ela", "pareto"])
def test_ga_status_holds_the_generation_statistics_and_the_history_logger_reads_it(predictor_path, tmp_path,
                                                                                   objective):
    """``ga.status`` shows the algorithm's statistics of the population and of the latest
    offspring; the history (an EvoTorch logger) holds one row per generation, equal to the status."""
    from cimnas.search.ga import STATUS_KEYS
    from cimnas.search.runner import HISTORY_COLUMNS, GenerationHistory, run_status

    setup = build_setup(_config(tmp_path, predictor_path))
    problem = JointProblem(setup.evaluator, ObjectiveConfig(name=objective))
    ga = ConstrainedGA(problem, GAConfig(popsize=16, generations=4, seed=3))
    ga.after_step_hook.append(run_status(ga, problem, 0.0))
    history = GenerationHistory(ga)
    assert history in ga.log_hook
    for _ in range(3):
        ga.step()
    status = dict(ga.status)
    reasons = [f"offspring_{r}" for r in REASONS[1:]]
    assert set(STATUS_KEYS) | set(reasons) <= set(status)
    ev, last = ga.population.evals, ga.last_evaluated
    feasible = ev[:, problem.cv_column] <= 0
    b = problem.best_index(ev)
    assert status["n_feasible"] == int(feasible.sum()) and status["n_evaluations"] == 48
    assert status["best_objective"] == float(problem.report_objective(ev)[b])
    assert status["median_objective"] == float(problem.report_objective(ev[feasible]).median())
    codes = last[:, problem.column("reason_code")].long()
    assert [status[k] for k in reasons] == [int((codes == i).sum()) for i in range(1, len(REASONS))]
    assert status["offspring_infeasible"] == int((last[:, problem.cv_column] > 0).sum())
    assert [r["generation"] for r in history.rows] == [1, 2, 3]
    assert tuple(history.rows[-1]) == HISTORY_COLUMNS
    assert history.rows[-1] == {"generation": 3, **{k: status[k] for k in HISTORY_COLUMNS[1:]}}
    assert history.rows[-1]["best_accuracy"] == float(ev[b, problem.column("accuracy")])


def test_same_seed_same_population_and_resume_reproduces_uninterrupted_run(predictor_path, tmp_path):
    config = _config(tmp_path, predictor_path, ga=GAConfig(popsize=16, generations=8, seed=7))
    setup = build_setup(config)
    full = run_ga(setup, "joint", tmp_path / "full")

    # interrupted run: killed after generation 5 (checkpoint every generation), then resumed
    interrupted = tmp_path / "interrupted"

    class Killed(Exception):
        pass

    def kill_after_5(status):
        if status["iter"] == 5:
            raise Killed

    from cimnas.search import run as run_module

    original_init = run_module.ConstrainedGA.__init__

    def init_with_kill(self, *a, **k):
        original_init(self, *a, **k)
        self.log_hook.append(kill_after_5)

    run_module.ConstrainedGA.__init__ = init_with_kill
    try:
        with pytest.raises(Killed):
            run_ga(setup, "joint", interrupted)
    finally:
        run_module.ConstrainedGA.__init__ = original_init
    state = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    # killed inside generation 5's logging: the last complete checkpoint is generation 4 or 5
    assert state["ga"]["step"] in (4, 5) and len(state["history"]) == state["ga"]["step"]
    resumed = run_ga(setup, "joint", interrupted, resume=True)
    assert torch.equal(resumed.values, full.values)
    assert torch.equal(resumed.evals, full.evals)
    assert [r["generation"] for r in resumed.history] == list(range(1, 9))
    assert resumed.n_evaluations == full.n_evaluations
    assert torch.equal(resumed.archive.values, full.archive.values)  # the all-evaluations Pareto archive too
    # and a fresh run with the same seed gives the same population
    again = run_ga(setup, "joint", tmp_path / "again")
    assert torch.equal(again.values, full.values)


def test_pareto_mode_keeps_a_nondominated_front(predictor_path, tmp_path):
    config = _config(tmp_path, predictor_path, objective=ObjectiveConfig(name="pareto"),
                     ga=GAConfig(popsize=20, generations=5, seed=2))
    summary = run_search(config)
    out = Path(config.output.dir)
    front = json.loads((out / "pareto.json").read_text())
    assert summary["pareto_size"] == len(front) >= 1
    points = [(d["metrics"]["edap_j_s_mm2"], d["metrics"]["accuracy"]) for d in front]
    assert len(set(points)) == len(points)
    for i, (e1, a1) in enumerate(points):
        for j, (e2, a2) in enumerate(points):
            if i != j:
                assert not (e2 <= e1 and a2 >= a1 and (e2 < e1 or a2 > a1))


# ---------------------------------------------------------------------- outputs, baselines, CLI


def test_results_folder_and_best_design_is_readable(predictor_path, tmp_path):
    config = _config(tmp_path, predictor_path, plots=True)
    summary = run_search(config)
    out = Path(config.output.dir)
    for name in ("best.json", "pareto.json", "population.csv", "pareto.csv", "generations.csv", "summary.json",
                 "checkpoint.pt", "plots/convergence.png", "plots/pareto.png", "plots/breakdown.png"):
        assert (out / name).is_file(), name
    best = json.loads((out / "best.json").read_text())
    space = apq_mbv2_tiny()
    assert best["space"] == "apq_mbv2_tiny"
    Architecture.from_dict(best["architecture"]).validate(space)
    QuantPolicy.from_dict(best["quantization"]).validate(space)
    assert set(best["hardware"]) >= {"voltage", "rows", "cols", "macros_per_tile"}
    assert best["metrics"]["feasible"] is True and best["metrics"]["area_mm2"] <= 800.0
    assert summary["space_size"] == pytest.approx(6.8006e85, rel=1e-4)
    lines = (out / "generations.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + config.ga.generations
    assert summary["reference"]["reason"] in REASONS  # the baseline-like reference design was scored


def test_compare_table_runs_every_baseline(predictor_path, tmp_path):
    config = _config(tmp_path, predictor_path, mode="compare", ga=GAConfig(popsize=12, generations=4, seed=1))
    summary = run_search(config)
    rows = {r["method"]: r for r in summary["table"]}
    assert set(rows) == {"joint", "hardware_only", "two_stage", "random", "expert:baseline_like"}
    assert rows["joint"]["edap_ratio_vs_joint"] == pytest.approx(1.0)
    # equal budgets: random search and the two-stage search spend the joint run's evaluations
    assert rows["random"]["n_evaluations"] == rows["joint"]["n_evaluations"] == 12 * 4
    assert rows["two_stage"]["n_evaluations"] <= 12 * 4
    out = Path(config.output.dir)
    assert (out / "compare.csv").is_file() and "edap_ratio_vs_joint" in (out / "compare.md").read_text()
    # the hardware-only search kept the baseline-like network
    best_hw_only = json.loads((out / "hardware_only" / "best.json").read_text())
    assert best_hw_only["quantization"]["pw_w_bits"] == [8] * 21
    assert best_hw_only["architecture"]["kernels"] == [3] * 21


def test_cli_missing_predictor_names_the_regenerate_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "search.py", "--predictor", str(tmp_path / "missing.pt"), "--wandb.mode", "disabled",
         "--output.dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "missing.pt" in proc.stderr and "regenerate" in proc.stderr


def test_cli_config_and_overrides(tmp_path):
    from cimnas.search.cli import parse_config

    cfg = parse_config(["--config", str(REPO / "configs/search/compare.yaml"), "--ga.popsize", "10",
                        "--objective.name", "el_acc"])
    assert cfg.mode == "compare" and cfg.ga.popsize == 10 and cfg.objective.name == "el_acc"
    assert cfg.constraints.area_budget_mm2 == 800.0
    with pytest.raises(SystemExit):
        parse_config(["--mode", "bogus"])


def test_cli_bad_values_exit_with_one_line_naming_the_field(capsys):
    from cimnas.search.cli import main

    assert main(["--ga.popsize", "1"]) == 2
    assert "ga.popsize=1" in capsys.readouterr().err
    assert main(["--objective.name", "edp"]) == 2
    assert "allowed values" in capsys.readouterr().err


def test_value_stats_from_a_supernet_feed_the_cost_model(genome, tmp_path):
    from cimnas.space.layers import layer_plan
    from cimnas.models.supernet import OFASupernet
    from cimnas.search.value_stats import load_value_stats, measure_value_stats

    torch.manual_seed(0)
    supernet = OFASupernet(apq_mbv2_tiny())
    stats = measure_value_stats(supernet, torch.randn(1, 1, 28, 28), recalibration=torch.randn(4, 1, 28, 28))
    n_slots = len(layer_plan(genome.space).names)
    assert stats["input_hist"].shape == (n_slots, 31) and stats["weight_hist"].shape == (n_slots, 31)
    assert torch.allclose(stats["input_hist"].sum(-1), torch.ones(n_slots))
    torch.save(stats, tmp_path / "value_stats.pt")
    loaded = load_value_stats(tmp_path / "value_stats.pt", genome.space)
    values = genome.random(8, torch.Generator().manual_seed(3))
    typical = DesignEvaluator(genome, FixedAccuracy()).evaluate(values)
    measured = DesignEvaluator(genome, FixedAccuracy(), value_stats=loaded).evaluate(values)
    ok = typical.feasible | (typical.metrics["reason_code"] < REASONS.index("evaluation_failed"))
    assert not torch.allclose(typical.metrics["energy_j"][ok], measured.metrics["energy_j"][ok])
    assert torch.equal(typical.metrics["area_mm2"][ok], measured.metrics["area_mm2"][ok])  # area is data-independent


def test_wandb_offline_run_carries_the_summary(predictor_path, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = dataclasses.replace(_config(tmp_path, predictor_path, ga=GAConfig(popsize=8, generations=2, seed=1)),
                                 wandb=WandbConfig(mode="disabled"))  # the environment variable wins
    run_search(config)
    runs = list((Path(config.output.dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    summary = json.loads((runs[0] / "files" / "search_summary.json").read_text())
    assert summary["method"] == "joint" and summary["n_evaluations"] == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_matches_cpu(genome, predictor_path, tmp_path):
    values = genome.random(64, torch.Generator().manual_seed(0))
    setups = {d: build_setup(dataclasses.replace(_config(tmp_path, predictor_path), device=d)) for d in ("cpu", "cuda")}
    evs = {d: s.evaluator.evaluate(values.to(d)) for d, s in setups.items()}
    for key in ("accuracy", "energy_j", "latency_s", "area_mm2"):
        a, b = evs["cpu"].metrics[key], evs["cuda"].metrics[key].cpu()
        finite = torch.isfinite(a)
        assert torch.equal(finite, torch.isfinite(b)) and torch.allclose(a[finite], b[finite], rtol=1e-4)
    result = run_ga(setups["cuda"], "joint", tmp_path / "cuda")
    assert result.values.device.type == "cuda" and bool(result.evals[0, result.problem.cv_column] <= 0)


def test_wandb_summary_gets_readable_units_for_tiny_metrics():
    """Energies and latencies far below 1 (W&B's summary table shows them as 0.0) are also logged
    in µJ / µs, and EDAP as its log10."""
    from cimnas.search.wandb_glue import readable_units

    out = readable_units({"energy_j": 1.4e-6, "latency_s": 1.55e-7, "edap_j_s_mm2": 1.27e-11, "accuracy": 0.84},
                         prefix="best/")
    assert out == pytest.approx({"best/energy_uj": 1.4, "best/latency_us": 0.155,
                                 "best/log10_edap_j_s_mm2": math.log10(1.27e-11)})
    assert readable_units({"accuracy": 0.9}) == {}


def test_predictor_hidden_dtype_is_an_opt_in_that_keeps_old_fingerprints(predictor_path, tmp_path):
    import hashlib

    config = _config(tmp_path, predictor_path)
    legacy = config.to_dict()
    for key in ("output", "wandb", "resume", "device", "num_actors", "num_gpus_per_actor", "threads",
                "predictor_hidden_dtype"):
        legacy.pop(key)
    legacy["ga"].pop("offspring")  # nor ga.offspring (null = popsize), added after the fingerprint was defined
    assert config.fingerprint() == hashlib.sha256(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    bf16 = _config(tmp_path, predictor_path, predictor_hidden_dtype="bfloat16")
    assert bf16.fingerprint() != config.fingerprint()  # it changes results: a folder refuses the other
    setup = build_setup(bf16)
    assert setup.evaluator.accuracy.mlp.hidden_dtype == torch.bfloat16
    assert build_setup(config).evaluator.accuracy.mlp.hidden_dtype is None
    constant = _config(tmp_path, predictor_path, predictor_hidden_dtype="bfloat16")
    constant.predictor = "constant:0.8"
    with pytest.raises(ValueError, match="predictor_hidden_dtype=bfloat16: the accuracy source ConstantAccuracy"):
        build_setup(constant)
