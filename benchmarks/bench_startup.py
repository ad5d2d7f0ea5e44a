"""Wall time of the main job, ``python search.py`` (embedded default), as a user runs it.

    python benchmarks/bench_startup.py [--runs 5] [--baseline /path/to/older/checkout] [--wandb offline|disabled]

Runs the whole command in fresh processes (imports, W&B set-up, the GA, plots, results, exit),
alternating with ``--baseline`` (the same command in another checkout, e.g. a ``git worktree`` of an
older commit, run with that checkout on ``PYTHONPATH``) so the ratio holds on a machine whose
speed drifts, and prints the median and minimum wall time, the import time of the search's
modules (``python -X importtime``) and the ratio to the baseline. Targets (issue 19): median wall
<= 5 s on an idle 2-core machine; <= 40 % of the older wall measured side by side.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(repo: Path, out_dir: Path, wandb: str) -> tuple[float, float]:
    """Wall time of the command, and until its background worker (figures, offline W&B run;
    ``cimnas.search.finish``) is done too — waited for, so it never overlaps the next run."""
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", WANDB_MODE=wandb, WANDB_SILENT="true")
    env.pop("CIMNAS_SEARCH_FINISH", None)  # the command's own default
    # a fresh folder each run: a rerun into the same folder would resume (and finish at once)
    cmd = [sys.executable, "search.py", "--output.dir", str(out_dir), "--wandb.mode", wandb]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{repo}: search.py exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    job = out_dir / "finish.json"
    deadline = time.perf_counter() + 120
    while job.exists() and time.perf_counter() < deadline:
        time.sleep(0.05)
    return wall, time.perf_counter() - start


def import_s(repo: Path) -> float:
    """Cumulative import time of ``cimnas.search.cli`` + ``cimnas.search.run`` (what search.py loads)."""
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cimnas.search.cli, cimnas.search.run"],
                          cwd=repo, env=env, capture_output=True, text=True)
    total = 0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):  # top-level imports only
            total += int(m.group(1))
    return total / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time side by side")
    ap.add_argument("--wandb", default="offline", choices=["offline", "disabled"])
    a = ap.parse_args()
    repos = [("this checkout", REPO)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    walls: dict[str, list[float]] = {name: [] for name, _ in repos}
    done: dict[str, list[float]] = {name: [] for name, _ in repos}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.runs + 1):  # the first round warms the file cache and is not counted
            for name, repo in repos:
                w, d = run_once(repo, Path(tmp) / f"{name.replace(' ', '_')}_{i}", a.wandb)
                if i:
                    walls[name].append(w)
                    done[name].append(d)
    for name, repo in repos:
        w = walls[name]
        print(f"{name}: python search.py (wandb {a.wandb}) wall median {statistics.median(w):.2f} s, "
              f"min {min(w):.2f} s over {len(w)} runs; imports {import_s(repo):.2f} s   [target: median <= 5 s idle]")
        print(f"{name}: until figures and W&B run are written too (background worker): median "
              f"{statistics.median(done[name]):.2f} s")
    if a.baseline:
        ratios = [x / y for x, y in zip(walls["this checkout"], walls["baseline"])]
        print(f"ratio this / baseline: median {statistics.median(ratios):.2f} (pairwise)   [target: <= 0.40]")


if __name__ == "__main__":
    main()
