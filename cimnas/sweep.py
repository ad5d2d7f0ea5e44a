"""Run a W&B sweep YAML locally with Optuna, when no W&B server is reachable.

``python -m cimnas.sweep configs/sweeps/ga.yaml --n-trials 20 [--study-dir runs/sweeps/ga]``

The YAML is the one ``wandb sweep`` takes (``method``, ``metric``, ``parameters``, ``command``),
so the same file drives a W&B agent once a server is reachable. Here:

* ``method``: ``grid`` → Optuna ``GridSampler``, ``random`` → ``RandomSampler``, ``bayes`` →
  ``TPESampler`` (all seeded with ``--seed``);
* ``parameters``: ``value``, ``values`` (categorical), ``min``/``max`` with W&B's
  ``distribution`` names (``int_uniform``, ``uniform``, ``log_uniform_values``, ``q_uniform``;
  integer bounds without a distribution mean ``int_uniform``, as in W&B);
* ``command``: the W&B macros ``${env}``, ``${interpreter}`` (this Python), ``${program}``,
  ``${args}`` (``--name=value``), ``${args_no_equals}``, ``${args_no_hyphens}``, ``${args_json}``;
* each trial runs the command in a subprocess with ``WANDB_MODE`` (offline unless set),
  ``WANDB_RUN_GROUP`` = the study name and ``CIMNAS_METRICS_FILE`` = the trial's metrics file,
  which ``train.py`` and ``search.py`` fill with their final metrics; the sweep's ``metric.name``
  is read from it.

The study lives in an Optuna journal file (``<study-dir>/study.log``): a killed sweep resumes
where it stopped, and several workers (processes or nodes on a shared file system) can run the
same study at once. ``trials.csv`` and ``best.json`` are rewritten atomically after every trial.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser

from cimnas.io import METRICS_FILE_ENV, atomic_write_text

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "log_uniform_values", "q_uniform")


class SweepConfigError(ValueError):
    """A sweep YAML that does not follow the W&B format (names the key and allowed values)."""


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as f:
        config = yaml.safe_load(f)
    return validate_sweep(config)


def validate_sweep(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise SweepConfigError("a sweep config must be a mapping with keys method, metric, parameters, command")
    method = config.get("method")
    if method not in METHODS:
        raise SweepConfigError(f"method={method!r} is not allowed; allowed values: {list(METHODS)}")
    metric = config.get("metric")
    if not isinstance(metric, dict) or "name" not in metric:
        raise SweepConfigError("metric must be a mapping with a 'name' (and 'goal')")
    if metric.get("goal", "minimize") not in GOALS:
        raise SweepConfigError(f"metric.goal={metric.get('goal')!r} is not allowed; allowed values: {list(GOALS)}")
    params = config.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepConfigError("parameters must be a non-empty mapping of dotted names to specs")
    for name, spec in params.items():
        _distribution(name, spec)
    command = config.get("command", ["${env}", "${interpreter}", "${program}", "${args}"])
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise SweepConfigError("command must be a list of strings")
    if "${program}" in command and not config.get("program"):
        raise SweepConfigError("command uses ${program} but the config has no 'program'")
    config["command"] = command
    return config


def _distribution(name: str, spec: Any) -> str:
    if not isinstance(spec, dict):
        raise SweepConfigError(f"parameters.{name} must be a mapping (value / values / min+max)")
    dist = spec.get("distribution")
    if dist is None:
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical"
        elif "min" in spec and "max" in spec:
            both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise SweepConfigError(f"parameters.{name} needs 'value', 'values' or 'min' and 'max'")
    if dist not in DISTRIBUTIONS:
        raise SweepConfigError(f"parameters.{name}.distribution={dist!r} is not allowed; allowed values: {list(DISTRIBUTIONS)}")
    if dist == "categorical" and not spec.get("values"):
        raise SweepConfigError(f"parameters.{name}: a categorical parameter needs a non-empty 'values' list")
    if dist not in ("constant", "categorical"):
        if "min" not in spec or "max" not in spec or not spec["min"] <= spec["max"]:
            raise SweepConfigError(f"parameters.{name}: {dist} needs min <= max")
        if dist == "log_uniform_values" and spec["min"] <= 0:
            raise SweepConfigError(f"parameters.{name}: log_uniform_values needs min > 0")
        if dist == "q_uniform" and "q" not in spec:
            raise SweepConfigError(f"parameters.{name}: q_uniform needs 'q'")
    return dist


def suggest(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    """One Optuna suggestion for a W&B parameter spec."""
    dist = _distribution(name, spec)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        return trial.suggest_categorical(name, list(spec["values"]))
    if dist == "int_uniform":
        return trial.suggest_int(name, int(spec["min"]), int(spec["max"]))
    if dist == "log_uniform_values":
        return trial.suggest_float(name, float(spec["min"]), float(spec["max"]), log=True)
    if dist == "q_uniform":
        return trial.suggest_float(name, float(spec["min"]), float(spec["max"]), step=float(spec["q"]))
    return trial.suggest_float(name, float(spec["min"]), float(spec["max"]))


def grid_space(params: dict[str, Any]) -> dict[str, list[Any]]:
    space = {}
    for name, spec in params.items():
        dist = _distribution(name, spec)
        if dist == "categorical":
            space[name] = list(spec["values"])
        elif dist == "int_uniform":
            space[name] = list(range(int(spec["min"]), int(spec["max"]) + 1))
        elif dist != "constant":
            raise SweepConfigError(f"parameters.{name}: method grid needs values, a constant or int bounds, not {dist}")
    return space


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def build_command(config: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Expand the W&B command macros for one set of parameters (as the W&B agent does)."""
    out: list[str] = []
    for part in config["command"]:
        if part == "${env}":
            continue  # the agent prepends `env`; we pass the environment directly
        if part == "${interpreter}":
            out.append(sys.executable)
        elif part == "${program}":
            out.append(str(config["program"]))
        elif part == "${args}":
            out += [f"--{k}={_format(v)}" for k, v in params.items()]
        elif part == "${args_no_equals}":
            for k, v in params.items():
                out += [f"--{k}", _format(v)]
        elif part == "${args_no_hyphens}":
            out += [f"{k}={_format(v)}" for k, v in params.items()]
        elif part == "${args_json}":
            out.append(json.dumps(params))
        else:
            out.append(part)
    return out


