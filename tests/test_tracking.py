"""W&B tracking of training jobs: one offline run folder per job carrying its config, the
final-metrics file for sweeps, and the mode switch."""

import json
from pathlib import Path

import pytest

from cimnas.cli import train_cli
from cimnas.io import write_metrics_file
from cimnas.tracking import wandb_mode

ROOT = Path(__file__).resolve().parents[1]
TINY_PHASES = json.dumps([{"name": "full", "epochs": 1, "kernels": [3], "depths": [2], "hidden": "max",
                           "kd": False, "lr": 0.05}])


def test_mode_switch_precedence(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    assert wandb_mode("online") == "online"  # an explicit argument wins
    with pytest.raises(ValueError, match="allowed values"):
        wandb_mode("sometimes")


def test_metrics_file_is_written_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("CIMNAS_METRICS_FILE", raising=False)
    assert write_metrics_file({"a": 1.0}) is None
    monkeypatch.setenv("CIMNAS_METRICS_FILE", str(tmp_path / "m.json"))
    write_metrics_file({"val/acc": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"val/acc": 0.5}


def test_offline_training_run_writes_its_folder_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("CIMNAS_METRICS_FILE", str(tmp_path / "metrics.json"))
    train_cli(args=[
        "fit", "--config", str(ROOT / "configs/supernet/fmnist_smoke.yaml"),
        f"--model.init_args.phases={TINY_PHASES}", "--model.init_args.calib_images=32",
        "--model.init_args.calib_batch_size=32", f"--model.init_args.export_path={tmp_path / 'supernet.pt'}",
        "--data.init_args.train_subset=64", "--data.init_args.val_subset=32", "--data.init_args.batch_size=32",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ])
    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    run = runs[0]
    wandb_log = list(run.glob("run-*.wandb"))
    assert len(wandb_log) == 1 and wandb_log[0].stat().st_size > 0
    config_text = (run / "files" / "config.yaml").read_text()
    assert "OFASupernetModule" in config_text and "train_subset: 64" in config_text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert (tmp_path / "supernet.pt").is_file()
