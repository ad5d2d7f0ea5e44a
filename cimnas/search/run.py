"""Running a search job: set up the spaces, run the GA (or a baseline), write the results folder.

Results folder (``output.dir``)::

    best.json         best design (space, Architecture, QuantPolicy, hardware params, metrics)
    pareto.json       every design on the EDAP-vs-accuracy front (same format, a list)
    population.csv    final population, best first (rank, feasibility, reason, metrics, genes)
    pareto.csv        feasible designs not dominated (EDAP min, accuracy max) by any evaluated design
    generations.csv   per-generation statistics
    summary.json      config, space size, timings, evaluations/s, best metrics
    plots/            convergence.png, pareto.png, breakdown.png (best vs reference design)
    checkpoint.pt     GA state every ``output.checkpoint_every`` generations (``--resume``)
    compare.csv/.md   the comparison table (mode ``compare``)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from cimnas.space import SearchSpace, get_space
from cimnas.search.config import REFERENCE_BASELINE_HARDWARE, ExpertDesign, SearchConfig
from cimnas.search.designs import design_record, resolve_network, write_json
from cimnas.search.evaluator import (
    METRIC_COLUMNS, REASONS, ArtifactError, ConstraintConfig, DesignEvaluator, REGENERATE_HINT, load_predictor,
)
from cimnas.search.ga import ConstrainedGA, GAConfig, make_batch, survival_order
from cimnas.search.genome import GenomeError, JointGenome
from cimnas.search.objectives import ObjectiveConfig
from cimnas.search.operators import first_occurrence
from cimnas.search.problem import JointProblem
from cimnas.io import write_metrics_file

log = logging.getLogger("cimnas.search")

#: Metrics shown in the comparison table.
COMPARE_COLUMNS = ("edap_j_s_mm2", "energy_j", "latency_s", "area_mm2", "tops_per_w", "tops_per_mm2", "accuracy")


# ---------------------------------------------------------------------- setup


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
    predictor (tests pass their own :class:`~cimnas.search.evaluator.AccuracySource`)."""
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
    if config.variation:
        from cimnas.models.variation import RetentionModel
        from cimnas.search.accuracy import NoiseAwareAccuracy

        accuracy = NoiseAwareAccuracy(accuracy, RetentionModel.load(config.variation), space=space)
    value_stats = load_value_stats(config.value_stats, space)
    evaluator = DesignEvaluator(genome, accuracy, config.constraints, value_stats=value_stats,
                                reference_compat=config.reference_compat)
    log.info("%s", genome.describe())
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
    return any(c == value or (isinstance(c, float) and math.isclose(c, float(value), rel_tol=1e-9)) for c in choices)


def expert_genome(setup: Setup, expert: ExpertDesign) -> torch.Tensor:
    arch, policy = resolve_network(setup.space, expert.network)
    return setup.genome.encode_designs([(arch, policy, hardware_dict(setup, expert.hardware))], device=setup.device)


# ---------------------------------------------------------------------- results


@dataclass
class MethodResult:
    """Outcome of one method: final population (sorted best-first) and its evals."""

    name: str
    problem: JointProblem
    values: torch.Tensor
    evals: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    n_evaluations: int = 0
    wall_s: float = 0.0
    archive: "ParetoArchive | None" = None  # non-dominated designs over every evaluation

    def metric(self, name: str) -> torch.Tensor:
        return self.evals[:, self.problem.column(name)]

    def best_metrics(self) -> dict[str, Any]:
        i = best_index(self.problem, self.evals)
        out: dict[str, Any] = {c: float(self.evals[i, self.problem.column(c)]) for c in METRIC_COLUMNS}
        out["objective"] = float(self.evals[i, 0])
        out["cv"] = float(self.evals[i, self.problem.cv_column])
        out["feasible"] = bool(self.evals[i, self.problem.cv_column] <= 0)
        out["reason"] = REASONS[int(out.pop("reason_code"))]
        return out


