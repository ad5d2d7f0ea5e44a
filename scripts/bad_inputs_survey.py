"""Count the outcomes of the bad-input table (tests/bad_inputs_table.py) on a checkout, each case
in its own subprocess exactly as a user would run it:

    python scripts/bad_inputs_survey.py [--root CHECKOUT] [--out survey.json]

Outcomes: ``named`` (exit != 0, an ``error:`` line naming the file and field, no traceback),
``unnamed`` (exit != 0 without naming them), ``traceback`` (a Python traceback), ``silent``
(exit status 0), ``missing`` (the checkout has no such entry point); ``wrote`` counts cases that
left files behind. Prints the counts and, with ``--out``, writes every case's outcome.

The cases run on a scratch copy of the checkout (its ``cimnas/``, ``configs/`` and scripts; the
table's artifact paths are redirected into the copy), so an entry point that writes where it must
not (an old checkout writing into its artifacts) damages only the copy.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "tests"))
from bad_inputs_table import ART, CASES, ENTRIES, expand, make_fixtures  # noqa: E402


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
    source = Path(args.root).resolve()
    counts: collections.Counter = collections.Counter()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root = scratch / "checkout"
        root.mkdir()
        for name in ("cimnas", "configs", "search.py", "train.py"):
            (shutil.copytree if (source / name).is_dir() else shutil.copy2)(
                source / name, root / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (source / name).is_dir() else {}))
        env = {**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        art = str(root / "cimnas" / "artifacts")
        (scratch / "fx").mkdir()
        fixtures = make_fixtures(scratch / "fx")
        art_files = files_under(root / "cimnas" / "artifacts")
        art_stamp = {p: Path(p).stat().st_mtime_ns for p in art_files}
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
            argv = [a.replace(str(ART), art) for a in expand(case_args, fixtures)]
            proc = subprocess.run([sys.executable, *script, *argv], cwd=work, env=env,
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
            wrote = sorted((files_under(scratch / "fx") - before) | files_under(work, ("configs", "cimnas"))
                           | {p for p in files_under(root / "cimnas" / "artifacts") if p not in art_files}
                           | {p for p, m in art_stamp.items() if Path(p).stat().st_mtime_ns != m})
            for p in wrote:  # undo writes into the copy's artifacts, so every case starts alike
                if p.startswith(art):
                    rel = Path(p).relative_to(art)
                    if (source / "cimnas" / "artifacts" / rel).is_file():
                        shutil.copy2(source / "cimnas" / "artifacts" / rel, p)
                    else:
                        Path(p).unlink()
            art_stamp.update({p: Path(p).stat().st_mtime_ns for p in art_stamp})
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
