"""Agreement of two measurements of the same designs: the label-noise ceiling of any predictor.

    python -m cimnas.models.predictor.agreement --a first.jsonl --b second.jsonl

Two record files measured with the same ``seed`` (same designs) but different calibration images
and disjoint evaluation images give two noisy labels per design; their Kendall tau / Spearman rho
bound what a predictor can reach against one noisy held-out label.
"""

from __future__ import annotations

import json

import torch

from cimnas.models.predictor.module import held_out_metrics
from cimnas.models.predictor.records import read_records


def agreement(a: str, b: str) -> dict[str, float]:
    """Kendall tau, Spearman rho and RMSE between the accuracies of designs present in both
    record files (matched by key)."""
    first = {r["key"]: r["accuracy"] for r in read_records(a)}
    pairs = [(first[r["key"]], r["accuracy"]) for r in read_records(b) if r["key"] in first]
    if len(pairs) < 3:
        raise ValueError(f"{a} and {b} share {len(pairs)} designs; need at least 3")
    x, y = (torch.tensor(v, dtype=torch.float32) for v in zip(*pairs))
    metrics = held_out_metrics(x, y)
    metrics["mean_a"], metrics["mean_b"] = float(x.mean()), float(y.mean())
    metrics["std_a"], metrics["std_b"] = float(x.std()), float(y.std())
    print(json.dumps(metrics, indent=2))
    return metrics


def main(args: list[str] | None = None) -> None:
    from jsonargparse import CLI

    CLI(agreement, args=args, as_positional=False)


if __name__ == "__main__":
    main()