def best_index(problem: JointProblem, evals: torch.Tensor) -> int:
    """Row of the single best design: the first in survival order, or in the Pareto mode the
    feasible design with the lowest EDAP / accuracy (the front's best compromise)."""
    if not problem.objective.is_pareto:
        return 0
    feasible = evals[:, problem.cv_column] <= 0
    if not feasible.any():
        return 0
    ratio = evals[:, problem.column("edap_j_s_mm2")] / evals[:, problem.column("accuracy")].clamp_min(1e-12)
    return int(torch.where(feasible, ratio, torch.full_like(ratio, math.inf)).argmin())


class ParetoArchive:
    """Feasible designs not dominated in (EDAP min, accuracy max) among *all* evaluated designs
    (the final population of a single-objective run holds little of that front)."""

    def __init__(self, problem: JointProblem, values: torch.Tensor | None = None, evals: torch.Tensor | None = None):
        self.problem = problem
        self.values = values
        self.evals = evals

    def add(self, values: torch.Tensor, evals: torch.Tensor) -> None:
        p = self.problem
        if self.values is not None:
            values = torch.cat([self.values, values.to(self.values.device)])
            evals = torch.cat([self.evals, evals.to(self.evals.device)])
        feasible = evals[:, p.cv_column] <= 0
        edap, acc = evals[:, p.column("edap_j_s_mm2")], evals[:, p.column("accuracy")]
        keep = _pareto_mask(edap, acc, feasible).nonzero().reshape(-1)
        keep = keep[torch.argsort(edap[keep], stable=True)]
        keep = keep[first_occurrence(torch.stack([edap[keep], acc[keep]], dim=1))]
        self.values, self.evals = values[keep].clone(), evals[keep].clone()

    def state(self) -> dict[str, Any]:
        return {"values": None if self.values is None else self.values.cpu(),
                "evals": None if self.evals is None else self.evals.cpu()}


def _pareto_mask(edap: torch.Tensor, acc: torch.Tensor, feasible: torch.Tensor) -> torch.Tensor:
    """Feasible designs not dominated by another feasible one in (EDAP min, accuracy max)."""
    e = torch.where(feasible, edap, torch.full_like(edap, math.inf))
    a = torch.where(feasible, acc, torch.full_like(acc, -math.inf))
    no_worse = (e.unsqueeze(0) <= e.unsqueeze(1)) & (a.unsqueeze(0) >= a.unsqueeze(1))
    better = (e.unsqueeze(0) < e.unsqueeze(1)) | (a.unsqueeze(0) > a.unsqueeze(1))
    dominated = (no_worse & better & feasible.unsqueeze(0)).any(dim=1)
    return feasible & ~dominated


def _design_strings(setup: Setup, values: torch.Tensor) -> list[dict[str, str]]:
    designs = setup.genome.to_designs(values)
    rows = []
    for d in designs:
        a, q = d["architecture"], d["quantization"]
        rows.append({
            "depths": " ".join(map(str, a["depths"])), "kernels": " ".join(map(str, a["kernels"])),
            "hidden": " ".join(map(str, a["hidden"])), "resolution": str(a["resolution"]),
            **{k: " ".join(map(str, v)) for k, v in q.items()},
            **{f"hw_{k}": str(v) for k, v in d["hardware"].items()},
        })
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def population_rows(setup: Setup, result: MethodResult, index: torch.Tensor | None = None) -> list[dict[str, Any]]:
    values, evals = result.values, result.evals
    if index is not None:
        values, evals = values[index], evals[index]
    strings = _design_strings(setup, values)
    rows = []
    cols = result.problem.eval_columns
    for i in range(values.shape[0]):
        ev = evals[i].tolist()
        row: dict[str, Any] = {"rank": i if index is None else int(index[i])}
        row["feasible"] = bool(ev[result.problem.cv_column] <= 0)
        row["reason"] = REASONS[int(ev[cols.index("reason_code")])]
        row.update({c: ev[j] for j, c in enumerate(cols) if c != "reason_code"})
        row.update(strings[i])
        row["genome"] = " ".join(map(str, values[i].tolist()))
        rows.append(row)
    return rows


