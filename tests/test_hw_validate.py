"""``python -m cimnas.hw.validate`` on the shared CiMLoop runs meets the calibration targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


# A copy of tests/data/cimloop-layer-runs.json (24 native CiMLoop runs), shipped with the
# tests so the calibration targets are checked on every checkout.
RUNS = Path(__file__).resolve().parent / "data" / "cimloop-layer-runs.json"


def test_validate_command_meets_targets(tmp_path):
    plot = tmp_path / "v.png"
    out = subprocess.run([sys.executable, "-m", "cimnas.hw.validate", str(RUNS), "--per-record", "--plot", str(plot)],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["records"] == 24
    assert summary["feasibility_agreement"] == "24/24"
    assert summary["energy_median_rel_err"] <= 0.10
    assert summary["cycles_median_rel_err"] <= 0.10
    assert summary["area_max_rel_err"] <= 0.005
    assert set(summary) == {"records", "feasibility_agreement", "energy_median_rel_err", "energy_max_rel_err",
                            "cycles_median_rel_err", "latency_median_rel_err", "area_max_rel_err", "worst_component"}
    assert plot.stat().st_size > 1000


def test_validate_rejects_malformed_records(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"records": [{"layer": {}}]}))
    res = subprocess.run([sys.executable, "-m", "cimnas.hw.validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and "lacks" in res.stderr


def test_validate_counts_infeasible_records(tmp_path):
    records = json.loads(RUNS.read_text())["records"][:2]
    tiny = dict(records[0])
    tiny["layer"] = {"kind": "linear", "N": 1, "C": 4096, "M": 4096, "R": 1, "S": 1, "P": 1, "Q": 1, "G": 1}
    tiny["hardware"] = dict(tiny["hardware"], router_groups=1, tiles_per_group=4, macros_per_tile=4, rows=32, cols=32)
    tiny["expected"] = {"feasible": False}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"records": [records[0], tiny]}))
    out = subprocess.run([sys.executable, "-m", "cimnas.hw.validate", str(path), "--json"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert json.loads(out[-1])["feasibility_agreement"] == "2/2"
    rows = json.loads(out[0])
    assert rows[1]["feasible"] is False
