"""Is a record set learnable? Label spread, capacity correlations and a linear learning curve.

    python -m cimnas.models.predictor.diagnose --records cimnas/artifacts/fmnist/predictor_records_fp.jsonl \\
        --space apq_mbv2_tiny [--quantized true]

Before blaming the predictor for a low held-out Kendall tau, look at the labels:

- ``spread``: mean / std / min / max of the measured top-1 (percentage points);
- ``capacity_tau``: Kendall tau of the accuracy against the active depth, the mean active
  kernel, the total active hidden width and (quantized) the mean active bit width. On a
  converged once-for-all supernet these are clearly positive (bigger subnets are better); near 0
  means the subnets' accuracies are set by how well each one happens to be trained, not by its
  size — a property of the supernet, which no predictor can fix;
- ``ridge_curve``: held-out tau of a ridge regression on the one-hot features at growing training
  sizes (the seeded train / held-out split of :class:`~cimnas.models.predictor.data.PredictorDataModule`). A
  plateau says more records of the same kind will not help an additive model.

- ``label_ceiling_upper`` (from the records with ``accuracy_halves``, at least 10): the Kendall-tau ceiling of any
  predictor from the agreement of each design's two half-set accuracies (Spearman-Brown,
  :func:`~cimnas.models.predictor.agreement.pair_ceiling`). Both halves share one BN
  calibration, whose noise then counts as signal, so this is an upper bound of the ceiling;
  :mod:`cimnas.models.predictor.agreement` on two independently calibrated measurements gives the
  ceiling itself.
"""

from __future__ import annotations

import json

import torch
from torchmetrics.functional.regression import kendall_rank_corrcoef

from cimnas.models.predictor.agreement import pair_ceiling
from cimnas.models.predictor.data import PredictorDataModule, records_to_batch


def _tau(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Kendall tau; None when either side is constant (e.g. the kernel of a ResNet space)."""
    if bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return None
    return float(kendall_rank_corrcoef(x.double(), y.double()))


def ridge_fit_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression with an unpenalised intercept (closed form, float64)."""
    x, y, t = train_x.double(), train_y.double(), test_x.double()
    x_mean, y_mean = x.mean(0), y.mean()
    xc = x - x_mean
    w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ (y - y_mean))
    return (t - x_mean) @ w + y_mean


def diagnose(
    records: list[str],
    space: str = "apq_mbv2_tiny",
    quantized: bool = False,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    ridge_lambda: float = 10.0,
) -> dict:
    """Label statistics of ``records`` (see the module docstring); prints and returns a dict."""
    data = PredictorDataModule(records, space=space, quantized=quantized, test_fraction=test_fraction,
                               val_fraction=0.0, split_seed=split_seed)
    rows = data.load_records()  # deduplicated, in the data module's order
    if len(rows) < 10:
        raise ValueError(f"records={records}: {len(rows)} distinct designs; need at least 10")
    data.setup()  # the predictor's own train / held-out split of the encoded features
    train_x, train_y = data.splits["train"].tensors
    test_x, test_y = data.splits["test"].tensors
    batch = records_to_batch(data.space, rows, quantized)
    acc = torch.tensor([float(r["accuracy"]) for r in rows], dtype=torch.float64)
    active = batch.active_blocks(data.space).double()
    n_active = active.sum(1)
    capacity = {
        "depth": n_active,
        "kernel": (batch.kernels.double() * active).sum(1) / n_active,
        "hidden": (batch.hidden.double() * active).sum(1),
    }
    if quantized:
        capacity["bits"] = (batch.bits.double() * active.unsqueeze(-1)).sum((1, 2)) / (4 * n_active)
    n_train, curve = len(train_y), {}
    for size in sorted({max(5, n_train // 8), max(5, n_train // 4), max(5, n_train // 2), n_train}):
        pred = ridge_fit_predict(train_x[:size], train_y[:size], test_x, ridge_lambda)
        tau = _tau(pred, test_y)
        curve[str(size)] = None if tau is None else round(tau, 4)
    n = len(rows)
    n_test = len(test_y)
    out = {
        "records": n,
        "quantized": quantized,
        "spread_pt": {"mean": round(100 * float(acc.mean()), 3), "std": round(100 * float(acc.std()), 3),
                      "min": round(100 * float(acc.min()), 3), "max": round(100 * float(acc.max()), 3)},
        "capacity_tau": {k: (None if (t := _tau(v, acc)) is None else round(t, 4)) for k, v in capacity.items()},
        "ridge_curve_held_out_tau": curve,
        "held_out": n_test,
    }
    with_halves = [r for r in rows if r.get("accuracy_halves") is not None]
    sizes = {tuple(r["half_images"]) for r in with_halves}
    if len(with_halves) >= 10 and len(sizes) == 1:  # older records may lack the halves
        h = torch.tensor([r["accuracy_halves"] for r in with_halves], dtype=torch.float64)
        ceiling = pair_ceiling(h[:, 0], h[:, 1], *sizes.pop())
        out["label_ceiling_upper"] = {"designs": len(with_halves), "halves_pearson": round(ceiling.pop("pearson"), 4),
                                      **{k: round(v, 4) for k, v in ceiling.items() if k != "ceiling_kendall_ci95"}}
    print(json.dumps(out, indent=2))
    return out


def main(args: list[str] | None = None) -> None:
    from jsonargparse import CLI

    CLI(diagnose, args=args, as_positional=False, allow_abbrev=False)


if __name__ == "__main__":
    main()
