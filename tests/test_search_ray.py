"""Population evaluation through 2 local EvoTorch Ray actors gives the in-process result (about
40 s on 2 cores, mostly Ray start-up; run in a subprocess so Ray never outlives the test)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, sys, pathlib, torch
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    os.environ["EVOTORCH_VERBOSE_LEVEL"] = "0"
    torch.set_num_threads(1)
    import ray
    from cimnas.models.predictor import AccuracyPredictor
    from cimnas.space import apq_mbv2_tiny
    from cimnas.search.config import OutputConfig, SearchConfig, WandbConfig
    from cimnas.search.ga import GAConfig
    from cimnas.search.run import build_setup, run_ga

    tmp = pathlib.Path(sys.argv[1])
    torch.manual_seed(0)
    AccuracyPredictor(apq_mbv2_tiny()).save(tmp / "predictor.pt")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    for actors in (2, None):
        cfg = SearchConfig(predictor=str(tmp / "predictor.pt"), value_stats=None, num_actors=actors,
                           ga=GAConfig(popsize=16, generations=3, seed=4),
                           output=OutputConfig(dir=str(tmp / str(actors)), progress=False, plots=False),
                           wandb=WandbConfig(mode="disabled"))
        results[actors] = run_ga(build_setup(cfg), "joint", tmp / str(actors))
    assert results[2].problem.actors is not None and len(results[2].problem.actors) == 2
    assert torch.equal(results[2].values, results[None].values)
    assert torch.allclose(results[2].evals, results[None].evals, equal_nan=True)
    results[2].problem.kill_actors()
    ray.shutdown()
    print("RAY-OK")
""")


def test_two_local_ray_actors_reproduce_in_process_search(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "RAY-OK" in proc.stdout, proc.stderr[-3000:]
