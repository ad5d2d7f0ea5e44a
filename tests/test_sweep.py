"""Local W&B-sweep runner (Optuna): config validation, macro expansion, trials, resume."""

import json
import sys
import textwrap

import pytest
import yaml

from cimnas.sweep import SweepConfigError, build_command, run_sweep, validate_sweep

PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    x, y = float(args["x"]), int(args["y"])
    if args.get("fail") == "true":
        sys.exit(3)
    with open(os.environ["CIMNAS_METRICS_FILE"], "w") as f:
        json.dump({"loss": (x - 3.0) ** 2 + y, "mode": os.environ["WANDB_MODE"] == "offline"}, f)
    """
)


def _sweep(tmp_path, method="random", extra=None):
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM)
    config = {
        "name": "toy", "program": str(program), "method": method,
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"min": 0.0, "max": 6.0}, "y": {"values": [0, 1]}, **(extra or {})},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_macros_expand_like_the_wandb_agent():
    config = validate_sweep({
        "program": "search.py", "method": "random", "metric": {"name": "m"},
        "parameters": {"ga.pc": {"value": 0.9}},
        "command": ["${env}", "${interpreter}", "${program}", "--config", "c.yaml", "${args}", "${args_no_hyphens}"],
    })
    cmd = build_command(config, {"ga.pc": 0.9, "flag": True})
    assert cmd == [sys.executable, "search.py", "--config", "c.yaml", "--ga.pc=0.9", "--flag=true", "ga.pc=0.9", "flag=true"]


@pytest.mark.parametrize("bad,match", [
    ({"method": "hyper"}, "method='hyper'"),
    ({"metric": {"name": "m", "goal": "up"}}, "metric.goal='up'"),
    ({"parameters": {"p": {"min": 2, "max": 1}}}, "parameters.p"),
    ({"parameters": {"p": {"distribution": "normal", "min": 0, "max": 1}}}, "distribution='normal'"),
])
def test_invalid_sweep_names_the_key(bad, match):
    config = {"program": "p.py", "method": "random", "metric": {"name": "m"}, "parameters": {"p": {"value": 1}}}
    config.update(bad)
    with pytest.raises(SweepConfigError, match=match):
        validate_sweep(config)


def test_trials_run_resume_and_report(tmp_path):
    path = _sweep(tmp_path)
    study = tmp_path / "study"
    first = run_sweep(path, n_trials=2, study_dir=study, seed=1)
    assert first["completed"] == 2 and first["trials"] == 2
    again = run_sweep(path, n_trials=4, study_dir=study, seed=1)  # resumes: 2 more, not 4
    assert again["trials"] == 4 and again["completed"] == 4
    rows = (study / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 5  # header + 4 trials, none duplicated
    best = json.loads((study / "best.json").read_text())
    x, y = best["params"]["x"], best["params"]["y"]
    assert best["value"] == pytest.approx((x - 3.0) ** 2 + y)
    assert again["best_value"] == min(float(r.split(",")[2]) for r in rows[1:])


def test_failed_trials_are_recorded_not_fatal(tmp_path):
    path = _sweep(tmp_path, method="grid", extra={"fail": {"values": [True, False]}, "x": {"values": [1.0, 3.0]}})
    result = run_sweep(path, n_trials=8, study_dir=tmp_path / "grid", seed=0)
    assert result["trials"] == 8 and result["completed"] == 4  # the 4 fail=true points failed
    assert result["best_value"] == 0.0 and result["best_params"]["x"] == 3.0


def test_local_sweep_runs_two_trials_of_a_tiny_search(tmp_path):
    """configs/sweeps/ga.yaml's command shape on a tiny search (the search writes its final
    metrics for the runner; each trial is an offline W&B run)."""
    from pathlib import Path

    import torch

    from cimnas.models.predictor import AccuracyPredictor
    from cimnas.space import apq_mbv2_tiny

    root = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    predictor = tmp_path / "predictor.pt"
    AccuracyPredictor(apq_mbv2_tiny()).save(predictor)
    config = yaml.safe_load((root / "configs/sweeps/ga.yaml").read_text())
    config["parameters"]["ga.popsize"] = {"values": [8, 12]}
    config["parameters"]["ga.generations"] = {"value": 2}
    config["program"] = str(root / "search.py")
    config["command"] = config["command"][:-1] + [
        f"--predictor={predictor}", "--value_stats=null", f"--output.dir={tmp_path / 'results'}",
        "--threads=1", "${args}"]
    path = tmp_path / "ga_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_sweep(path, n_trials=2, study_dir=tmp_path / "study", seed=0, cwd=root)
    assert result["completed"] == 2, (tmp_path / "study").glob("*/output.log")
    for trial in ("trial_0000", "trial_0001"):
        metrics = json.loads((tmp_path / "study" / trial / "metrics.json").read_text())
        assert metrics["best_objective"] > 0 and 0 < metrics["best_accuracy"] <= 1
        # every trial has its own results folder (issue 16: a sweep never overwrites one folder)
        assert (tmp_path / "results" / trial / "best.json").is_file()
        assert list((tmp_path / "results" / trial / "wandb").glob("offline-run-*"))
    best = json.loads((tmp_path / "study" / "best.json").read_text())
    assert best["trial"] in ("trial_0000", "trial_0001") and best["trial_dir"].endswith(best["trial"])
