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

The job is assembled from :mod:`~cimnas.search.setup` (what is loaded once),
:mod:`~cimnas.search.methods` (joint GA, two-stage, hardware-only, random, fixed designs),
:mod:`~cimnas.search.runner` (the GA loop and its checkpoints), :mod:`~cimnas.search.outcome`
(results and the Pareto archive), :mod:`~cimnas.search.plots` and :mod:`~cimnas.search.wandb_glue`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from cimnas.search.config import SearchConfig
from cimnas.search.finish import FINISH_FILE, FINISH_LOG, Finisher, RecordedRun, resolve_finish_mode
from cimnas.search.designs import resolve_network, write_json
from cimnas.search.ga import ConstrainedGA
from cimnas.io import write_metrics_file
from cimnas.search.methods import evaluate_fixed, reference_result, run_method
from cimnas.search.outcome import _print_best, _write_csv, compare_table, markdown_table, search_metrics, write_results
from cimnas.search.result import MethodResult
from cimnas.search.runner import run_ga
from cimnas.search.setup import Setup, build_setup, expert_genome, hardware_dict, load_hardware_space
from cimnas.search.wandb_glue import _finish_wandb, _start_wandb

log = logging.getLogger("cimnas.search")

#: The results folder's marker: which configuration wrote it.
RUN_FILE = "run.json"
#: What a search writes into its results folder (removed by ``output.overwrite``); W&B runs stay.
RESULT_NAMES = ("best.json", "pareto.json", "population.csv", "pareto.csv", "generations.csv", "summary.json",
                "plots", "checkpoint.pt", "compare.csv", "compare.md", RUN_FILE, FINISH_FILE, FINISH_LOG)


class ResultsFolderError(ValueError):
    """The results folder holds another configuration's search."""


#: Set by the local sweep runner (:mod:`cimnas.sweep`) to the trial's name.
TRIAL_NAME_ENV = "CIMNAS_TRIAL_NAME"


def trial_output_dir(config: SearchConfig) -> SearchConfig:
    """A sweep trial writes into its own folder ``<output.dir>/<trial>``: the local runner names
    it (``$CIMNAS_TRIAL_NAME``), a W&B agent by its run (``$WANDB_SWEEP_ID`` + ``$WANDB_RUN_ID``)."""
    trial = os.environ.get(TRIAL_NAME_ENV)
    if not trial and os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        trial = f"sweep-{os.environ['WANDB_SWEEP_ID']}-{os.environ['WANDB_RUN_ID']}"
    if not trial:
        return config
    out = str(Path(config.output.dir) / trial)
    log.info("sweep trial %s: results in %s", trial, out)
    return dataclasses.replace(config, output=dataclasses.replace(config.output, dir=out))


def prepare_results_folder(config: SearchConfig) -> bool:
    """Make ``output.dir`` safe to write: empty or new -> fresh run; same configuration
    (:meth:`SearchConfig.fingerprint`) -> resume from its checkpoints; another configuration ->
    refuse, unless ``output.overwrite`` (then the previous results are removed first). Returns
    whether to resume."""
    import shutil

    out_dir = Path(config.output.dir)
    methods = [m for m in config.compare_methods if m != "fixed"] if config.mode == "compare" else []
    names = set(RESULT_NAMES) | set(methods) | {"joint", "hardware_only", "two_stage", "random"}
    present = sorted(p.name for p in out_dir.iterdir() if p.name in names) if out_dir.is_dir() else []
    fingerprint = config.fingerprint()
    if present:
        marker = out_dir / RUN_FILE
        previous = None
        if marker.is_file():
            try:
                previous = json.loads(marker.read_text()).get("fingerprint")
            except (OSError, ValueError):
                previous = None
        if previous == fingerprint and not config.output.overwrite:
            log.info("%s holds a search of this configuration (%s): resuming from its checkpoints", out_dir, fingerprint)
            return True
        if not config.output.overwrite:
            what = f"configuration {previous}" if previous else "results without a run.json marker"
            raise ResultsFolderError(
                f"output.dir={str(out_dir)!r} holds a search of another {what} (this one: {fingerprint}; "
                f"found {', '.join(present)}); choose another --output.dir, or pass --output.overwrite true "
                f"to replace it")
        for name in present:
            path = out_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        log.info("%s: previous results removed (output.overwrite)", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RUN_FILE, {"fingerprint": fingerprint, "mode": config.mode, "config": config.to_dict()})
    return bool(config.resume)


def run_search(config: SearchConfig, accuracy: Any | None = None, command: bool = False) -> dict[str, Any]:
    """Run the job described by ``config``; returns its summary (also written to summary.json).
    ``command``: called by the ``search.py`` command, which leaves right after (then
    ``output.finish: auto`` draws the figures and writes an offline W&B run in a worker)."""
    torch.manual_seed(int(config.ga.seed))
    if config.threads:
        torch.set_num_threads(int(config.threads))
    config = trial_output_dir(config)
    setup = build_setup(config, accuracy)
    if prepare_results_folder(config) and not config.resume:
        config = dataclasses.replace(config, resume=True)
        setup.config = config
    out_dir = Path(config.output.dir)
    space_sizes = setup.genome.space_size_by_part()
    reference = reference_result(setup)  # validates the expert designs before anything starts
    finisher = Finisher(out_dir, resolve_finish_mode(config.output.finish, command))
    wandb_run = _start_wandb(config, config.mode, out_dir)
    if isinstance(wandb_run, RecordedRun):
        finisher.wandb = wandb_run
    try:
        if config.mode != "compare":
            result = run_method(setup, config.mode, out_dir, reference, wandb_run)
            summary = write_results(setup, result, out_dir, reference, finisher=finisher, extra_summary={
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
                write_results(setup, results[method], out_dir / method, reference, finisher=finisher)
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
            if not isinstance(wandb_run, RecordedRun):
                finisher.draw_plots_now()  # a live run logs the figures as it finishes
            _finish_wandb(wandb_run, summary, out_dir)
        write_metrics_file(search_metrics(summary))  # for the local sweep runner (cimnas.sweep)
    except BaseException:
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)
        if isinstance(wandb_run, RecordedRun):  # the failed run is still written (exit code 1), no figures
            finisher.plot_jobs.clear()
            _run_finisher(finisher)
        raise
    _run_finisher(finisher)
    return summary


def _run_finisher(finisher: Finisher) -> None:
    try:
        finisher.run()
    except Exception as exc:  # noqa: BLE001 - figures and the W&B run must never lose the results
        log.warning("figures / W&B run not written: %s", exc)


__all__ = ["run_search", "build_setup", "run_ga", "evaluate_fixed", "expert_genome", "hardware_dict",
           "load_hardware_space", "resolve_network", "ConstrainedGA", "MethodResult", "Setup"]
