"""``python -m cimnas.experiments.hw_evaluate``: score designs with the batched cost model.

Inputs (any mix, all scored in one batched call per workload):

- design JSON files: ``{"hardware": {...}, "space": "apq_mbv2", "architecture": {...},
  "quantization": {...}}`` or ``{"hardware": {...}, "workload": {"layers": [...]}}``; a file may
  also hold a list of such objects;
- ``--key A_...``: reference-implementation keys (224-px ImageNet MobileNetV2, cim-cost-model.md
  §8.2), typical histograms;
- ``--from-results FILE``: re-score every key of a reference results JSON and print the error
  statistics against its recorded energy / latency / area.

Prints one JSON object per design (``energy_j, latency_s, area_mm2, edap, feasible, ...``).
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

from cimnas.hw.cost_model import evaluate
from cimnas.hw.params import HardwareBatch, HardwareParams
from cimnas.experiments.reference_keys import ReferenceKeyError, designs_to_batches, parse_key
from cimnas.hw.workload import Workload
from cimnas.search.lowering import workload_from_arch
from cimnas.space import ArchBatch, Architecture, QuantPolicy, apq_mbv2, get_space

SUMMARY_KEYS = ("energy_j", "latency_s", "area_mm2", "edap", "edap_j_s_cm2", "feasible", "reason",
                "tops_per_w", "tops_per_mm2", "tops_per_w_layer_mean", "tops_per_mm2_layer_mean",
                "utilization", "cycles")


def _score_arch(space, archs, policies, hws, compat, value_stats: Any = "typical") -> list[dict[str, Any]]:
    ab = ArchBatch.from_designs(space, archs, policies)
    result = evaluate(workload_from_arch(space, ab, value_stats=value_stats), HardwareBatch.from_params(hws),
                      reference_compat=compat)
    return result.to_records()


#: ``--value-stats recorded``: what the design file's ``source`` says priced it.
RECORDED = "recorded"


def design_value_stats(obj: dict[str, Any], space: Any, choice: str = RECORDED) -> tuple[Any, str]:
    """Value statistics to price a design file's network with, and a label saying which.

    ``choice``: ``recorded`` (the file's ``source.value_stats``: a path, or null = the typical
    per-role histograms; a file without a record — written before designs carried one — gets
    the statistics the search uses by default for its space), ``typical``, or a path."""
    from cimnas.search.config import DEFAULT_VALUE_STATS, SearchConfig
    from cimnas.search.value_stats import load_value_stats

    if choice == "typical":
        return "typical", "typical"
    if choice != RECORDED:
        return load_value_stats(choice, space), choice
    source = obj.get("source") or {}
    if "value_stats" in source:
        path = source["value_stats"]
    else:
        path = DEFAULT_VALUE_STATS if space.name == SearchConfig.space else None
    if path is None:
        return "typical", "typical"
    if not Path(path).is_file():
        raise ValueError(f"design's value statistics {path!r} (source.value_stats) not found; pass "
                         "--value-stats PATH or --value-stats typical")
    return load_value_stats(path, space), str(path)


def score_design_objects(objs: list[dict[str, Any]], compat: bool, value_stats: str = RECORDED) -> list[dict[str, Any]]:
    """Score design objects; a design file's own ``source.reference_compat`` is used unless
    ``compat`` forces the reference quirks on."""
    out = []
    for i, obj in enumerate(objs):
        if not isinstance(obj, dict) or "hardware" not in obj:
            raise ValueError(f"design {i}: needs a 'hardware' object and either 'workload' or "
                             "'space' + 'architecture' + 'quantization'")
        hw = HardwareParams.from_dict(obj["hardware"])
        if "workload" in obj:
            wl = Workload.from_dict(obj["workload"])
            rec = evaluate(wl, HardwareBatch.from_params([hw]), reference_compat=compat).to_records()[0]
        else:
            missing = [k for k in ("architecture", "quantization") if k not in obj]
            if missing:
                raise ValueError(f"design {i}: missing keys {missing}")
            space = get_space(obj.get("space", "apq_mbv2"))
            arch = Architecture.from_dict(obj["architecture"])
            pol = QuantPolicy.from_dict(obj["quantization"])
            stats, label = design_value_stats(obj, space, value_stats)
            design_compat = compat or bool((obj.get("source") or {}).get("reference_compat", False))
            rec = _score_arch(space, [arch], [pol], [hw], design_compat, stats)[0]
            rec["value_stats"] = label
        out.append(rec)
    return out


def score_keys(keys: list[str], compat: bool) -> list[dict[str, Any]]:
    space = apq_mbv2()
    designs = [parse_key(k, space) for k in keys]
    ab, hb = designs_to_batches(designs, space)
    recs = evaluate(workload_from_arch(space, ab), hb, reference_compat=compat).to_records()
    for k, r in zip(keys, recs):
        r["key"] = k
    return recs


def _rel(ours: float | None, ref: float) -> float:
    if ours is None or not math.isfinite(ours) or ref == 0:
        return math.inf
    return abs(ours - ref) / abs(ref)


def from_results(path: str, compat: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a reference results file is a JSON object key -> result")
    keys = [k for k in data if k.startswith("A_")]
    if not keys:
        raise ValueError(f"{path}: no 'A_...' keys found")
    recs = score_keys(keys, compat)
    errs: dict[str, list[float]] = {"energy": [], "latency": [], "area": [], "tops_per_w_layer_mean": [],
                                    "tops_per_mm2_layer_mean": []}
    for k, r in zip(keys, recs):
        ref = data[k]
        r["reference"] = ref
        if not isinstance(ref, dict) or ref.get("e", 1e25) >= 1e24:
            continue
        errs["energy"].append(_rel(r["energy_j"], ref["e"]))
        errs["latency"].append(_rel(r["latency_s"], ref["l"]))
        errs["area"].append(_rel(r["area_mm2"], ref["a"] * 100.0))
        if "a_tpw" in ref:
            errs["tops_per_w_layer_mean"].append(_rel(r["tops_per_w_layer_mean"], ref["a_tpw"]))
        if "a_tpm" in ref:
            errs["tops_per_mm2_layer_mean"].append(_rel(r["tops_per_mm2_layer_mean"], ref["a_tpm"]))
    summary: dict[str, Any] = {"records": len(keys), "compared": len(errs["energy"])}
    for name, v in errs.items():
        if v:
            summary[f"{name}_median_rel_err"] = statistics.median(v)
            summary[f"{name}_max_rel_err"] = max(v)
    return recs, summary


def read_design_file(path: str) -> list[dict[str, Any]]:
    """The design objects of one file; errors name the file (missing, not JSON, one of the
    reference's nine hardware genes missing: the cost model would silently use its default;
    the fields a search keeps fixed, absent from its ``best.json``, take the defaults of
    :class:`~cimnas.hw.HardwareParams`)."""
    from cimnas.hw.params import REFERENCE_GENES
    from cimnas.inputs import InputError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"design file {path!r} not found")
    try:
        obj = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"design file {path!r}: not valid JSON ({err})") from None
    objs = obj if isinstance(obj, list) else [obj]
    for i, o in enumerate(objs):
        where = f"design file {path!r}" + (f" [{i}]" if isinstance(obj, list) else "")
        if not isinstance(o, dict) or not isinstance(o.get("hardware"), dict):
            raise InputError(f"{where}: field 'hardware' missing or not a mapping")
        missing = [f for f in REFERENCE_GENES if f not in o["hardware"]]
        if missing:
            raise InputError(f"{where}: hardware fields {missing} missing; a design must name the genes "
                             f"{list(REFERENCE_GENES)}")
    return objs


def main(argv: list[str] | None = None) -> int:
    from cimnas.inputs import pop_debug

    argv, debug = pop_debug(argv)
    p = ArgumentParser(prog="python -m cimnas.experiments.hw_evaluate", description=__doc__.split("\n")[0],
                                allow_abbrev=False)
    p.add_argument("designs", nargs="*", help="design JSON files (object or list of objects)")
    p.add_argument("--key", action="append", default=[], help="a reference key A_... (repeatable)")
    p.add_argument("--from-results", metavar="FILE", help="re-score a reference results JSON")
    p.add_argument("--reference-compat", action="store_true",
                   help="reproduce the reference code's quirks (bit swap, depthwise capacity, strides)")
    p.add_argument("--full", action="store_true", help="print every field, not only the summary ones")
    p.add_argument("--value-stats", default=RECORDED, metavar="recorded|typical|PATH",
                   help="layer value statistics for design files: recorded (default: the ones the search used, "
                        "from the file's source), typical (per-role histograms) or a value_stats.pt path")
    args = p.parse_args(argv)
    if not (args.designs or args.key or args.from_results):
        p.error("give design JSON files, --key A_... or --from-results FILE")
    try:
        records: list[dict[str, Any]] = []
        for path in args.designs:
            records += score_design_objects(read_design_file(path), args.reference_compat, args.value_stats)
        if args.key:
            records += score_keys(args.key, args.reference_compat)
        summary = None
        if args.from_results:
            recs, summary = from_results(args.from_results, args.reference_compat)
            records += recs
    except (ReferenceKeyError, ValueError, FileNotFoundError, IsADirectoryError) as exc:
        if debug:
            raise
        from cimnas.inputs import one_line

        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    for r in records:
        out = r if args.full else {k: r[k] for k in ("key", *SUMMARY_KEYS, "value_stats", "reference") if k in r}
        print(json.dumps(out))
    if summary is not None:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
