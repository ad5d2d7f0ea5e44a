"""Agreement of two measurements of the same designs: the label-noise ceiling of any predictor.

    python -m cimnas.models.predictor.agreement --a first.jsonl --b second.jsonl [--label_images 5000]

Two record files measured with the same ``seed`` (same designs) give two labels per design.

- Same evaluation images, other calibration images: the agreement is the calibration noise only
  (how reproducible a label is), not a ceiling.
- **Disjoint** evaluation images (``eval_skip``, e.g. the two halves of the held-out split): the
  two labels share only the designs' true accuracy, so their Pearson correlation ``r`` is the
  *reliability* of a label measured on that many images (classical test theory). The
  Spearman-Brown formula extends it to a label measured on ``label_images`` images
  (``k = label_images / images per measurement``)::

      R = k r / (1 + (k - 1) r)

  No function of the design correlates with such a label better than ``sqrt(R)`` on average,
  which for jointly Gaussian scores is a Kendall tau of ``(2 / pi) asin(sqrt(R))`` (Greiner's
  relation): the ceiling of a predictor's held-out tau on these labels. Only a larger label
  spread (a supernet whose designs differ more) or more evaluation images raise it.
"""

from __future__ import annotations

import json
import math

import torch

from cimnas.models.predictor.report import held_out_metrics
from cimnas.models.predictor.records import read_records


def spearman_brown(reliability: float, factor: float) -> float:
    """Reliability of a measurement ``factor`` times longer (more evaluation images) than one of
    reliability ``reliability`` (a correlation in (-1, 1])."""
    if factor <= 0:
        raise ValueError(f"factor={factor} must be positive")
    if reliability <= 0:
        return 0.0  # no shared signal: averaging more images cannot create one
    return factor * reliability / (1.0 + (factor - 1.0) * reliability)


def kendall_from_pearson(r: float) -> float:
    """Kendall tau of a bivariate Gaussian with Pearson correlation ``r`` (Greiner's relation)."""
    return 2.0 / math.pi * math.asin(max(-1.0, min(1.0, r)))


def label_ceiling(pair_pearson: float, images_per_measurement: int, label_images: int) -> dict[str, float]:
    """Reliability of a label on ``label_images`` images and the Pearson / Kendall ceiling of any
    predictor against it, from the correlation of two measurements on disjoint image sets of
    ``images_per_measurement`` images each."""
    if images_per_measurement <= 0 or label_images <= 0:
        raise ValueError(f"images_per_measurement={images_per_measurement} and label_images={label_images} "
                         "must be positive")
    reliability = spearman_brown(pair_pearson, label_images / images_per_measurement)
    pearson = math.sqrt(reliability)
    return {"label_images": int(label_images), "label_reliability": reliability,
            "ceiling_pearson": pearson, "ceiling_kendall": kendall_from_pearson(pearson)}


def pair_ceiling(x: torch.Tensor, y: torch.Tensor, images_x: int, images_y: int,
                 label_images: int | None = None) -> dict:
    """Pearson r of two measurements ``x``, ``y`` of the same designs on disjoint image sets of
    ``images_x`` / ``images_y`` images, and the :func:`label_ceiling` of a label on
    ``label_images`` images (None: both sets together), with the 95 % interval of the Kendall
    ceiling from the Fisher-z interval of r (more than 3 designs)."""
    pearson = float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])
    # unequal lengths: their geometric mean is the length whose reliability r estimates
    per_measurement = math.sqrt(images_x * images_y)
    n_label = label_images if label_images is not None else images_x + images_y
    out = {"pearson": pearson, **label_ceiling(pearson, per_measurement, n_label)}
    if len(x) > 3:
        z, half = math.atanh(max(-0.999999, min(0.999999, pearson))), 1.96 / math.sqrt(len(x) - 3)
        out["ceiling_kendall_ci95"] = [label_ceiling(math.tanh(z + s * half), per_measurement, n_label)
                                       ["ceiling_kendall"] for s in (-1, 1)]
    return out


def split_half_reliability(records: list[dict]) -> dict | None:
    """The reliability of a record set's labels from its records' ``accuracy_halves`` (the two
    halves of the evaluation images, one BN calibration): :func:`pair_ceiling` of the halves
    for labels on both halves together. Both halves share the calibration, whose noise then
    counts as signal, so this is an *upper bound* of the reliability (:func:`agreement` of two
    independently calibrated measurements gives the value itself). None with fewer than 10
    records that carry halves."""
    rows = [r for r in records if r.get("accuracy_halves") and r.get("half_images")]
    if len(rows) < 10:
        return None
    x, y = (torch.tensor([r["accuracy_halves"][i] for r in rows], dtype=torch.float64) for i in (0, 1))
    n_x, n_y = int(rows[0]["half_images"][0]), int(rows[0]["half_images"][1])
    out = pair_ceiling(x, y, n_x, n_y)
    return {"records": len(rows), "half_images": [n_x, n_y], "kind": "split-half (one calibration): upper bound",
            **{k: out[k] for k in ("pearson", "label_images", "label_reliability", "ceiling_kendall")},
            **({"ceiling_kendall_ci95": out["ceiling_kendall_ci95"]} if "ceiling_kendall_ci95" in out else {})}


def _images(record: dict) -> tuple[int, int] | None:
    """``(first, end)`` evaluation-image range of a record, when it says so."""
    if "eval_images" not in record:
        return None
    skip = int(record.get("eval_skip", 0))
    return skip, skip + int(record["eval_images"])


def agreement(a: str, b: str, label_images: int | None = None) -> dict[str, float]:
    """Kendall tau, Spearman rho, Pearson r and RMSE between the accuracies of designs present in
    both record files (matched by key); with disjoint evaluation images also the label-noise
    ceiling of a predictor against labels measured on ``label_images`` images (None: the two
    measurements' images together)."""
    first = {r["key"]: r for r in read_records(a)}
    pairs = [(first[r["key"]], r) for r in read_records(b) if r["key"] in first]
    if len(pairs) < 3:
        raise ValueError(f"{a} and {b} share {len(pairs)} designs; need at least 3")
    x, y = (torch.tensor([p[i]["accuracy"] for p in pairs], dtype=torch.float64) for i in (0, 1))
    metrics = held_out_metrics(x.float(), y.float())
    metrics["pearson"] = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    metrics["mean_a"], metrics["mean_b"] = float(x.mean()), float(y.mean())
    metrics["std_a"], metrics["std_b"] = float(x.std()), float(y.std())
    range_a, range_b = _images(pairs[0][0]), _images(pairs[0][1])
    disjoint = (range_a is not None and range_b is not None
                and (range_a[1] <= range_b[0] or range_b[1] <= range_a[0]))
    metrics["disjoint_images"] = disjoint
    if disjoint:
        metrics.update(pair_ceiling(x, y, range_a[1] - range_a[0], range_b[1] - range_b[0], label_images))
    elif label_images is not None:
        raise ValueError("label_images needs two measurements on disjoint evaluation images "
                         f"(eval_skip / eval_images): {a} uses images {range_a}, {b} uses {range_b}")
    print(json.dumps(metrics, indent=2))
    return metrics


def main(args: list[str] | None = None) -> None:
    from jsonargparse import CLI

    CLI(agreement, args=args, as_positional=False, allow_abbrev=False)


if __name__ == "__main__":
    main()
