"""``python -m cimnas.hw.validate RECORDS.json [--per-record] [--json] [--plot F.png]``

Compare the cost model with CiMLoop runs given as records (format of
``tests/data/cimloop-layer-runs.json``: a top-level ``records`` list, each with ``layer``
{kind, N, C, M, R, S, P, Q, G}, bits, ``average_input_value`` / ``average_weight_value`` (they
override the histogram encoder), ``hardware`` and ``expected``). All records are scored in ONE
batched call. Prints a per-record table (or JSON with ``--json``) and, as its LAST line, one JSON
summary: records, feasibility_agreement "k/N", energy median / max relative error, cycles and
latency median relative error, area max relative error, worst component (largest median
relative error over records).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser

from cimnas.io import atomic_savefig, pyplot
from cimnas.hw.cost_model import evaluate
from cimnas.hw.params import HardwareBatch, HardwareParams
from cimnas.hw.result import COMPONENTS
from cimnas.hw.workload import Workload

#: Components whose expected energy is below this share of the record's total are not ranked
#: for "worst_component" (CiMLoop's column drivers are ~1e-21 J, pure numerical noise).
MIN_COMPONENT_SHARE = 1e-6


def load_records(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a top-level 'records' list")
    for i, r in enumerate(records):
        for key in ("layer", "input_bits", "weight_bits", "hardware", "expected"):
            if key not in r:
                raise ValueError(f"{path}: records[{i}] lacks '{key}'")
    return records


def records_to_batch(records: list[dict[str, Any]]) -> tuple[Workload, HardwareBatch]:
    """One workload row (L = 1) and one hardware design per record."""
    layers = []
    for r in records:
        layer = dict(r["layer"])
        layer.update(input_bits=r["input_bits"], weight_bits=r["weight_bits"],
                     output_bits=r.get("output_bits", 8), name=r.get("id", ""))
        for key in ("average_input_value", "average_weight_value", "input_hist", "weight_hist"):
            if r.get(key) is not None:
                layer[key] = r[key]
        layers.append(layer)
    rows = [Workload.from_layers([layer]) for layer in layers]
    merged: dict[str, Any] = {}
    for f in Workload.__dataclass_fields__:
        values = [getattr(w, f) for w in rows]
        if f == "names":
            merged[f] = None
        elif all(v is None for v in values):
            merged[f] = None
        elif f in ("average_input_value", "average_weight_value"):
            merged[f] = torch.cat([v if v is not None else torch.full((1, 1), float("nan")) for v in values])
        elif f in ("input_hist", "weight_hist"):
            from cimnas.hw.workload import DEFAULT_INPUT_HIST, DEFAULT_WEIGHT_HIST
            default = DEFAULT_INPUT_HIST if f == "input_hist" else DEFAULT_WEIGHT_HIST
            merged[f] = torch.cat([v if v is not None else torch.tensor(default).view(1, 1, -1) for v in values])
        else:
            merged[f] = torch.cat(values)
    hw = HardwareBatch.from_params([HardwareParams.from_dict(r["hardware"]) for r in records])
    return Workload(**merged), hw


def _rel(ours: float, ref: float) -> float:
    if not math.isfinite(ours):
        return math.inf
    if ref == 0:
        return 0.0 if ours == 0 else math.inf
    return abs(ours - ref) / abs(ref)


def compare(records: list[dict[str, Any]], *, reference_compat: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    workload, hw = records_to_batch(records)
    result = evaluate(workload, hw, reference_compat=reference_compat)
    rows = []
    comp_errs: dict[str, list[float]] = {c: [] for c in COMPONENTS}
    e_err, c_err, l_err, a_err = [], [], [], []
    agree = 0
    for i, r in enumerate(records):
        exp = r["expected"]
        ours_feasible = bool(result.feasible[i])
        exp_feasible = bool(exp.get("feasible", True))
        agree += int(ours_feasible == exp_feasible)
        row: dict[str, Any] = {"id": r.get("id", str(i)), "feasible": ours_feasible, "expected_feasible": exp_feasible}
        if exp_feasible and ours_feasible:
            for name, ours, ref, bucket in (
                ("energy_j", float(result.energy_j[i]), exp.get("energy_j"), e_err),
                ("cycles", float(result.cycles[i]), exp.get("cycles"), c_err),
                ("latency_s", float(result.latency_s[i]), exp.get("latency_s"), l_err),
                ("area_mm2", float(result.area_mm2[i]), exp.get("area_mm2"), a_err),
            ):
                if ref is None:
                    continue
                err = _rel(ours, float(ref))
                bucket.append(err)
                row[name] = {"ours": ours, "expected": float(ref), "rel_err": err}
            total = float(exp.get("energy_j") or 0.0)
            comps = {}
            for c, ref in (exp.get("energy_by_component_j") or {}).items():
                if c not in result.energy_by_component_j:
                    continue
                ours = float(result.energy_by_component_j[c][i])
                err = _rel(ours, float(ref))
                comps[c] = {"ours": ours, "expected": float(ref), "rel_err": err}
                if total > 0 and float(ref) >= MIN_COMPONENT_SHARE * total:
                    comp_errs[c].append(err)
            row["energy_by_component_j"] = comps
            row["area_by_component_mm2"] = {
                c: {"ours": float(result.area_by_component_mm2[c][i]), "expected": float(ref),
                    "rel_err": _rel(float(result.area_by_component_mm2[c][i]), float(ref))}
                for c, ref in (exp.get("area_by_component_mm2") or {}).items() if c in result.area_by_component_mm2
            }
        rows.append(row)
    med = lambda v: statistics.median(v) if v else None  # noqa: E731
    ranked = {c: statistics.median(v) for c, v in comp_errs.items() if v}
    summary = {
        "records": len(records),
        "feasibility_agreement": f"{agree}/{len(records)}",
        "energy_median_rel_err": med(e_err),
        "energy_max_rel_err": max(e_err) if e_err else None,
        "cycles_median_rel_err": med(c_err),
        "latency_median_rel_err": med(l_err),
        "area_max_rel_err": max(a_err) if a_err else None,
        "worst_component": max(ranked, key=ranked.get) if ranked else None,
    }
    return rows, summary


def format_table(rows: list[dict[str, Any]], per_record: bool) -> str:
    lines = [f"{'record':<22} {'feas':>5} {'energy ours/exp (err)':>32} {'cycles ours/exp':>18} {'area err':>9}"]
    for r in rows:
        if "energy_j" not in r:
            lines.append(f"{r['id']:<22} {str(r['feasible'])[:5]:>5} (expected feasible={r['expected_feasible']})")
            continue
        e, c, a = r["energy_j"], r.get("cycles"), r.get("area_mm2")
        cyc = f"{c['ours']:.0f}/{c['expected']:.0f}" if c else "-"
        area = f"{a['rel_err'] * 100:.3f}%" if a else "-"
        lines.append(f"{r['id']:<22} {str(r['feasible'])[:5]:>5} {e['ours']:.4g}/{e['expected']:.4g} ({e['rel_err'] * 100:5.1f}%)"
                     f"{cyc:>18} {area:>9}")
        if per_record:
            for comp, v in r["energy_by_component_j"].items():
                lines.append(f"    {comp:<16} {v['ours']:.4g} / {v['expected']:.4g}  ({v['rel_err'] * 100:.1f}%)")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    fig, (ax_e, ax_c) = pyplot().subplots(1, 2, figsize=(11, 5))
    comps = sorted({c for r in rows for c in r.get("energy_by_component_j", {})})
    for comp in comps:
        xs = [r["energy_by_component_j"][comp]["expected"] for r in rows if comp in r.get("energy_by_component_j", {})]
        ys = [r["energy_by_component_j"][comp]["ours"] for r in rows if comp in r.get("energy_by_component_j", {})]
        pts = [(x, y) for x, y in zip(xs, ys) if x > 1e-15 and y > 0]
        if pts:
            ax_e.scatter(*zip(*pts), s=14, label=comp)
    tot = [(r["energy_j"]["expected"], r["energy_j"]["ours"]) for r in rows if "energy_j" in r]
    if tot:
        ax_e.scatter(*zip(*tot), s=40, marker="x", color="k", label="total")
    cyc = [(r["cycles"]["expected"], r["cycles"]["ours"]) for r in rows if "cycles" in r]
    if cyc:
        ax_c.scatter(*zip(*cyc), s=20)
    for ax, title in ((ax_e, "energy (J)"), (ax_c, "cycles")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"CiMLoop {title}")
        ax.set_ylabel(f"cimnas.hw {title}")
        ax.set_title(f"{title}: ours vs CiMLoop")
    ax_e.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m cimnas.hw.validate", description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("records", help="records JSON (top-level 'records' list)")
    p.add_argument("--per-record", action="store_true", help="also print every component per record")
    p.add_argument("--json", action="store_true", help="print the comparison rows as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a log-log plot of ours vs CiMLoop")
    p.add_argument("--reference-compat", action="store_true", help="score with the reference quirks")
    args = p.parse_args(argv)
    try:
        records = load_records(args.records)
        rows, summary = compare(records, reference_compat=args.reference_compat)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
    else:
        print(format_table(rows, args.per_record))
    if args.plot:
        plot(rows, args.plot)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
