"""``python -m cimnas.experiments.supernet_report``: the interior report of a supernet
(:func:`cimnas.models.supernet_report.report_supernet`) on the embedded Fashion-MNIST split.

    python -m cimnas.experiments.supernet_report --supernet cimnas/artifacts/fmnist/supernet.pt \\
        --out results/supernet_report_shipped.json
    python -m cimnas.experiments.supernet_report \\
        --supernet runs/supernet_fmnist_ofa/checkpoints/epoch=2.ckpt --out runs/supernet_fmnist_ofa/phase_reports/0_full.json

``supernet``: a ``save_supernet`` file or a Lightning checkpoint of ``OFASupernetModule`` (e.g. the
last epoch of a phase, which is what :class:`~cimnas.models.supernet_report.PhaseReport` reports
during training). ``val_size`` / ``seed`` must match the training data module (the held-out images
are never trained on); ``calib_images`` as the predictor's measurement (2,000, OFA's count).
"""

from __future__ import annotations

import torch
from jsonargparse import auto_cli

from cimnas.models.supernet_eval import fmnist_evaluation_inputs
from cimnas.models.supernet_report import report_lines, report_supernet, write_report


def supernet_report(supernet: str = "cimnas/artifacts/fmnist/supernet.pt", out: str | None = None,
                    n_random: int = 50, report_seed: int = 2026, low_bits: int | None = None,
                    random_policies: bool = True, data_dir: str | None = None, val_size: int = 5000,
                    val_subset: int | None = None, calib_images: int = 2000, calib_batch_size: int = 250,
                    eval_batch_size: int = 500, seed: int = 0, threads: int = 1,
                    channels_last: bool = True) -> dict:
    """Measure and print the report; write it as JSON to ``out`` (atomically) when given.
    ``report_seed`` draws the random subnets (the same in every report); ``seed`` the data split
    and the calibration images."""
    from cimnas.inputs import refuse_shipped_output

    refuse_shipped_output(out, "out")
    torch.set_num_threads(threads)
    net, calib, val = fmnist_evaluation_inputs(supernet, data_dir, val_size, val_subset, calib_images,
                                               calib_batch_size, eval_batch_size, seed, channels_last)
    report = report_supernet(net, calib, val, n_random=n_random, seed=report_seed,
                             low_bits=low_bits, random_policies=random_policies, log_every=10)
    report["supernet"] = str(supernet)
    for line in report_lines(report):
        print(line, flush=True)
    if out:
        write_report(report, out)
    return report


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import ArgumentParser

    from cimnas.inputs import one_line_errors, run_user_main

    return run_user_main(lambda args: auto_cli(supernet_report, args=args, allow_abbrev=False,
                                                 parser_class=one_line_errors(ArgumentParser)) and 0, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
