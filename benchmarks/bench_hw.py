"""Throughput of the batched cost model on the MobileNetV2 (apq_mbv2, 224 px) space.

For B = 1, 1e2, 1e4, 1e5 random (architecture, quantization, hardware) designs (a design = one
whole ~60-layer network on one chip), prints designs scored per second by ``evaluate`` alone and
end to end (``workload_from_arch`` + ``HardwareSpace.decode`` + ``evaluate``), end to end with
``evaluate_arch`` (the workload built chunk by chunk, never materialised), the CPU time per
design, the speed-up over a per-design loop of the same code, and the peak memory (max RSS of a
fresh process per B; CUDA: max allocated). Each B runs in its own subprocess so that peak memory
is per B.

For B >= ``--fused-from`` (default 1e5) it also times ``evaluate_arch`` with the fused kernel
(``compile=True``, after a warm-up compile whose wall time is printed), interleaved with the eager
path in the same process, and prints both designs/s, their ratio and the largest relative
difference of the results (targets: >= 3e5 designs/s fused, >= 2.5x eager, at one thread).

    python benchmarks/bench_hw.py [--sizes 1 100 10000 100000] [--device cpu|cuda] [--repeats 3]
        [--fused-from 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _designs(B: int, device: str, seed: int = 0):
    import torch

    from cimnas.hw import HardwareSpace
    from cimnas.space import Architecture, ArchBatch, QuantPolicy, apq_mbv2

    space = apq_mbv2()
    g = torch.Generator().manual_seed(seed)
    pool = min(B, 512)  # Python-side sampling of Architecture objects is not what we measure
    archs = [Architecture.random(space, g) for _ in range(pool)]
    pols = [QuantPolicy.random(space, g) for _ in range(pool)]
    base = ArchBatch.from_designs(space, archs, pols)
    arch = base[torch.randint(pool, (B,), generator=g)].to(device)
    hw_space = HardwareSpace.from_yaml(ROOT / "configs" / "hw" / "reference.yaml")
    genes = hw_space.random_indices(B, g).to(device)
    return space, arch, hw_space, genes


FUSED_TARGET_DESIGNS_PER_S = 3e5
FUSED_TARGET_RATIO = 2.5


def _max_rel_diff(a, b) -> float:
    import torch

    worst = 0.0
    for name in ("energy_j", "latency_s", "area_mm2", "edap", "required_cells", "tops_per_w_layer_mean",
                 "tops_per_mm2_layer_max", "utilization", "cycles"):
        x, y = getattr(a, name), getattr(b, name)
        fin = torch.isfinite(x)
        if not torch.equal(fin, torch.isfinite(y)):
            return float("inf")
        if fin.any():
            worst = max(worst, float(((x - y).abs()[fin] / x.abs()[fin].clamp(min=1e-300)).max()))
    return worst


def run_fused(B: int, device: str, repeats: int) -> dict:
    """``evaluate_arch`` eager vs fused (``compile=True``), interleaved, same process."""
    import torch

    from cimnas.search.lowering import evaluate_arch

    space, arch, hw_space, genes = _designs(B, device)
    hw = hw_space.decode(genes)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n_warm = min(B, 4096)
    t0 = time.perf_counter()
    evaluate_arch(space, arch[:n_warm], hw[:n_warm], compile=True)
    sync()
    compile_s = time.perf_counter() - t0
    eager_s, fused_s, cpu = [], [], {False: [], True: []}
    for _ in range(repeats):
        for flag, into in ((False, eager_s), (True, fused_s)):
            sync()
            t, c = time.perf_counter(), time.process_time()
            res = evaluate_arch(space, arch, hw, compile=flag)
            sync()
            into.append(time.perf_counter() - t)
            cpu[flag].append(time.process_time() - c)
            if flag:
                fused = res
            else:
                eager = res
    return {
        "fused_compile_s": compile_s, "eager_arch_designs_per_s": B / min(eager_s),
        "fused_arch_designs_per_s": B / min(fused_s), "fused_ratio": min(eager_s) / min(fused_s),
        "eager_arch_designs_per_cpu_s": B / min(cpu[False]), "fused_arch_designs_per_cpu_s": B / min(cpu[True]),
        "fused_max_rel_diff": _max_rel_diff(eager, fused),
        "fused_feasible_identical": bool(torch.equal(eager.feasible, fused.feasible)
                                         and torch.equal(eager.reason, fused.reason)),
    }


def run_one(B: int, device: str, repeats: int, threads: int = 1, fused: bool = False) -> dict:
    import torch

    torch.set_num_threads(threads)

    from cimnas.hw import evaluate
    from cimnas.search.lowering import evaluate_arch, workload_from_arch

    space, arch, hw_space, genes = _designs(B, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # warm-up (caches per-space slot tables, first-call overheads)
    evaluate(workload_from_arch(space, arch[:2]), hw_space.decode(genes[:2]))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls, cpus, e2e, lazy = [], [], [], []
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        workload = workload_from_arch(space, arch)
        hw = hw_space.decode(genes)
        sync()
        t1, c1 = time.perf_counter(), time.process_time()
        result = evaluate(workload, hw, num_threads=threads)
        sync()
        t2, c2 = time.perf_counter(), time.process_time()
        walls.append(t2 - t1)
        cpus.append(c2 - c1)
        e2e.append(t2 - t0)
        t3 = time.perf_counter()
        evaluate_arch(space, arch, hw_space.decode(genes), num_threads=threads)
        sync()
        lazy.append(time.perf_counter() - t3)
    out = {
        "B": B, "device": device, "layers": workload.num_layers,
        "evaluate_s": min(walls), "evaluate_designs_per_s": B / min(walls),
        "evaluate_cpu_s_per_design": min(cpus) / B,
        "end_to_end_designs_per_s": B / min(e2e),
        "evaluate_arch_designs_per_s": B / min(lazy),
        "feasible_fraction": float(result.feasible.float().mean()),
    }
    # the same code one design at a time (rows taken by hand: ArchBatch.__getitem__ deep-copies)
    n_loop = min(B, 30)
    fields = [f.name for f in dataclasses.fields(arch)]
    t0 = time.perf_counter()
    for i in range(n_loop):
        row = type(arch)(**{f: getattr(arch, f)[i:i + 1] for f in fields})
        evaluate(workload_from_arch(space, row), hw_space.decode(genes[i:i + 1]))
    sync()
    out["loop_designs_per_s"] = n_loop / (time.perf_counter() - t0)
    out["speedup_over_loop"] = out["end_to_end_designs_per_s"] / out["loop_designs_per_s"]
    if device == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    if fused:
        out.update(run_fused(B, device, repeats))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads of the cost model's chunk pool and of torch (2 = both cores)")
    p.add_argument("--fused-from", type=int, default=100_000,
                   help="also time the fused (torch.compile) kernel for B >= this (0: never)")
    p.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.single is not None:
        fused = bool(args.fused_from) and args.single >= args.fused_from
        print(json.dumps(run_one(args.single, args.device, args.repeats, args.threads, fused)))
        return
    rows = []
    for B in args.sizes:
        res = subprocess.run([sys.executable, __file__, "--single", str(B), "--device", args.device,
                              "--repeats", str(args.repeats), "--threads", str(args.threads),
                              "--fused-from", str(args.fused_from)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"B={B} failed:\n{res.stderr[-4000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        mem = r.get("peak_rss_mb", r.get("peak_mem_mb"))
        print(f"B={B:>7}  evaluate {r['evaluate_designs_per_s']:>9,.0f} designs/s  "
              f"end-to-end {r['end_to_end_designs_per_s']:>9,.0f}  evaluate_arch {r['evaluate_arch_designs_per_s']:>9,.0f}  "
              f"cpu {r['evaluate_cpu_s_per_design'] * 1e6:8.1f} us/design  loop {r['loop_designs_per_s']:7.1f} designs/s  "
              f"speed-up {r['speedup_over_loop']:>8.1f}x  peak {mem:7.0f} MB  (L={r['layers']}, {args.device})", flush=True)
        if "fused_arch_designs_per_s" in r:
            print(f"B={B:>7}  evaluate_arch, {r['threads']} thread(s), same run: eager {r['eager_arch_designs_per_s']:,.0f} "
                  f"designs/s, fused {r['fused_arch_designs_per_s']:,.0f} designs/s "
                  f"[target >= {FUSED_TARGET_DESIGNS_PER_S:,.0f}], ratio {r['fused_ratio']:.2f}x "
                  f"[target >= {FUSED_TARGET_RATIO}x]; per CPU-second (load-independent): eager "
                  f"{r['eager_arch_designs_per_cpu_s']:,.0f}, fused {r['fused_arch_designs_per_cpu_s']:,.0f}; "
                  f"compile {r['fused_compile_s']:.1f} s; max rel diff "
                  f"{r['fused_max_rel_diff']:.2e}, feasibility identical: {r['fused_feasible_identical']}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
