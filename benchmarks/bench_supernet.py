"""Training throughput of the supernet (largest subnet active) vs equivalent static networks.

For each case, in a fresh process (so peak memory is per model): forward + backward + SGD step
on random data, ``--steps`` timed steps after ``--warmup``. Prints samples/s (wall and per CPU-second; ratios use the
latter on CPU, since a shared machine's wall time depends on other jobs), the ratio to the
supernet, the peak resident memory (CPU; peak allocated memory on CUDA) and parameter counts.

Networks compared (same architecture, same weights where applicable):
- ``supernet``: :class:`OFASupernet` with the largest subnet active (float);
- ``supernet_w8``: the same with an 8-bit quantization policy (QAT overhead);
- ``static_export``: :meth:`OFASupernet.export_subnet` of the largest subnet (plain layers);
- ``timm``: timm's ``EfficientNet`` built from block strings (``ir_r4_k7_s2_e6_c24`` …) — only
  for spaces whose largest hidden widths timm can express (integer expansion, multiples of 8),
  i.e. the full-width ``apq_mbv2``.

Target (issue 4): supernet >= 0.75x static.

    python benchmarks/bench_supernet.py                       # both default cases, CPU
    python benchmarks/bench_supernet.py --cases apq_mbv2_tiny:28:64 --device cuda
    python benchmarks/bench_supernet.py --cases apq_mbv2_tiny:28:64 --channels-last   # NHWC
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch
from torch import nn


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_timm(space) -> nn.Module:
    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.efficientnet import EfficientNet

    arch_def = [[f"ds_r1_k{space.first_block_kernel}_s1_c{space.first_block_channels}"]]
    k = max(space.kernel_choices)
    for stage, width in zip(space.stages, space.stage_widths):
        arch_def.append([f"ir_r{stage.max_depth}_k{k}_s{stage.stride}_e{space.expand_max:g}_c{width}"])
    return EfficientNet(
        block_args=decode_arch_def(arch_def), num_features=space.head_channels, stem_size=space.stem_channels,
        fix_stem=True, in_chans=space.in_channels, num_classes=space.num_classes, act_layer=nn.ReLU6,
        round_chs_fn=lambda c: round_channels(c, 1.0), drop_rate=0.0)


def timm_compatible(space) -> bool:
    from cimnas.space import make_divisible

    return (space.expand_max == int(space.expand_max) and not space.expand_ratios
            and all(space.max_hidden(b) == make_divisible(space.block_in_channels[b] * space.expand_max)
                    for b in range(space.num_blocks))
            and all(s.act == "relu6" and not s.se for s in space.stages) and space.stem_act == "relu6")


def run_case(space_name: str, which: str, resolution: int, batch: int, steps: int, warmup: int,
             threads: int, device: str, channels_last: bool, queue) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from cimnas.space import Architecture, QuantPolicy, get_space
    from cimnas.models.supernet import OFASupernet, recalibrate_bn

    space = get_space(space_name)
    supernet = OFASupernet(space)
    supernet.set_max()
    x = torch.randn(batch, space.in_channels, resolution, resolution, device=device)
    y = torch.randint(0, space.num_classes, (batch,), device=device)
    if which == "supernet":
        model = supernet
    elif which == "supernet_w8":
        supernet.set_active(Architecture.largest(space), QuantPolicy.uniform(space, 8))
        recalibrate_bn(supernet, [x.cpu()])  # initialises activation ranges
        model = supernet
    elif which == "static_export":
        model = supernet.export_subnet()
    elif which == "timm":
        model = build_timm(space)
    else:
        raise ValueError(which)
    model = model.to(device).train()
    if channels_last:  # NHWC weights and inputs for every network alike
        model = model.to(memory_format=torch.channels_last)
        if isinstance(model, OFASupernet):
            model.channels_last = True
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    base_mb = _rss_mb("VmRSS")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb("VmHWM")
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if which.startswith("supernet"):  # parameters the largest subnet itself uses
        params = sum(p.numel() for p in supernet.export_subnet().parameters() if p.dim() > 0)
    queue.put({"case": which, "samples_per_s": steps * batch / elapsed,
               "samples_per_cpu_s": steps * batch / max(elapsed_cpu, 1e-9), "peak_mb": peak,
               "peak_over_model_mb": peak - (0 if device.startswith("cuda") else base_mb), "params": params})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["apq_mbv2_tiny:28:64", "apq_mbv2:64:16"],
                        help="space:resolution:batch")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC layout for every network (the training configs' channels_last: true)")
    args = parser.parse_args()
    from cimnas.space import get_space

    ctx = mp.get_context("spawn")
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}, "
          f"{'channels-last, ' if args.channels_last else ''}{args.steps} timed steps, CPU load avg {os.getloadavg()[0]:.1f}")
    for case in args.cases:
        space_name, res, batch = case.split(":")
        space = get_space(space_name)
        which = ["supernet", "supernet_w8", "static_export"] + (["timm"] if timm_compatible(space) else [])
        print(f"\n{space_name} @ {res}px, batch {batch}")
        print(f"{'network':15s} {'samples/s':>10s} {'samples/cpu-s':>14s} {'vs supernet':>12s} {'peak MB':>9s} "
              f"{'peak-model MB':>14s} {'params':>10s}")
        rows = []
        for w in which:
            q = ctx.Queue()
            p = ctx.Process(target=run_case, args=(space_name, w, int(res), int(batch), args.steps, args.warmup,
                                                    args.threads, args.device, args.channels_last, q))
            p.start()
            rows.append(q.get())
            p.join()
        # on a shared CPU, wall time depends on other jobs: compare throughput per CPU-second
        key = "samples_per_s" if args.device.startswith("cuda") else "samples_per_cpu_s"
        ref = rows[0][key]
        for r in rows:
            print(f"{r['case']:15s} {r['samples_per_s']:10.1f} {r['samples_per_cpu_s']:14.1f} {r[key] / ref:11.2f}x "
                  f"{r['peak_mb']:9.0f} {r['peak_over_model_mb']:14.0f} {r['params']:10d}")
        static = [r[key] for r in rows if r["case"] in ("static_export", "timm")]
        print(f"supernet / fastest static ({key}) = {ref / max(static):.2f} (target >= 0.75)")


if __name__ == "__main__":
    main()
