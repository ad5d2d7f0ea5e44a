"""Technology-node transfer: how fast a saved population is re-scored at a new node, and what a
re-score + warm start costs next to a full search there.

    python benchmarks/bench_transfer.py [--sizes 150 1000 10000] [--space apq_mbv2_tiny]

Accuracy is a constant here (the cost model is what is timed); figures go to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from cimnas.search.cli import parse_config
from cimnas.search.accuracy import ConstantAccuracy
from cimnas.search.transfer import node_setup, rescore, run_search, transfer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 1000, 10000])
    p.add_argument("--space", default="apq_mbv2_tiny")
    p.add_argument("--hardware", default="configs/hw/reference.yaml")
    p.add_argument("--popsize", type=int, default=40)
    p.add_argument("--generations", type=int, default=30)
    p.add_argument("--warm-generations", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(1)
    config = parse_config(["--space", a.space, "--hardware", a.hardware, "--value_stats", "null",
                           "--output.progress", "false", "--wandb.mode", "disabled"])
    config = dataclasses.replace(config, ga=dataclasses.replace(config.ga, popsize=a.popsize, generations=a.generations))
    acc = ConstantAccuracy(0.8)
    source = node_setup(config, None, acc)
    target = node_setup(config, 7.0, acc)
    for n in a.sizes:
        values = source.genome.random(n, torch.Generator().manual_seed(n))
        rescore(target, values[:8])  # warm-up
        start = time.perf_counter()
        scored = rescore(target, values)
        wall = time.perf_counter() - start
        print(json.dumps({"designs": n, "rescore_s": round(wall, 4), "designs_per_s": round(n / wall, 1),
                          "feasible": int((scored.evals[:, scored.problem.cv_column] <= 0).sum())}))
    src = run_search(source, config.ga)
    res = transfer(config, src.values, 7.0, a.warm_generations, accuracy=acc)
    full = run_search(target, config.ga)
    print(json.dumps({"full_search_s": round(full.wall_s, 3), "full_evaluations": full.n_evaluations,
                      "rescore_s": round(res.rescored.wall_s, 4), "warm_s": round(res.warm.wall_s, 3),
                      "warm_evaluations": res.warm.n_evaluations,
                      "speed_up": round(full.wall_s / (res.rescored.wall_s + res.warm.wall_s), 2)}))


if __name__ == "__main__":
    main()
