"""The end of a search job that needs no search state: the figures and the offline W&B run.

Both are slow to start (matplotlib ~1-2 s, an offline W&B run ~1.5 s: wandb's import and its
service process) and neither changes a result, so they are written from plain data — the figures'
data (:func:`cimnas.search.plots.plot_data`) and the rows / summary / tables the run would have
logged — either in this process (``inline``) or by a detached worker process that the command
starts after every result file is written and then leaves (``background``)::

    python -m cimnas.search.finish <results>/finish.json     # what the worker runs

``output.finish`` chooses: ``auto`` (default) is ``background`` for the ``search.py`` command and
``inline`` when :func:`~cimnas.search.run.run_search` is called from Python; the environment
variable ``CIMNAS_SEARCH_FINISH`` (``inline`` / ``background``) overrides both. The worker's output
goes to ``<results>/finish.log``; each figure appears atomically, the W&B run folder when it is
complete.

**W&B.** An *offline* run is not visible anywhere until ``wandb sync`` uploads it, so logging it
live buys nothing: the rows are recorded during the GA (:class:`RecordedRun`) and written in one
go afterwards, with the same keys, values, order, summary, tables, figures and results artifact
as a live run. A W&B sweep agent (``$WANDB_SWEEP_ID``) or ``wandb.mode online`` log live in the
process, as before.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cimnas.io import atomic_write_text
from cimnas.search.plots import draw_plots, planned_plots
from cimnas.search.wandb_glue import RecordedRun, finish_run

log = logging.getLogger("cimnas.search")

FINISH_FILE = "finish.json"
FINISH_LOG = "finish.log"
FINISH_MODES = ("auto", "inline", "background")
FINISH_ENV = "CIMNAS_SEARCH_FINISH"


def resolve_finish_mode(configured: str, command: bool) -> str:
    """``inline`` or ``background``: ``$CIMNAS_SEARCH_FINISH``, else ``configured``; ``auto`` is
    ``background`` for the command line (``command``) and ``inline`` for a library call."""
    mode = os.environ.get(FINISH_ENV) or configured
    if mode not in FINISH_MODES:
        source = f"${FINISH_ENV}" if os.environ.get(FINISH_ENV) else "output.finish"
        raise ValueError(f"{source}={mode!r} is not allowed; allowed values: {list(FINISH_MODES)}")
    if mode == "auto":
        return "background" if command else "inline"
    return mode


class Finisher:
    """Collects the figure jobs and the recorded W&B run of one search job, then draws / writes
    them in this process or hands them to a detached worker (:meth:`run`)."""

    def __init__(self, out_dir: Path, mode: str) -> None:
        if mode not in ("inline", "background"):
            raise ValueError(f"finish mode must be 'inline' or 'background', got {mode!r}")
        self.out_dir, self.mode = Path(out_dir), mode
        self.plot_jobs: list[dict[str, Any]] = []
        self.wandb: RecordedRun | None = None

    def add_plots(self, data: dict[str, Any], plot_dir: Path) -> list[str]:
        """Queue the figures of ``data``; returns the files they go to."""
        self.plot_jobs.append({"data": data, "plot_dir": str(plot_dir)})
        return [str(Path(plot_dir) / f"{name}.png") for name in planned_plots(data)]

    def draw_plots_now(self) -> None:
        """Draw the queued figures in this process (a live W&B run logs them when it finishes)."""
        for item in self.plot_jobs:
            draw_plots(item["data"], Path(item["plot_dir"]))
        self.plot_jobs.clear()

    def job(self) -> dict[str, Any]:
        return {"plots": self.plot_jobs, "wandb": self.wandb.payload() if self.wandb is not None else None,
                "out_dir": str(self.out_dir)}

    def empty(self) -> bool:
        return not self.plot_jobs and self.wandb is None

    def run(self) -> int | None:
        """Do the work now (``inline``) or start the worker (``background``; returns its pid)."""
        if self.empty():
            return None
        if self.mode == "inline":
            finish_job(self.job())
            return None
        path = self.out_dir / FINISH_FILE
        atomic_write_text(path, json.dumps(self.job(), allow_nan=True))
        with open(self.out_dir / FINISH_LOG, "ab") as logf:
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
            proc = subprocess.Popen([sys.executable, "-m", "cimnas.search.finish", str(path)], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                    cwd=os.getcwd())
        what = " and ".join(w for w, on in (("figures", bool(self.plot_jobs)), ("offline W&B run", self.wandb is not None)) if on)
        print(f"{what} are being written in the background (pid {proc.pid}; log {self.out_dir / FINISH_LOG})",
              flush=True)
        return proc.pid


def finish_job(job: dict[str, Any]) -> None:
    """Draw every queued figure, then write the recorded W&B run (figures first: the run logs them)."""
    for item in job.get("plots") or []:
        draw_plots(item["data"], Path(item["plot_dir"]))
    if job.get("wandb"):
        replay_wandb(job["wandb"], Path(job["out_dir"]))


def replay_wandb(payload: dict[str, Any], out_dir: Path) -> None:
    """Write a recorded run: ``wandb.init`` with the recorded arguments, every row in order, then
    the end-of-run summary / figures / tables / artifact (:func:`~cimnas.search.wandb_glue.finish_run`)."""
    import wandb

    run = wandb.init(**payload["init"])
    for row in payload["rows"]:
        run.log(row)
    if payload.get("finish") is not None and not payload.get("exit_code"):
        finish_run(run, payload["finish"], out_dir, exclude=(FINISH_FILE, FINISH_LOG))
    else:
        run.finish(exit_code=int(payload.get("exit_code") or 1))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cimnas.search.finish <results>/finish.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = Path(args[0])
    job = json.loads(path.read_text())
    finish_job(job)
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "teardown", None) is not None:
        wandb.teardown()  # the service process has written the run
    path.unlink(missing_ok=True)  # done: what is left of a job is the figures and the run
    log.info("finished %s", path.parent)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip the interpreter's slow teardown of torch / wandb; everything is written
