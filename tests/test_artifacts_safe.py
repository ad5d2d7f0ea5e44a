"""Shipped artifacts are read-only inputs (issue 16).

The README's commands, in tiny variants (fast_dev_run / one epoch / a few samples), run from a
scratch working directory holding the repository's ``configs`` and ``cimnas`` (symlinks, so
relative config paths resolve as in a clone): afterwards every file under ``cimnas/artifacts/``
is byte-identical (sha256), each job wrote under its run folder, and no ``checkpoints/`` folder
appeared. Promotion (``python -m cimnas.promote``) refuses a worse model and accepts it with
``--force``, on temporary copies only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "cimnas" / "artifacts"
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _finish_wandb():
    """Close any W&B run a CLI job opened (a later test's wandb.init would otherwise reuse it)."""
    yield
    import wandb

    wandb.finish()


def artifact_hashes() -> dict[str, str]:
    return {str(p.relative_to(ARTIFACTS)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ARTIFACTS.rglob("*")) if p.is_file()}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name in ("configs", "cimnas"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return tmp_path


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"{folder}/{pattern}: {found}"
    return found[0]


TINY_SUPERNET = ["--trainer.fast_dev_run=2", "--data.init_args.train_subset=128", "--data.init_args.val_subset=64",
                 "--data.init_args.batch_size=32", "--data.init_args.eval_batch_size=64",
                 "--model.init_args.calib_images=64", "--model.init_args.calib_batch_size=64",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.skipif(not ARTIFACTS.joinpath("fmnist", "supernet.pt").is_file(), reason="no shipped artifacts")
def test_readme_commands_leave_artifacts_byte_identical(workdir):
    from cimnas.cli import main as train_main
    from cimnas.experiments.hw_evaluate import main as hw_main
    from cimnas.models.predictor.measure import main as measure_main
    from cimnas.models.supernet_eval import main as supernet_eval_main
    from cimnas.search.cli import main as search_main
    from cimnas.search.value_stats import main as value_stats_main

    before = artifact_hashes()
    # 1. supernet (two configs of the README / scripts)
    for config, job in (("configs/supernet/fmnist.yaml", "supernet_fmnist"),
                        ("configs/supernet/fmnist_resnet.yaml", "supernet_fmnist_resnet")):
        assert train_main(["fit", "--config", config, *TINY_SUPERNET]) == 0
        run = _one(workdir / "runs" / job, "2*")
        assert (run / "supernet.pt").is_file()  # (fast_dev_run saves no config.yaml)
    if FMNIST.is_file():
        assert supernet_eval_main(["--supernet", "cimnas/artifacts/fmnist/supernet.pt", "--val_subset", "64",
                                   "--calib_images", "64", "--calib_batch_size", "64", "--bits", "[4]"]) == 0
        # 2. measurements, predictors, value statistics
        for config in ("configs/predictor/measure_fmnist_fp.yaml", "configs/predictor/measure_fmnist.yaml"):
            measure_main(["--config", config, "--num_samples", "1", "--eval_images", "50",
                          "--calibration_images", "64", "--calibration_batch_size", "64"])
        assert len((workdir / "runs/measure_fmnist/predictor_records_quant.jsonl").read_text().splitlines()) == 1
        assert value_stats_main(["--images", "2"]) is None
        _one(workdir / "runs" / "value_stats", "2*/value_stats.pt")
    for config, job, name in (("configs/predictor/fmnist_fp.yaml", "predictor_fmnist_fp", "predictor_fp.pt"),
                              ("configs/predictor/fmnist_quant.yaml", "predictor_fmnist_quant", "predictor.pt"),
                              ("configs/predictor/fmnist_resnet.yaml", "predictor_fmnist_resnet", "predictor.pt")):
        assert train_main(["fit", "--config", config, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1"]) == 0
        assert (_one(workdir / "runs" / job, "2*") / name).is_file()
    # 3. search (tiny GA) and the cost model on its design file
    assert search_main(["--ga.popsize", "8", "--ga.generations", "2", "--output.plots", "false",
                        "--output.progress", "false", "--wandb.mode", "disabled"]) == 0
    best = workdir / "results" / "default" / "best.json"
    assert best.is_file()
    assert hw_main([str(best)]) == 0
    if FMNIST.is_file():
        # 4. fine-tuning of the chosen design
        assert train_main(["fit", "--config", "configs/finetune.yaml", "--model.init_args.design", str(best),
                           "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
                           "--model.init_args.calib_images=64", "--model.init_args.calib_batch_size=64",
                           "--model.init_args.onnx=false", "--data.init_args.train_subset=64",
                           "--data.init_args.val_subset=64", "--data.init_args.test_subset=64",
                           "--trainer.enable_progress_bar=false"]) == 0
        assert (workdir / "results" / "default" / "best.finetune.json").is_file()
    assert artifact_hashes() == before
    assert not (workdir / "checkpoints").exists() and not (ROOT / "checkpoints").exists()


def test_training_refuses_to_export_into_artifacts(workdir, capsys):
    from cimnas.cli import main as train_main
    from cimnas.search.value_stats import main as value_stats_main
    from cimnas.inputs import run_user_main

    before = artifact_hashes()
    code = train_main(["fit", "--config", "configs/predictor/fmnist_fp.yaml", "--trainer.max_epochs=1",
                       "--model.init_args.export_path", "cimnas/artifacts/fmnist/predictor_fp.pt"])
    err = capsys.readouterr().err
    assert code == 2 and "export_path" in err and "shipped artifacts" in err and "Traceback" not in err
    assert run_user_main(value_stats_main, ["--out", "cimnas/artifacts/fmnist/value_stats.pt"]) == 2
    assert "--out" in capsys.readouterr().err
    assert artifact_hashes() == before
    assert not (workdir / "runs" / "predictor_fmnist_fp").exists() or not any(
        (workdir / "runs" / "predictor_fmnist_fp").rglob("*.pt"))


# ---------------------------------------------------------------------- promotion


def _predictor_file(path: Path, kendall: float | None, quantized: bool = True) -> Path:
    from cimnas.models.predictor.predictor import AccuracyPredictor

    torch.manual_seed(0)
    model = AccuracyPredictor("apq_mbv2_tiny", quantized=quantized, hidden_size=8, num_layers=1)
    model.meta = {} if kendall is None else {"report": {"metrics": {"kendall": kendall}}}
    model.save(path)
    return path


def _supernet_file(path: Path, val_acc: float | None, val_images: int = 64) -> Path:
    from cimnas.models.supernet import OFASupernet, save_supernet
    from cimnas.space import get_space

    torch.manual_seed(0)
    meta = None if val_acc is None else {"val_acc": val_acc, "val_images": val_images}
    save_supernet(OFASupernet(get_space("apq_mbv2_tiny")), path, meta=meta)
    return path


@pytest.mark.parametrize("kind", ["predictor", "predictor_fp", "supernet"])
def test_promote_refuses_worse_and_accepts_with_force(tmp_path, kind, capsys):
    from cimnas.promote import main as promote_main

    shipped = tmp_path / "artifacts"
    shipped.mkdir()
    make = (lambda p, m: _supernet_file(p, m)) if kind == "supernet" else \
        (lambda p, m: _predictor_file(p, m, quantized=kind == "predictor"))
    target = shipped / {"supernet": "supernet.pt", "predictor": "predictor.pt", "predictor_fp": "predictor_fp.pt"}[kind]
    make(target, 0.5)
    good_bytes = target.read_bytes()
    worse = make(tmp_path / "worse.pt", 0.4)
    better = make(tmp_path / "better.pt", 0.6)
    # worse: refused, target untouched
    assert promote_main(["--kind", kind, "--from", str(worse), "--artifacts", str(shipped)]) == 1
    err = capsys.readouterr().err
    assert "worse" in err and "0.4000 < 0.5000" in err
    assert target.read_bytes() == good_bytes
    # not worse: accepted
    assert promote_main(["--kind", kind, "--from", str(better), "--artifacts", str(shipped)]) == 0
    assert target.read_bytes() == better.read_bytes()
    # worse with --force: accepted
    assert promote_main(["--kind", kind, "--from", str(worse), "--artifacts", str(shipped), "--force"]) == 0
    assert target.read_bytes() == worse.read_bytes()
    assert sorted(p.name for p in shipped.iterdir()) == [target.name]  # no temporary file left behind


def test_promote_refuses_incomparable_and_wrong_kind(tmp_path, capsys):
    from cimnas.promote import main as promote_main

    shipped = tmp_path / "artifacts"
    shipped.mkdir()
    _predictor_file(shipped / "predictor.pt", None)  # an incumbent without a recorded metric
    candidate = _predictor_file(tmp_path / "c.pt", 0.9)
    assert promote_main(["--kind", "predictor", "--from", str(candidate), "--artifacts", str(shipped)]) == 1
    assert "records no held-out Kendall tau" in capsys.readouterr().err
    fp = _predictor_file(tmp_path / "fp.pt", 0.9, quantized=False)
    assert promote_main(["--kind", "predictor", "--from", str(fp), "--artifacts", str(shipped)]) == 2
    assert "full-precision" in capsys.readouterr().err
    assert promote_main(["--kind", "predictor", "--from", str(tmp_path / "nope.pt"), "--artifacts", str(shipped)]) == 2
    assert "nope.pt" in capsys.readouterr().err
    # a file of another space never replaces the incumbent, even with --force
    shutil.copyfile(ROOT / "cimnas/artifacts/fmnist_resnet/predictor.pt", tmp_path / "resnet.pt")
    assert promote_main(["--kind", "predictor", "--from", str(tmp_path / "resnet.pt"), "--artifacts", str(shipped),
                         "--force"]) == 2
    assert "ofa_resnet50_tiny" in capsys.readouterr().err
    assert json.dumps(sorted(p.name for p in shipped.iterdir())) == '["predictor.pt"]'
