"""Count the outcomes of the bad-input table (tests/bad_inputs_table.py) on a checkout, each case
in its own subprocess exactly as a user would run it:

    python scripts/bad_inputs_survey.py [--root CHECKOUT] [--out survey.json]

Outcomes: ``named`` (exit != 0, an ``error:`` line naming the file and field, no traceback),
``unnamed`` (exit != 0 without naming them), ``traceback`` (a Python traceback), ``silent``
(exit status 0), ``missing`` (the checkout has no such entry point); ``wrote`` counts cases that
left files behind. Prints the counts and, with ``--out``, writes every case's outcome.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "tests"))
from bad_inputs_table import CASES, ENTRIES, expand, make_fixtures  # noqa: E402


def files_under(folder: Path, skip: tuple[str, ...] = ()) -> set[str]:
    out = set()
    for top in folder.iterdir():
        if top.name in skip:
            continue
        out |= {str(p) for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(HERE), help="checkout whose entry points are run")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated case ids")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    env = {**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    counts: collections.Counter = collections.Counter()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "fx").mkdir()
        fixtures = make_fixtures(scratch / "fx")
        for name, entry, case_args, expected in CASES:
            if args.only and name not in args.only.split(","):
                continue
            work = scratch / name
            work.mkdir()
            for link in ("configs", "cimnas"):
                (work / link).symlink_to(root / link)
            script = ENTRIES[entry][0].split()
            if script[0] != "-m":
                script = [str(root / script[0])]
            elif not (root / (script[1].replace(".", "/") + ".py")).is_file():
                counts["missing"] += 1
                results.append({"case": name, "outcome": "missing"})
                continue
            before = files_under(scratch / "fx")
            proc = subprocess.run([sys.executable, *script, *expand(case_args, fixtures)], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=300)
            err = proc.stderr
            lines = [l for l in err.splitlines() if l.startswith(("error:", "refused:"))]
            if proc.returncode == 0:
                outcome = "silent"
            elif "Traceback (most recent call last)" in err:
                outcome = "traceback"
            elif lines and all(t in lines[-1] for t in expected):
                outcome = "named"
            else:
                outcome = "unnamed"
            wrote = sorted((files_under(scratch / "fx") - before) | files_under(work, ("configs", "cimnas")))
            counts[outcome] += 1
            counts["wrote"] += bool(wrote)
            results.append({"case": name, "outcome": outcome, "code": proc.returncode, "wrote": wrote[:3],
                            "last_line": (err.strip().splitlines() or [""])[-1][:200]})
            print(f"{name:45s} {outcome:9s} exit {proc.returncode}{'  WROTE ' + str(len(wrote)) if wrote else ''}",
                  flush=True)
    print(json.dumps(dict(counts), sort_keys=True))
    if args.out:
        Path(args.out).write_text(json.dumps({"root": str(root), "counts": dict(counts), "cases": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