def write_results(setup: Setup, result: MethodResult, out_dir: Path, reference: MethodResult | None = None,
                  extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write best.json, pareto.json, CSVs, summary.json and plots; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    problem = result.problem
    feasible = result.evals[:, problem.cv_column] <= 0
    # the front over every evaluated design when the run kept an archive, else of the population
    archive = result.archive
    if archive is None or archive.values is None:
        archive = ParetoArchive(problem)
        archive.add(result.values, result.evals)
    front_values = archive.values if archive.values is not None else result.values[:0]
    front_evals = archive.evals if archive.evals is not None else result.evals[:0]
    source = {"method": result.name, "objective": problem.objective.label(), "config": setup.config.fingerprint()}
    pick = best_index(problem, result.evals)
    best_design = setup.genome.to_designs(result.values[int(pick): int(pick) + 1])[0]
    best_metrics = {c: float(result.evals[int(pick), problem.column(c)]) for c in METRIC_COLUMNS if c != "reason_code"}
    best_metrics["objective"] = float(result.evals[int(pick), 0])
    best_metrics["feasible"] = bool(feasible[int(pick)])
    best_metrics["reason"] = REASONS[int(result.evals[int(pick), problem.column("reason_code")])]
    write_json(out_dir / "best.json", design_record(setup.space, best_design, best_metrics,
                                                    result.values[int(pick)].tolist(), source))
    front_designs = setup.genome.to_designs(front_values) if front_values.shape[0] else []
    write_json(out_dir / "pareto.json", [
        design_record(setup.space, d, {c: float(front_evals[i, problem.column(c)]) for c in COMPARE_COLUMNS},
                      front_values[i].tolist(), source)
        for i, d in enumerate(front_designs)
    ])
    _write_csv(out_dir / "population.csv", population_rows(setup, result))
    front_result = MethodResult(result.name, problem, front_values, front_evals)
    _write_csv(out_dir / "pareto.csv", population_rows(setup, front_result) if front_values.shape[0] else [])
    if result.history:
        _write_csv(out_dir / "generations.csv", result.history)
    summary = {
        "method": result.name,
        "space": setup.space.name,
        "hardware_space": setup.config.hardware,
        "genome_length": setup.genome.length,
        "space_size": setup.genome.space_size(),
        "objective": problem.objective.label(),
        "n_evaluations": result.n_evaluations,
        "wall_s": result.wall_s,
        "evaluations_per_s": result.n_evaluations / result.wall_s if result.wall_s > 0 else None,
        "best": best_metrics,
        "n_feasible": int(feasible.sum()),
        "pareto_size": int(front_values.shape[0]),
        **(extra_summary or {}),
    }
    if setup.config.output.plots:
        summary["plots"] = write_plots(setup, result, out_dir / "plots", reference, front_result, int(pick))
    write_json(out_dir / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------- plots


def write_plots(setup: Setup, result: MethodResult, plot_dir: Path, reference: MethodResult | None,
                front: MethodResult, pick: int) -> list[str]:
    """Convergence, Pareto and breakdown plots; a plot that cannot be drawn is skipped with a
    warning (it must never lose the results)."""
    written: list[str] = []
    for name, fn in (("convergence", _plot_convergence), ("pareto", _plot_pareto), ("breakdown", _plot_breakdown)):
        try:
            fn(setup, result, plot_dir, reference, front, pick, written)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s plot skipped: %s", name, exc)
    return written


def _finite(values: list[float]) -> list[float]:
    return [v if math.isfinite(v) and 0 < abs(v) < 1e150 else math.nan for v in values]


def _pyplot(plot_dir: Path) -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, with ``plot_dir`` created."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    return plt


def _plot_convergence(setup: Setup, result: MethodResult, plot_dir: Path, reference: MethodResult | None,
                      front: MethodResult, pick: int, written: list[str]) -> None:
    plt = _pyplot(plot_dir)
    if result.history:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        gens = [r["generation"] for r in result.history]
        ax[0].plot(gens, _finite([r["best_objective"] for r in result.history]), label="best (feasible)")
        ax[0].plot(gens, _finite([r["median_objective"] for r in result.history]), label="median (feasible)", alpha=0.7)
        ax[0].set_yscale("log")
        ax[0].set_xlabel("generation")
        ax[0].set_ylabel(result.problem.objective.label())
        ax[0].legend()
        ax[1].plot(gens, [r["n_feasible"] for r in result.history], label="feasible in population")
        ax[1].plot(gens, [r["offspring_infeasible"] for r in result.history], label="infeasible offspring")
        ax[1].set_xlabel("generation")
        ax[1].legend()
        fig.suptitle(f"{result.name}: convergence")
        fig.tight_layout()
        _save(fig, plot_dir / "convergence.png", written)
        plt.close(fig)


def _plot_pareto(setup: Setup, result: MethodResult, plot_dir: Path, reference: MethodResult | None,
                 front: MethodResult, pick: int, written: list[str]) -> None:
    plt = _pyplot(plot_dir)
    feasible = result.evals[:, result.problem.cv_column] <= 0
    edap, acc = result.metric("edap_j_s_mm2"), result.metric("accuracy")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(edap[feasible].cpu(), acc[feasible].cpu(), s=10, alpha=0.5, label="population (feasible)")
    if front.values.shape[0]:
        ax.plot(front.metric("edap_j_s_mm2").cpu(), front.metric("accuracy").cpu(), "o-", color="C3", ms=4,
                label="Pareto front (all evaluations)")
    if reference is not None:
        ax.scatter(reference.metric("edap_j_s_mm2")[:1].cpu(), reference.metric("accuracy")[:1].cpu(), marker="*",
                   s=120, color="k", label=f"reference: {reference.name}")
    ax.set_xscale("log")
    ax.set_xlabel("EDAP (J·s·mm²)")
    ax.set_ylabel("predicted accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, plot_dir / "pareto.png", written)
    plt.close(fig)


def _plot_breakdown(setup: Setup, result: MethodResult, plot_dir: Path, reference: MethodResult | None,
                    front: MethodResult, pick: int, written: list[str]) -> None:
    plt = _pyplot(plot_dir)
    rows = [(f"best ({result.name})", result.values[pick: pick + 1])]
    if reference is not None:
        rows.append((f"reference ({reference.name})", reference.values[:1]))
    breakdowns = []
    for label, genome in rows:
        try:
            energy, area = component_breakdown(setup, genome.to(setup.device))
        except Exception as exc:  # noqa: BLE001 - a missing breakdown must not lose the results
            log.warning("no energy/area breakdown for %s: %s", label, exc)
            continue
        breakdowns.append((label, energy, area))
    if breakdowns:
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for k, (title, unit) in enumerate((("energy", "J"), ("area", "mm²"))):
            names = sorted({n for b in breakdowns for n in b[1 + k]})
            width = 0.8 / len(breakdowns)
            for j, b in enumerate(breakdowns):
                ax[k].bar([i + j * width for i in range(len(names))], [b[1 + k].get(n, 0.0) for n in names],
                          width=width, label=b[0])
            ax[k].set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
            ax[k].set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax[k].set_yscale("log")
            ax[k].set_ylabel(f"{title} ({unit})")
        ax[0].legend(fontsize=8)
        fig.tight_layout()
        _save(fig, plot_dir / "breakdown.png", written)
        plt.close(fig)


def _save(fig: Any, path: Path, written: list[str]) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    written.append(str(path))


def component_breakdown(setup: Setup, genome: torch.Tensor) -> tuple[dict[str, float], dict[str, float]]:
    """Per-component energy (J) and area (mm²) of one design, from the cost model."""
    result = setup.evaluator.cost(genome)[3]
    return _components(result.energy_by_component_j), _components(result.area_by_component_mm2)


def _components(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(torch.as_tensor(v).reshape(-1)[0]) for k, v in value.items()}
    raise TypeError(f"unsupported breakdown type {type(value).__name__}")


# ---------------------------------------------------------------------- GA methods


class _History:
    """Per-generation statistics (and the progress bar / W&B hooks)."""

    def __init__(self, ga: ConstrainedGA, problem: JointProblem, rows: list[dict[str, Any]], start_s: float,
                 on_row: Callable[[dict[str, Any]], None] | None = None, archive: ParetoArchive | None = None):
        self.ga, self.problem, self.rows, self.start_s, self.on_row = ga, problem, rows, start_s, on_row
        self.archive = archive

    def __call__(self, status: dict[str, Any]) -> None:
        if self.archive is not None and self.ga.last_values is not None:
            self.archive.add(self.ga.last_values, self.ga.last_evaluated)
        ev = self.ga.population.evals
        p = self.problem
        feasible = ev[:, p.cv_column] <= 0
        obj = ev[feasible, 0]
        last = self.ga.last_evaluated
        codes = last[:, p.column("reason_code")].long() if last is not None else torch.zeros(0, dtype=torch.long)
        b = best_index(p, ev)
        if p.objective.is_pareto:  # the best compromise's EDAP / accuracy
            best = float(ev[b, p.column("edap_j_s_mm2")] / ev[b, p.column("accuracy")])
            obj = ev[feasible, p.column("edap_j_s_mm2")] / ev[feasible, p.column("accuracy")]
        else:
            best = float(ev[0, 0])
        row = {
            "generation": self.ga.step_count,
            "n_evaluations": self.ga.n_evaluations,
            "elapsed_s": time.perf_counter() - self.start_s,
            "best_objective": best if bool(feasible[b]) else math.nan,
            "median_objective": float(obj.median()) if obj.numel() else math.nan,
            "n_feasible": int(feasible.sum()),
            "n_unique": status.get("n_unique", math.nan),
            "best_accuracy": float(ev[b, p.column("accuracy")]),
            "best_edap_j_s_mm2": float(ev[b, p.column("edap_j_s_mm2")]),
            "best_energy_j": float(ev[b, p.column("energy_j")]),
            "best_latency_s": float(ev[b, p.column("latency_s")]),
            "best_area_mm2": float(ev[b, p.column("area_mm2")]),
            "offspring_infeasible": int((last[:, p.cv_column] > 0).sum()) if last is not None else 0,
        }
        for i, reason in enumerate(REASONS[1:], start=1):
            row[f"offspring_{reason}"] = int((codes == i).sum())
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)


def _wandb_mode(config: SearchConfig) -> str:
    return os.environ.get("WANDB_MODE", config.wandb.mode)


def _start_wandb(config: SearchConfig, name: str, out_dir: Path) -> Any:
    mode = _wandb_mode(config)
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project=config.wandb.project, name=config.wandb.name or f"{name}-{out_dir.name}",
                      group=config.wandb.group, job_type=name, mode=mode, dir=str(out_dir),
                      config=config.to_dict(), reinit="finish_previous")


def run_ga(setup: Setup, name: str, out_dir: Path, *, objective: ObjectiveConfig | None = None,
           constraints: ConstraintConfig | None = None, ga_config: GAConfig | None = None,
           fixed_genes: dict[int, int] | None = None, resume: bool = False,
           wandb_run: Any = None) -> MethodResult:
    """Run the constrained GA for one method, with checkpoints in ``out_dir``."""
    config = setup.config
    objective = objective or config.objective
    ga_config = ga_config or config.ga
    evaluator = setup.evaluator
    if constraints is not None:
        evaluator = DesignEvaluator(setup.genome, evaluator.accuracy, constraints, value_stats=evaluator.value_stats,
                                    reference_compat=evaluator.reference_compat)
    problem = JointProblem(evaluator, objective, fixed_genes=fixed_genes,
                           device="cpu" if config.num_actors else setup.device, num_actors=config.num_actors,
                           num_gpus_per_actor=config.num_gpus_per_actor if config.num_actors else None)
    ga = ConstrainedGA(problem, ga_config)
    history: list[dict[str, Any]] = []
    archive = ParetoArchive(problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    fingerprint = f"{config.fingerprint()}:{name}"
    elapsed_before = 0.0
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise ValueError(f"{ckpt_path} was written by a different configuration; remove it or run without --resume")
        ga.load_state_dict(state["ga"])
        history = list(state["history"])
        if state.get("archive") and state["archive"]["values"] is not None:
            archive = ParetoArchive(problem, state["archive"]["values"].to(ga.device), state["archive"]["evals"].to(ga.device))
        elapsed_before = float(state["wall_s"])
        log.info("%s: resumed at generation %d from %s", name, ga.step_count, ckpt_path)
    elif resume:
        log.info("%s: no checkpoint in %s, starting fresh", name, out_dir)

    start = time.perf_counter() - elapsed_before
    bar = None
    if config.output.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=ga_config.generations, initial=ga.step_count, desc=name, unit="gen", dynamic_ncols=True)

    def on_row(row: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{row['best_objective']:.4g}", feasible=row["n_feasible"])
        if wandb_run is not None:
            wandb_run.log({f"{name}/{k}": v for k, v in row.items()}, step=None)
        gen = row["generation"]
        if gen % config.output.checkpoint_every == 0 or gen == ga_config.generations:
            save_checkpoint(ckpt_path, ga, history, fingerprint, time.perf_counter() - start, archive)

    ga.log_hook.append(_History(ga, problem, history, start, on_row, archive))
    try:
        while ga.step_count < ga_config.generations:
            ga.step()
    finally:
        if bar is not None:
            bar.close()
    pop = ga.population
    return MethodResult(name, problem, pop.values.clone(), pop.evals.clone(), history, ga.n_evaluations,
                        time.perf_counter() - start, archive)


def save_checkpoint(path: Path, ga: ConstrainedGA, history: list[dict[str, Any]], fingerprint: str, wall_s: float,
                    archive: ParetoArchive | None = None) -> None:
    state = {"ga": ga.state_dict(), "history": history, "fingerprint": fingerprint, "wall_s": wall_s,
             "archive": archive.state() if archive is not None else None}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def sw_fixed_genes(setup: Setup, genome_row: torch.Tensor) -> dict[int, int]:
    """Freeze every software gene at ``genome_row``'s value (hardware-only search)."""
    return {i: int(genome_row[i]) for i in range(setup.genome.num_hw, setup.genome.length)}


def hw_fixed_genes(setup: Setup, genome_row: torch.Tensor) -> dict[int, int]:
    """Freeze every hardware gene at ``genome_row``'s value (network-only search)."""
    return {i: int(genome_row[i]) for i in range(setup.genome.num_hw)}


def evaluate_fixed(setup: Setup, name: str, genome: torch.Tensor, objective: ObjectiveConfig | None = None) -> MethodResult:
    """Score fixed designs (rows of ``genome``) and sort them best-first."""
    start = time.perf_counter()
    problem = JointProblem(setup.evaluator, objective or setup.config.objective, device=setup.device)
    batch = make_batch(problem, genome.to(setup.device).long())
    problem.evaluate(batch)
    order = survival_order(problem, batch.evals, batch)
    return MethodResult(name, problem, batch.values[order].clone(), batch.evals[order].clone(), [], genome.shape[0],
                        time.perf_counter() - start)


def run_random(setup: Setup, name: str, n_total: int, keep: int) -> MethodResult:
    """Uniform random designs (same evaluation budget as the GA); keeps the best ``keep``."""
    start = time.perf_counter()
    problem = JointProblem(setup.evaluator, setup.config.objective, device=setup.device)
    generator = torch.Generator(device=setup.device)
    generator.manual_seed(int(setup.config.ga.seed))
    best_values = best_evals = None
    archive = ParetoArchive(problem)
    done = 0
    while done < n_total:
        n = min(keep, n_total - done)
        values = setup.genome.random(n, generator, device=setup.device)
        batch = make_batch(problem, values)
        problem.evaluate(batch)
        archive.add(values, batch.evals)
        if best_values is not None:
            batch = make_batch(problem, torch.cat([best_values, values]), torch.cat([best_evals, batch.evals]))
        order = survival_order(problem, batch.evals, batch)[:keep]
        best_values, best_evals = batch.values[order].clone(), batch.evals[order].clone()
        done += n
    return MethodResult(name, problem, best_values, best_evals, [], done, time.perf_counter() - start, archive)


# ---------------------------------------------------------------------- jobs


def run_method(setup: Setup, method: str, out_dir: Path, reference: MethodResult | None, wandb_run: Any = None) -> MethodResult:
    config = setup.config
    ga = config.ga
    if method == "joint":
        return run_ga(setup, "joint", out_dir, resume=config.resume, wandb_run=wandb_run)
    if method == "hardware_only":
        arch, policy = resolve_network(setup.space, config.network)
        row = setup.genome.encode_designs([(arch, policy, hardware_dict(setup, {}))])[0]
        return run_ga(setup, "hardware_only", out_dir, fixed_genes=sw_fixed_genes(setup, row), resume=config.resume,
                      wandb_run=wandb_run)
    if method == "two_stage":
        # Stage 1: network + quantization by an accuracy/size proxy (weight bits / accuracy) with the
        # hardware frozen at the reference design and no hardware constraints; stage 2: hardware
        # only for the stage-1 network. The generations are split so the budget equals the joint run.
        g1 = max(1, ga.generations // 2)
        g2 = max(1, ga.generations - g1)
        base_row = expert_genome(setup, config.expert_designs[0])[0] if config.expert_designs else \
            setup.genome.encode_designs([(*resolve_network(setup.space, "baseline_like"), hardware_dict(setup, {}))])[0]
        stage1 = run_ga(setup, "two_stage_stage1", out_dir / "stage1", objective=ObjectiveConfig(name="bits_acc"),
                        constraints=ConstraintConfig(area_budget_mm2=None, capacity=False),
                        ga_config=dataclasses.replace(ga, generations=g1), fixed_genes=hw_fixed_genes(setup, base_row.cpu()),
                        resume=config.resume, wandb_run=wandb_run)
        write_results(setup, stage1, out_dir / "stage1", reference)
        network_row = stage1.values[0].cpu()
        stage2 = run_ga(setup, "two_stage", out_dir, ga_config=dataclasses.replace(ga, generations=g2),
                        fixed_genes=sw_fixed_genes(setup, network_row), resume=config.resume, wandb_run=wandb_run)
        stage2.n_evaluations += stage1.n_evaluations
        stage2.wall_s += stage1.wall_s
        return stage2
    if method == "random":
        return run_random(setup, "random", ga.popsize * ga.generations, ga.popsize)
    if method == "fixed":
        if not config.expert_designs:
            raise ValueError("mode fixed needs at least one entry in experts")
        rows = torch.cat([expert_genome(setup, e) for e in config.expert_designs])
        result = evaluate_fixed(setup, "fixed", rows)
        return result
    raise ValueError(f"unknown method {method!r}")


def reference_result(setup: Setup) -> MethodResult | None:
    """The first expert design (the reference's baseline-like design), evaluated."""
    if not setup.config.expert_designs:
        return None
    expert = setup.config.expert_designs[0]
    return evaluate_fixed(setup, f"expert:{expert.name}", expert_genome(setup, expert))


def compare_table(results: dict[str, MethodResult], joint: str = "joint") -> list[dict[str, Any]]:
    """One row per method: metrics of its best design and ratios to the joint result
    (``edap_ratio`` = method EDAP / joint EDAP, so > 1 means the joint design is better;
    ``tops_per_w_gain`` / ``tops_per_mm2_gain`` = joint / method)."""
    base = results.get(joint)
    rows = []
    for name, res in results.items():
        m = res.best_metrics()
        row: dict[str, Any] = {"method": name, "feasible": m["feasible"], "reason": m["reason"]}
        row.update({c: m[c] for c in COMPARE_COLUMNS})
        row["n_evaluations"] = res.n_evaluations
        row["wall_s"] = round(res.wall_s, 2)
        if base is not None:
            b = base.best_metrics()
            row["edap_ratio_vs_joint"] = m["edap_j_s_mm2"] / b["edap_j_s_mm2"]
            row["tops_per_w_gain_of_joint"] = b["tops_per_w"] / m["tops_per_w"] if m["tops_per_w"] else math.nan
            row["tops_per_mm2_gain_of_joint"] = b["tops_per_mm2"] / m["tops_per_mm2"] if m["tops_per_mm2"] else math.nan
            row["accuracy_delta_of_joint"] = b["accuracy"] - m["accuracy"]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_search(config: SearchConfig, accuracy: Any | None = None) -> dict[str, Any]:
    """Run the job described by ``config``; returns its summary (also written to summary.json)."""
    torch.manual_seed(int(config.ga.seed))
    if config.threads:
        torch.set_num_threads(int(config.threads))
    setup = build_setup(config, accuracy)
    out_dir = Path(config.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space_sizes = setup.genome.space_size_by_part()
    reference = reference_result(setup)  # validates the expert designs before anything starts
    wandb_run = _start_wandb(config, config.mode, out_dir)
    try:
        if config.mode != "compare":
            result = run_method(setup, config.mode, out_dir, reference, wandb_run)
            summary = write_results(setup, result, out_dir, reference, {
                "space_size_by_part": space_sizes,
                "reference": reference.best_metrics() if reference is not None else None,
                "edap_ratio_reference_over_best": (
                    reference.best_metrics()["edap_j_s_mm2"] / result.best_metrics()["edap_j_s_mm2"]
                    if reference is not None else None),
            })
            _print_best(result)
        else:
            results: dict[str, MethodResult] = {}
            for method in config.compare_methods:
                if method == "fixed":  # one row per expert design
                    for expert in config.expert_designs:
                        results[f"expert:{expert.name}"] = evaluate_fixed(setup, f"expert:{expert.name}",
                                                                          expert_genome(setup, expert))
                    continue
                results[method] = run_method(setup, method, out_dir / method, reference, wandb_run)
                write_results(setup, results[method], out_dir / method, reference)
            if reference is not None and reference.name not in results:
                results[reference.name] = reference
            rows = compare_table(results)
            _write_csv(out_dir / "compare.csv", rows)
            table = markdown_table(rows)
            tmp = out_dir / "compare.md.tmp"
            tmp.write_text(table)
            os.replace(tmp, out_dir / "compare.md")
            print(table, flush=True)
            summary = {"mode": "compare", "space_size_by_part": space_sizes, "table": rows}
            write_json(out_dir / "summary.json", summary)
        if wandb_run is not None:
            _finish_wandb(wandb_run, summary, out_dir)
        write_metrics_file(search_metrics(summary))  # for the local sweep runner (cimnas.sweep)
    except BaseException:
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)
        raise
    return summary


def search_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Final metrics of a search as plain numbers: ``best_<metric>`` of the best design
    (``best_objective``, ``best_edap_j_s_mm2``, ``best_accuracy``, ...) plus run totals."""
    out: dict[str, float] = {}
    for key in ("n_evaluations", "wall_s", "evaluations_per_s", "n_feasible", "pareto_size"):
        if isinstance(summary.get(key), (int, float)):
            out[key] = float(summary[key])
    for key, value in (summary.get("best") or {}).items():
        if isinstance(value, (int, float)):
            out[f"best_{key}"] = float(value)
    return out


def _print_best(result: MethodResult) -> None:
    m = result.best_metrics()
    state = "feasible" if m["feasible"] else f"INFEASIBLE ({m['reason']})"
    print(f"{result.name}: best objective {m['objective']:.4g} [{state}]  accuracy {m['accuracy']:.4f}  "
          f"EDAP {m['edap_j_s_mm2']:.4g} J·s·mm²  E {m['energy_j']:.4g} J  L {m['latency_s']:.4g} s  "
          f"A {m['area_mm2']:.4g} mm²  TOPS/W {m['tops_per_w']:.4g}  TOPS/mm² {m['tops_per_mm2']:.4g}  "
          f"({result.n_evaluations} evaluations, {result.wall_s:.1f} s)", flush=True)


def _finish_wandb(run: Any, summary: dict[str, Any], out_dir: Path) -> None:
    import wandb

    flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
    best = summary.get("best") or {}
    flat.update({f"best/{k}": v for k, v in best.items() if isinstance(v, (int, float, str, bool))})
    run.summary.update(flat)
    for plot in summary.get("plots") or []:
        run.log({f"plots/{Path(plot).stem}": wandb.Image(plot)})
    if "table" in summary:
        rows = summary["table"]
        cols = list(rows[0]) if rows else []
        run.log({"compare": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})
    pareto_csv = out_dir / "pareto.csv"
    if pareto_csv.is_file() and pareto_csv.stat().st_size > 0:
        with open(pareto_csv, newline="") as f:
            rows = list(csv.reader(f))
        if len(rows) > 1:
            run.log({"pareto": wandb.Table(columns=rows[0], data=rows[1:])})
    # the results folder (minus the W&B run itself) as a versioned artifact of the run
    artifact = wandb.Artifact(f"search-results-{run.id}", type="search-results")
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and "wandb" not in path.relative_to(out_dir).parts:
            artifact.add_file(str(path), name=str(path.relative_to(out_dir)))
    run.log_artifact(artifact)
    write_json(Path(run.dir) / "search_summary.json", summary)
    run.finish()


__all__ = ["MethodResult", "Setup", "build_setup", "compare_table", "run_ga", "run_search"]
