"""What a search method produces (:class:`MethodResult`), the all-evaluations Pareto archive,
and the results folder it is written to (design files, population / Pareto CSVs, summary,
compare table)."""

from __future__ import annotations

import csv
import logging
import math
import os
from io import StringIO
from pathlib import Path
from typing import Any

import torch

from cimnas.io import markdown_table as render_markdown_table
from cimnas.search.designs import design_record, write_json
from cimnas.search.constraints import REASONS
from cimnas.search.evaluator import METRIC_COLUMNS
from cimnas.search.plots import plot_data, write_plots
from cimnas.search.result import MethodResult, ParetoArchive
from cimnas.search.setup import Setup

log = logging.getLogger("cimnas.search")


#: Metrics shown in the comparison table.
COMPARE_COLUMNS = ("edap_j_s_mm2", "energy_j", "latency_s", "area_mm2", "tops_per_w", "tops_per_mm2", "accuracy")


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
    buf = StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def population_diversity(genome: Any, values: torch.Tensor) -> dict[str, int]:
    """Distinct networks (architecture and bits of the blocks a network executes; genes of skipped
    blocks ignored) and distinct chips among the rows of ``values``."""
    if values.shape[0] == 0:
        return {"size": 0, "distinct_networks": 0, "distinct_hardware": 0}
    arch = genome.decode_arch(values)
    active = arch.active_blocks(genome.space).long()
    key = torch.cat([arch.depths, arch.kernels * active, arch.hidden * active, arch.resolution.unsqueeze(1),
                     (arch.bits * active.unsqueeze(2)).flatten(1)], dim=1)
    hw = genome.hw_indices(values)
    return {"size": int(values.shape[0]), "distinct_networks": int(torch.unique(key, dim=0).shape[0]),
            "distinct_hardware": int(torch.unique(hw, dim=0).shape[0]) if hw.shape[1] else 1}


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
                  extra_summary: dict[str, Any] | None = None, finisher: Any = None) -> dict[str, Any]:
    """Write best.json, pareto.json, CSVs, summary.json and plots; returns the summary. With a
    :class:`~cimnas.search.finish.Finisher` the plots are queued on it (drawn later, maybe by a
    worker) instead of drawn here; ``summary["plots"]`` lists their files either way."""
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
    source = {"method": result.name, "objective": problem.objective.label(), "config": setup.config.fingerprint(),
              # what priced the design, so `python -m cimnas.experiments.hw_evaluate best.json` reproduces it
              "value_stats": setup.config.value_stats, "reference_compat": bool(setup.config.reference_compat)}
    pick = problem.best_index(result.evals)
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
        "accuracy_floor": problem.evaluator.accuracy_floor,
        "n_evaluations": result.n_evaluations,
        "wall_s": result.wall_s,
        "evaluations_per_s": result.n_evaluations / result.wall_s if result.wall_s > 0 else None,
        "best": best_metrics,
        "n_feasible": int(feasible.sum()),
        "pareto_size": int(front_values.shape[0]),
        "final_population": population_diversity(setup.genome, result.values),
        **(extra_summary or {}),
    }
    diversity = summary["final_population"]
    log.info("%s: final population of %d holds %d distinct networks and %d distinct chips", result.name,
             diversity["size"], diversity["distinct_networks"], diversity["distinct_hardware"])
    lower, upper = getattr(problem, "lower_bounds", None), getattr(problem, "upper_bounds", None)
    network_fixed = lower is not None and bool((lower[setup.genome.num_hw:] == upper[setup.genome.num_hw:]).all())
    if diversity["size"] > 1 and diversity["distinct_networks"] == 1 and not network_fixed:
        log.warning("%s: the final population collapsed to one network; top-K selection (finetune_batch) "
                    "falls back to the Pareto archive", result.name)
    if setup.config.output.plots and finisher is not None:
        summary["plots"] = finisher.add_plots(plot_data(setup, result, reference, front_result, int(pick)),
                                              out_dir / "plots")
    elif setup.config.output.plots:
        summary["plots"] = write_plots(setup, result, out_dir / "plots", reference, front_result, int(pick))
    write_json(out_dir / "summary.json", summary)
    return summary


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

    return render_markdown_table(cols, [[fmt(r.get(c, "")) for c in cols] for r in rows])


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