class TrialFailed(RuntimeError):
    pass


def run_sweep(
    sweep_path: str | os.PathLike,
    n_trials: int,
    study_dir: str | os.PathLike | None = None,
    seed: int = 0,
    timeout_s: float | None = None,
    cwd: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run the sweep until ``n_trials`` trials have finished in the study (resuming an earlier
    one in ``study_dir``); return the best trial as a dict."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    config = load_sweep(sweep_path)
    name = config.get("name") or Path(sweep_path).stem
    study_dir = Path(study_dir or Path("runs") / "sweeps" / name)
    study_dir.mkdir(parents=True, exist_ok=True)
    metric, goal = config["metric"]["name"], config["metric"].get("goal", "minimize")
    params = config["parameters"]
    if config["method"] == "grid":
        sampler = optuna.samplers.GridSampler(grid_space(params), seed=seed)
    elif config["method"] == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    storage = JournalStorage(JournalFileBackend(str(study_dir / "study.log")))
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction=goal,
                                load_if_exists=True)

    def objective(trial: Any) -> float:
        try:
            return run_trial(trial)
        except (TrialFailed, subprocess.TimeoutExpired) as exc:
            trial.set_user_attr("error", str(exc))  # kept in trials.csv
            raise

    def run_trial(trial: Any) -> float:
        values = {k: suggest(trial, k, spec) for k, spec in params.items()}
        trial_dir = study_dir / f"trial_{trial.number:04d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = trial_dir / "metrics.json"
        cmd = build_command(config, values)
        env = dict(os.environ)
        env.setdefault("WANDB_MODE", "offline")
        env["WANDB_RUN_GROUP"] = name
        env["WANDB_TAGS"] = f"sweep,{name}"
        env[METRICS_FILE_ENV] = str(metrics_path.resolve())
        env["CIMNAS_TRIAL_NAME"] = trial_dir.name  # the search writes into <output.dir>/<trial>
        trial.set_user_attr("command", shlex.join(cmd))
        start = time.time()
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout_s)
        (trial_dir / "output.log").write_text(proc.stdout)
        trial.set_user_attr("wall_s", round(time.time() - start, 3))
        if proc.returncode != 0:
            raise TrialFailed(f"trial {trial.number}: command exited {proc.returncode}; see {trial_dir / 'output.log'}")
        if not metrics_path.is_file():
            raise TrialFailed(f"trial {trial.number}: the command wrote no {metrics_path.name}")
        metrics = json.loads(metrics_path.read_text())
        if metric not in metrics:
            raise TrialFailed(f"trial {trial.number}: metric {metric!r} not among {sorted(metrics)}")
        value = float(metrics[metric])
        if not math.isfinite(value):
            raise TrialFailed(f"trial {trial.number}: metric {metric} = {value}")
        return value

    def done_count() -> int:
        return sum(t.state.is_finished() for t in study.trials)

    remaining = max(0, n_trials - done_count())
    if remaining:
        study.optimize(objective, n_trials=remaining, catch=(TrialFailed, subprocess.TimeoutExpired),
                       callbacks=[lambda s, t: _write_reports(s, study_dir, metric)])
    _write_reports(study, study_dir, metric)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TrialFailed(f"no trial of {name} completed; see {study_dir}/trial_*/output.log")
    best = study.best_trial
    return {"study": name, "metric": metric, "goal": goal, "best_value": best.value,
            "best_params": best.params, "best_trial": best.number, "trials": len(study.trials),
            "completed": len(complete), "study_dir": str(study_dir)}


def _write_reports(study: Any, study_dir: Path, metric: str) -> None:
    rows = []
    for t in study.trials:
        rows.append({"number": t.number, "state": t.state.name, metric: t.value,
                     "wall_s": t.user_attrs.get("wall_s"), **{f"param:{k}": v for k, v in t.params.items()},
                     "error": t.user_attrs.get("error"), "command": t.user_attrs.get("command")})
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(study_dir / "trials.csv", buf.getvalue())
    try:
        best = study.best_trial
    except ValueError:
        return
    atomic_write_text(study_dir / "best.json", json.dumps(
        {"number": best.number, "trial": f"trial_{best.number:04d}", "trial_dir": str(study_dir / f"trial_{best.number:04d}"),
         "value": best.value, "params": best.params, "command": best.user_attrs.get("command")}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m cimnas.sweep", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("sweep", help="W&B sweep YAML")
    parser.add_argument("--n-trials", type=int, default=10, help="trials to have finished in the study")
    parser.add_argument("--study-dir", default=None, help="default: runs/sweeps/<sweep name>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=None, help="per-trial time limit")
    args = parser.parse_args(argv)
    result = run_sweep(args.sweep, args.n_trials, args.study_dir, args.seed, args.timeout_s)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
