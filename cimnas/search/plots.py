"""The results folder's figures: convergence, EDAP-vs-accuracy front, energy / area breakdown of
the best design against the reference design."""

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
    plot_dir.mkdir(parents=True, exist_ok=True)
    return pyplot()


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
