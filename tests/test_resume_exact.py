"""A supernet training stopped mid-epoch and resumed from its checkpoint equals the uninterrupted
training bit for bit (issue 16): every tensor of the final state dict (weights, BN statistics,
quantizer clip ranges and their initialised flags), the optimizer's momentum buffers and the
global step. Tiny: 96 Fashion-MNIST training images in batches of 32 (3 steps an epoch), three
phases (full -> kernel/depth sandwich -> quantization-aware), the run killed after step 4 (mid
epoch 1: the resumed part crosses an epoch end with validation, a phase change with channel
sorting and the quantizers' lazy calibration)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cimnas.cli import RNGStateCallback
from cimnas.models.supernet import PhaseSpec
from cimnas.models.supernet_module import OFASupernetModule

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not FMNIST.is_file(), reason="needs Fashion-MNIST (dataset-fashion-mnist)")]

PHASES = [PhaseSpec("full", epochs=1, kernels=[3], depths=[2], hidden="max", kd=False, lr=0.05, warmup_epochs=0.5),
          PhaseSpec("depth", epochs=1, kernels=[3, 5], subnets_per_step=2, lr=0.02),
          PhaseSpec("quant", epochs=1, subnets_per_step=3, quantize=True, sort_channels=True, lr=0.01)]
TOTAL_STEPS = 9


def _module() -> OFASupernetModule:
    return OFASupernetModule(space="apq_mbv2_tiny", phases=PHASES, calib_images=32, calib_batch_size=32,
                             float_subnet_prob=0.5, dropout=0.2, export_path=None)


def _data():
    from cimnas.data import FashionMNISTDataModule

    return FashionMNISTDataModule(batch_size=32, eval_batch_size=32, train_subset=96, val_subset=32, seed=3)


def _fit(root: Path, max_steps: int, ckpt_path: str | None = None, every: int | None = None) -> L.Trainer:
    L.seed_everything(0)
    callbacks: list = [RNGStateCallback()]
    if every:
        callbacks.append(ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=every, save_top_k=-1,
                                         filename="{step}"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(root),
                        max_epochs=len(PHASES), max_steps=max_steps, callbacks=callbacks,
                        enable_checkpointing=bool(every))
    module = _module()
    trainer.fit(module, _data(), ckpt_path=ckpt_path)
    trainer.module = module
    return trainer


def _state(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.module.state_dict().items()}
    opt = trainer.optimizers[0].state_dict()["state"]
    out.update({f"opt.{i}.{k}": v.clone() for i, s in opt.items() for k, v in s.items() if torch.is_tensor(v)})
    return out


def test_killed_and_resumed_training_equals_uninterrupted(tmp_path):
    kill_at = 4
    full = _fit(tmp_path / "full", TOTAL_STEPS)
    reference = _state(full)
    assert full.global_step == TOTAL_STEPS

    _fit(tmp_path / "killed", kill_at, every=kill_at)  # "killed" right after step kill_at's checkpoint
    ckpt = tmp_path / "killed" / "checkpoints" / f"step={kill_at}.ckpt"
    assert ckpt.is_file()
    resumed = _fit(tmp_path / "killed", TOTAL_STEPS, ckpt_path=str(ckpt))
    assert resumed.global_step == TOTAL_STEPS
    state = _state(resumed)
    assert state.keys() == reference.keys()
    differing = [k for k in reference if not torch.equal(reference[k], state[k])]
    assert not differing, f"{len(differing)} of {len(reference)} tensors differ, e.g. {differing[:5]}"
    # the run really went through all phases (quantizer clips initialised, channels sorted)
    assert resumed.module.channels_sorted and resumed.module.entered_phase == len(PHASES) - 1


def test_two_uninterrupted_runs_are_identical(tmp_path):
    a, b = _state(_fit(tmp_path / "a", 3)), _state(_fit(tmp_path / "b", 3))
    assert all(torch.equal(a[k], b[k]) for k in a)
