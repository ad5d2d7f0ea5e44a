"""Weights & Biases for the search: the mode switch, one run per job, the final summary.

An offline run outside a W&B sweep is recorded during the search and written afterwards
(:class:`cimnas.search.finish.RecordedRun`, in the background for the ``search.py`` command); an
online run or a sweep agent's run is logged live. Both end in :func:`finish_run`."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any

from cimnas.search.config import SearchConfig
from cimnas.search.designs import write_json
from cimnas.tracking import wandb_mode

log = logging.getLogger("cimnas.search")


#: Metrics far below 1 that the W&B summary table rounds to 0.0: the same values in units that
#: read as plain numbers (µJ, µs), and EDAP as its base-10 logarithm.
_SCALED = (("energy_j", "energy_uj", 1e6), ("latency_s", "latency_us", 1e6))


def readable_units(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``energy_uj``, ``latency_us`` and ``log10_edap_j_s_mm2`` of ``metrics`` (where present)."""
    out: dict[str, float] = {}
    for key, name, factor in _SCALED:
        if isinstance(metrics.get(key), (int, float)):
            out[prefix + name] = float(metrics[key]) * factor
    edap = metrics.get("edap_j_s_mm2")
    if isinstance(edap, (int, float)) and edap > 0:
        out[prefix + "log10_edap_j_s_mm2"] = math.log10(edap)
    return out


class RecordedRun:
    """Stands in for an offline ``wandb`` run during the search: keeps what is logged (the
    per-generation rows) so :func:`replay_wandb` can write the same run afterwards."""

    def __init__(self, init_kwargs: dict[str, Any]) -> None:
        self.init_kwargs = dict(init_kwargs)
        self.rows: list[dict[str, Any]] = []
        self.finish_payload: dict[str, Any] | None = None
        self.exit_code = 0

    def log(self, row: dict[str, Any], step: int | None = None) -> None:
        self.rows.append(plain_data(row))

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = int(exit_code)

    def payload(self) -> dict[str, Any]:
        return {"init": self.init_kwargs, "rows": self.rows, "finish": self.finish_payload,
                "exit_code": self.exit_code}


def plain_data(value: Any) -> Any:
    """JSON-able copy (tensors / numpy scalars to Python numbers)."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _wandb_mode(config: SearchConfig) -> str:
    """``$WANDB_MODE`` first (sweep agents set it), then ``wandb.mode`` of the config."""
    return wandb_mode(os.environ.get("WANDB_MODE") or config.wandb.mode)


def _start_wandb(config: SearchConfig, name: str, out_dir: Path) -> Any:
    """The job's run: ``None`` (disabled), a :class:`~cimnas.search.finish.RecordedRun` (offline,
    not under a sweep agent: written after the search) or a live ``wandb`` run."""
    mode = _wandb_mode(config)
    if mode == "disabled":
        return None
    kwargs = dict(project=config.wandb.project, name=config.wandb.name or f"{name}-{out_dir.name}",
                  group=config.wandb.group, job_type=name, mode=mode, dir=str(out_dir),
                  config=config.to_dict(), reinit="finish_previous")
    if mode == "offline" and not os.environ.get("WANDB_SWEEP_ID"):
        return RecordedRun(kwargs)
    import wandb

    return wandb.init(**kwargs)


def _finish_wandb(run: Any, summary: dict[str, Any], out_dir: Path) -> None:
    """End the job's run: a recorded run keeps the summary for its replay, a live one is finished now."""
    if isinstance(run, RecordedRun):
        run.finish_payload = plain_data(summary)
        return
    finish_run(run, summary, out_dir)


def finish_run(run: Any, summary: dict[str, Any], out_dir: Path, exclude: tuple[str, ...] = ()) -> None:
    """The summary (with readable units), the figures, the compare and Pareto tables and the
    results folder (minus the W&B run and the files named in ``exclude``) as a versioned
    artifact; then ``run.finish()``."""
    import wandb

    flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
    best = summary.get("best") or {}
    flat.update({f"best/{k}": v for k, v in best.items() if isinstance(v, (int, float, str, bool))})
    flat.update(readable_units(best, prefix="best/"))
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
        if path.is_file() and "wandb" not in path.relative_to(out_dir).parts and path.name not in exclude:
            artifact.add_file(str(path), name=str(path.relative_to(out_dir)))
    run.log_artifact(artifact)
    write_json(Path(run.dir) / "search_summary.json", summary)
    run.finish()
