"""Accuracy-predictor throughput: candidates / s for one ``predict`` call on a batch of B
random (architecture, bits) designs (issue 5 target: >= 100,000 / s at B = 1e5 on CPU).

    python benchmarks/bench_predictor.py [--batch 100000] [--repeats 5] [--space apq_mbv2]
        [--checkpoint cimnas/artifacts/fmnist/predictor.pt] [--device cpu|cuda]

Prints the median over ``repeats`` of encode + MLP (index form) and, for reference, the dense
one-hot path (encode to [B, 772] + dense first layer).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cimnas.models.predictor import AccuracyPredictor
from cimnas.space import BIT_FIELDS, ArchBatch, get_space


def random_batch(space_name: str, batch: int, device: str, seed: int = 0) -> ArchBatch:
    """B uniform designs drawn with tensor ops (the way a genome decode produces them)."""
    space = get_space(space_name)
    g = torch.Generator().manual_seed(seed)

    def pick(choices, *shape):
        c = torch.tensor(choices)
        return c[torch.randint(len(c), shape, generator=g)]

    depths = torch.stack([pick(space.stage_depth_choices(s), batch) for s in range(space.num_stages)], 1)
    kernels = pick(space.kernel_choices, batch, space.num_blocks)
    hidden = torch.stack([pick(space.hidden_choices(b), batch) for b in range(space.num_blocks)], 1)
    resolution = pick(space.resolution_choices, batch)
    bits = pick(space.bit_choices, batch, space.num_blocks, len(BIT_FIELDS))
    return ArchBatch(depths, kernels, hidden, resolution, bits).to(device)


def timed(fn, repeats: int, device: str, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--space", default="apq_mbv2")
    parser.add_argument("--checkpoint", default=None, help="predictor checkpoint (default: random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        predictor = AccuracyPredictor.from_checkpoint(args.checkpoint, map_location=args.device)
    else:
        torch.manual_seed(0)
        predictor = AccuracyPredictor(args.space).to(args.device).eval()
    batch = random_batch(predictor.space.name if args.checkpoint else args.space, args.batch, args.device)
    predictor.predict(batch[:1000])  # warm-up
    t_predict = timed(lambda: predictor.predict(batch), args.repeats, args.device)
    t_encode = timed(lambda: predictor.encoder.indices(batch), args.repeats, args.device)
    # CPU seconds of this process: on a shared machine, wall time / CPU time shows the contention
    t_cpu = timed(lambda: predictor.predict(batch), args.repeats, args.device, clock=time.process_time)

    def dense() -> None:
        with torch.no_grad():
            predictor(predictor.encode(batch))

    t_dense = timed(dense, max(1, args.repeats // 2), args.device)
    print(f"device={args.device} threads={torch.get_num_threads()} space={predictor.space.name} "
          f"dim={predictor.encoder.dim} B={args.batch}")
    print(f"predict (index form, encode + MLP): {t_predict:.3f} s  -> {args.batch / t_predict:,.0f} candidates/s")
    print(f"  of which encode (index form):     {t_encode:.3f} s")
    print(f"  CPU time of predict:              {t_cpu:.3f} s  -> {args.batch / t_cpu * torch.get_num_threads():,.0f} "
          "candidates/s on uncontended cores (CPU time / threads)")
    print(f"dense one-hot path (reference):     {t_dense:.3f} s  -> {args.batch / t_dense:,.0f} candidates/s")


if __name__ == "__main__":
    main()
