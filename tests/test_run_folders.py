"""Run folders of training jobs (issue 16): a fresh ``runs/<job>/<timestamp>`` per job, the
checkpoints and the export inside it, and a resumed job continuing in the same folder and the
same W&B run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_run_dir(tmp_path):
    from cimnas.cli import resolve_run_dir

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    root = str(tmp_path / "runs" / "job" / "{timestamp}")
    assert resolve_run_dir(root, None, now) == str(tmp_path / "runs/job/20260102-030405")
    (tmp_path / "runs/job/20260102-030405").mkdir(parents=True)
    assert resolve_run_dir(root, None, now) == str(tmp_path / "runs/job/20260102-030405-1")  # never reused
    ckpt = tmp_path / "runs/job/20260102-030405/checkpoints/last.ckpt"
    assert resolve_run_dir(root, str(ckpt), now) == str(tmp_path / "runs/job/20260102-030405")  # a resume
    assert resolve_run_dir(str(tmp_path / "explicit"), None, now) == str(tmp_path / "explicit")
    assert resolve_run_dir(None, None, now) is None


def test_resumed_job_continues_run_folder_and_wandb_run(tmp_path, monkeypatch):
    import wandb

    from cimnas.cli import train_cli

    for name in ("configs", "cimnas"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["--config", "configs/predictor/fmnist_fp.yaml", "--trainer.check_val_every_n_epoch=1",
              "--trainer.logger.init_args.mode=offline", "--trainer.logger.init_args.save_dir=runs"]
    first = train_cli(["fit", *common, "--trainer.max_epochs=1"])
    first_id = first.trainer.logger.experiment.id
    wandb.finish()
    (run,) = sorted((tmp_path / "runs" / "predictor_fmnist_fp").iterdir())
    assert (run / "wandb_run_id").read_text().strip() == first_id
    assert (run / "predictor_fp.pt").is_file() and (run / "config.yaml").is_file()
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert ckpts, "the default ModelCheckpoint writes into <run>/checkpoints"
    second = train_cli(["fit", *common, "--trainer.max_epochs=2", "--ckpt_path", str(ckpts[-1])])
    assert second.trainer.default_root_dir == str(run)
    assert second.trainer.logger.experiment.id == first_id
    wandb.finish()
    assert sorted((tmp_path / "runs" / "predictor_fmnist_fp").iterdir()) == [run]
    assert not (tmp_path / "checkpoints").exists()
