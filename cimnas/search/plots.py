"""The results folder's figures: convergence, EDAP-vs-accuracy front, energy / area breakdown of
the best design against the reference design.

Two steps, so that drawing needs no search state (:mod:`cimnas.search.finish` draws in a worker):
:func:`plot_data` takes what the figures show out of the results as plain data (no matplotlib),
:func:`draw_plots` draws it; :func:`write_plots` does both."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from cimnas.io import atomic_savefig, pyplot
from cimnas.search.result import MethodResult
from cimnas.search.setup import Setup

log = logging.getLogger("cimnas.search")

PLOTS = ("convergence", "pareto", "breakdown")


def write_plots(setup: Setup, result: MethodResult, plot_dir: Path, reference: MethodResult | None,
                front: MethodResult, pick: int) -> list[str]:
    """Convergence, Pareto and breakdown plots; a plot that cannot be drawn is skipped with a
    warning (it must never lose the results)."""
    return draw_plots(plot_data(setup, result, reference, front, pick), plot_dir)


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().cpu().reshape(-1).tolist()]


def plot_data(setup: Setup, result: MethodResult, reference: MethodResult | None, front: MethodResult,
              pick: int) -> dict[str, Any]:
    """What the figures show, as plain data: the per-generation history, the feasible
    population's and the front's EDAP / accuracy, the reference point and the per-component
    energy / area of the best and the reference design (a breakdown that cannot be computed is
    left out with a warning)."""
    feasible = result.evals[:, result.problem.cv_column] <= 0
    edap, acc = result.metric("edap_j_s_mm2"), result.metric("accuracy")
    data: dict[str, Any] = {
        "name": result.name,
        "objective_label": result.problem.objective.label(),
        "history": [{k: r[k] for k in ("generation", "best_objective", "median_objective", "n_feasible",
                                       "offspring_infeasible")} for r in result.history],
        "population": {"edap": _floats(edap[feasible]), "accuracy": _floats(acc[feasible])},
        "front": {"edap": _floats(front.metric("edap_j_s_mm2")) if front.values.shape[0] else [],
                  "accuracy": _floats(front.metric("accuracy")) if front.values.shape[0] else []},
        "reference": None,
        "breakdowns": [],
    }
    rows = [(f"best ({result.name})", result.values[pick: pick + 1])]
    if reference is not None:
        data["reference"] = {"name": reference.name, "edap": _floats(reference.metric("edap_j_s_mm2")[:1])[0],
                             "accuracy": _floats(reference.metric("accuracy")[:1])[0]}
        rows.append((f"reference ({reference.name})", reference.values[:1]))
    for label, genome in rows:
        try:
            energy, area = component_breakdown(setup, genome.to(setup.device))
        except Exception as exc:  # noqa: BLE001 - a missing breakdown must not lose the results
            log.warning("no energy/area breakdown for %s: %s", label, exc)
            continue
        data["breakdowns"].append({"label": label, "energy_j": energy, "area_mm2": area})
    return data


def planned_plots(data: dict[str, Any]) -> list[str]:
    """The figures :func:`draw_plots` makes of ``data``."""
    return [name for name, present in (("convergence", bool(data["history"])), ("pareto", True),
                                       ("breakdown", bool(data["breakdowns"]))) if present]


def draw_plots(data: dict[str, Any], plot_dir: Path) -> list[str]:
    """Draw the figures of :func:`plot_data` into ``plot_dir`` (atomically); returns the files
    written. A figure that cannot be drawn is skipped with a warning."""
    written: list[str] = []
    for name, fn in (("convergence", _plot_convergence), ("pareto", _plot_pareto), ("breakdown", _plot_breakdown)):
        try:
            fn(data, Path(plot_dir), written)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s plot skipped: %s", name, exc)
    return written


def _finite(values: list[float]) -> list[float]:
    return [v if math.isfinite(v) and 0 < abs(v) < 1e150 else math.nan for v in values]


def _pyplot(plot_dir: Path) -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, with ``plot_dir`` created."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    return pyplot()


def _plot_convergence(data: dict[str, Any], plot_dir: Path, written: list[str]) -> None:
    history = data["history"]
    if not history:
        return
    plt = _pyplot(plot_dir)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    gens = [r["generation"] for r in history]
    ax[0].plot(gens, _finite([r["best_objective"] for r in history]), label="best (feasible)")
    ax[0].plot(gens, _finite([r["median_objective"] for r in history]), label="median (feasible)", alpha=0.7)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("generation")
    ax[0].set_ylabel(data["objective_label"])
    ax[0].legend()
    ax[1].plot(gens, [r["n_feasible"] for r in history], label="feasible in population")
    ax[1].plot(gens, [r["offspring_infeasible"] for r in history], label="infeasible offspring")
    ax[1].set_xlabel("generation")
    ax[1].legend()
    fig.suptitle(f"{data['name']}: convergence")
    fig.tight_layout()
    _save(fig, plot_dir / "convergence.png", written)
    plt.close(fig)


def _plot_pareto(data: dict[str, Any], plot_dir: Path, written: list[str]) -> None:
    plt = _pyplot(plot_dir)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(data["population"]["edap"], data["population"]["accuracy"], s=10, alpha=0.5,
               label="population (feasible)")
    if data["front"]["edap"]:
        ax.plot(data["front"]["edap"], data["front"]["accuracy"], "o-", color="C3", ms=4,
                label="Pareto front (all evaluations)")
    ref = data.get("reference")
    if ref is not None:
        ax.scatter([ref["edap"]], [ref["accuracy"]], marker="*", s=120, color="k", label=f"reference: {ref['name']}")
    ax.set_xscale("log")
    ax.set_xlabel("EDAP (J·s·mm²)")
    ax.set_ylabel("predicted accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, plot_dir / "pareto.png", written)
    plt.close(fig)


def _plot_breakdown(data: dict[str, Any], plot_dir: Path, written: list[str]) -> None:
    breakdowns = data["breakdowns"]
    if not breakdowns:
        return
    plt = _pyplot(plot_dir)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for k, (key, title, unit) in enumerate((("energy_j", "energy", "J"), ("area_mm2", "area", "mm²"))):
        names = sorted({n for b in breakdowns for n in b[key]})
        width = 0.8 / len(breakdowns)
        for j, b in enumerate(breakdowns):
            ax[k].bar([i + j * width for i in range(len(names))], [b[key].get(n, 0.0) for n in names],
                      width=width, label=b["label"])
        ax[k].set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
        ax[k].set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax[k].set_yscale("log")
        ax[k].set_ylabel(f"{title} ({unit})")
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, plot_dir / "breakdown.png", written)
    plt.close(fig)


def _save(fig: Any, path: Path, written: list[str]) -> None:
    atomic_savefig(path, fig, close=False, dpi=110)
    written.append(str(path))


def component_breakdown(setup: Setup, genome: torch.Tensor) -> tuple[dict[str, float], dict[str, float]]:
    """Per-component energy (J) and area (mm²) of one design, from the cost model."""
    result = setup.evaluator.cost(genome)[3]
    return _components(result.energy_by_component_j), _components(result.area_by_component_mm2)


def _components(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(torch.as_tensor(v).reshape(-1)[0]) for k, v in value.items()}
    raise TypeError(f"unsupported breakdown type {type(value).__name__}")
