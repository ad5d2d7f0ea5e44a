"""The end of a search job from plain data (cimnas.search.finish): a recorded offline W&B run
writes what a live run logs, the figures drawn from plot data, the background worker."""

import json
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from cimnas.search.config import OutputConfig, SearchConfig, WandbConfig
from cimnas.search.finish import FINISH_ENV, FINISH_FILE, RecordedRun, resolve_finish_mode
from cimnas.search.ga import GAConfig
from cimnas.search.run import run_search

REPO = Path(__file__).resolve().parents[1]


from test_search import predictor_path  # noqa: E402,F401  (fixture: an untrained predictor file)


def _config(out: Path, predictor_path: Path, mode: str, plots: bool = False, finish: str = "auto") -> SearchConfig:
    return SearchConfig(predictor=str(predictor_path), value_stats=None, hardware=str(REPO / "configs/hw/reference.yaml"),
                        ga=GAConfig(popsize=12, generations=3, seed=4),
                        output=OutputConfig(dir=str(out), progress=False, plots=plots, finish=finish),
                        wandb=WandbConfig(mode=mode))


class _FakeWandb(types.ModuleType):
    """Records the calls the search makes on ``wandb``."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("wandb")
        self.calls, self.tmp = [], tmp
        outer = self

        class Run:
            id = "fake"
            dir = str(tmp)

            def __init__(self) -> None:
                self.summary = {}

            def log(self, row, step=None):
                outer.calls.append(("log", dict(row)))

            def log_artifact(self, artifact):
                outer.calls.append(("artifact", sorted(artifact.files)))

            def finish(self, exit_code=0):
                outer.calls.append(("finish", exit_code, dict(self.summary)))

        class Artifact:
            def __init__(self, name, type):
                self.files = []

            def add_file(self, path, name):
                self.files.append(name)

        self.Run, self.Artifact = Run, Artifact
        self.Image = lambda path: ("image", Path(path).name)
        self.Table = lambda columns, data: ("table", tuple(columns), len(data))

    def init(self, **kwargs):
        kept = {k: v for k, v in kwargs.items() if k != "mode"}
        kept["config"] = {k: v for k, v in kept["config"].items() if k != "wandb"}  # holds the mode too
        self.calls.append(("init", kept))
        return self.Run()


def _timeless(calls):
    """The calls without wall-clock fields (elapsed / wall time / evaluations per second)."""
    drop = ("elapsed_s", "wall_s", "evaluations_per_s")
    out = []
    for call in calls:
        if call[0] == "log":
            out.append(("log", {k: v for k, v in call[1].items() if not k.endswith(drop)}))
        elif call[0] == "finish":
            out.append(("finish", call[1], {k: v for k, v in call[2].items() if not k.endswith(drop)}))
        else:
            out.append(call)
    return out


def test_recorded_offline_run_logs_what_a_live_run_logs(predictor_path, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    calls = {}
    for mode in ("online", "offline"):  # online: live in the process; offline: recorded, then replayed
        fake = _FakeWandb(tmp_path)
        monkeypatch.setitem(sys.modules, "wandb", fake)
        out = tmp_path / "run"  # the same folder name: the run name is derived from it
        if out.exists():
            import shutil

            shutil.rmtree(out)
        run_search(_config(out, predictor_path, mode, plots=True, finish="inline"))
        calls[mode] = _timeless(fake.calls)
    live, recorded = calls["online"], calls["offline"]
    assert [c[0] for c in live] == [c[0] for c in recorded]
    assert live == recorded
    rows = [c for c in live if c[0] == "log" and "joint/generation" in c[1]]
    assert [r[1]["joint/generation"] for r in rows] == [1, 2, 3]
    assert ("image", "pareto.png") in [v for c in live if c[0] == "log" for v in c[1].values()]


def test_finish_mode_resolution(monkeypatch):
    monkeypatch.delenv(FINISH_ENV, raising=False)
    assert resolve_finish_mode("auto", command=True) == "background"
    assert resolve_finish_mode("auto", command=False) == "inline"
    assert resolve_finish_mode("inline", command=True) == "inline"
    monkeypatch.setenv(FINISH_ENV, "background")
    assert resolve_finish_mode("inline", command=False) == "background"
    monkeypatch.setenv(FINISH_ENV, "later")
    with pytest.raises(ValueError, match=r"CIMNAS_SEARCH_FINISH='later'.*allowed values"):
        resolve_finish_mode("auto", command=True)


def test_recorded_run_keeps_plain_rows():
    run = RecordedRun({"project": "p"})
    run.log({"a/x": torch.tensor(1.5), "a/n": 3}, step=None)
    run.finish(exit_code=1)
    payload = run.payload()
    assert payload["rows"] == [{"a/x": 1.5, "a/n": 3}] and payload["exit_code"] == 1
    json.dumps(payload)


def test_background_worker_draws_the_figures_and_writes_the_offline_run(predictor_path, tmp_path, monkeypatch):
    monkeypatch.delenv(FINISH_ENV, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    out = tmp_path / "bg"
    summary = run_search(_config(out, predictor_path, "offline", plots=True), command=True)
    # every result is written before the command returns; the figures follow from the worker
    for name in ("best.json", "summary.json", "population.csv", "generations.csv"):
        assert (out / name).is_file(), name
    planned = sorted(Path(p).name for p in summary["plots"])
    assert planned == ["breakdown.png", "convergence.png", "pareto.png"]
    deadline = time.time() + 240
    while (out / FINISH_FILE).exists() and time.time() < deadline:
        time.sleep(0.5)
    assert not (out / FINISH_FILE).exists(), (out / "finish.log").read_text()
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == planned
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    written = json.loads((runs[0] / "files" / "search_summary.json").read_text())
    assert written["best"] == json.loads(json.dumps(summary["best"]))
