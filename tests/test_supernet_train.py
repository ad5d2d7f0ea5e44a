"""Training the supernet with Lightning: loss goes down, phases / resume, 2-process DDP."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cimnas.models.supernet import PhaseSpec, load_supernet
from cimnas.models.supernet_module import OFASupernetModule

REPO = Path(__file__).resolve().parents[1]



pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _data(n: int = 32, seed: int = 0) -> TensorDataset:
    """Learnable synthetic images: class k has a bright k-th horizontal band."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 28, 28, generator=g)
    for i, k in enumerate(y.tolist()):
        x[i, 0, 2 * k + 4: 2 * k + 7] += 2.0
    return TensorDataset(x, y)


def _trainer(tmp_path: Path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path), **kw)


def test_seeded_training_lowers_loss(tmp_path):
    L.seed_everything(0)
    data = _data(32)
    module = OFASupernetModule(space="apq_mbv2_tiny", phases=[PhaseSpec("full", epochs=4, kernels=[3], depths=[2],
                                                                       hidden="max", kd=False, lr=0.05)],
                               label_smoothing=0.0, calib_images=32)
    x, y = data.tensors
    net = module.supernet

    def loss() -> float:
        net.set_active(*net.phase_extreme(module.phases[0], largest=True))
        net.train()
        with torch.no_grad():
            return float(F.cross_entropy(net(x), y))

    before = loss()
    _trainer(tmp_path, max_epochs=4, enable_checkpointing=False).fit(module, DataLoader(data, batch_size=16))
    after = loss()
    assert after < 0.8 * before, (before, after)


def test_phase_schedule_resume_and_checkpoint_loading(tmp_path):
    L.seed_everything(0)
    data = _data(16)
    phases = [
        # kernel 3 / depth 2 only, to keep the test fast on a shared CPU
        PhaseSpec("full", epochs=1, kernels=[3], depths=[2], hidden="max", kd=False, lr=0.05),
        PhaseSpec("width", epochs=1, kernels=[3], depths=[2], subnets_per_step=3, sort_channels=True, lr=0.02,
                  warmup_epochs=0.5),
        PhaseSpec("quant", epochs=1, kernels=[3], depths=[2], subnets_per_step=2, quantize=True, lr=0.01),
    ]
    kw = dict(space="apq_mbv2_tiny", phases=phases, calib_images=16, calib_batch_size=8)
    module = OFASupernetModule(**kw)
    assert [module.phase_index(e) for e in range(4)] == [0, 1, 2, 2]
    assert module.lr_at(phases[1], 0.25) == pytest.approx(0.02 * (0.25 + 1e-3) / 0.5)
    assert module.lr_at(phases[1], 1.0) == pytest.approx(0.0, abs=1e-12)
    loader = DataLoader(data, batch_size=8)
    ckpt_dir = tmp_path / "ck"
    cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[cb])
    trainer.fit(module, loader, loader)
    assert module.entered_phase == 1 and module.channels_sorted
    assert "val/acc_largest" in trainer.callback_metrics and "val/acc_smallest" in trainer.callback_metrics

    # resume in the quantization phase: channel sorting is not repeated
    resumed = OFASupernetModule(**kw)
    resumed.supernet.sort_channels = lambda: (_ for _ in ()).throw(AssertionError("re-sorted on resume"))
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True)])
    trainer.fit(resumed, loader, loader, ckpt_path=str(ckpt_dir / "last.ckpt"))
    assert resumed.entered_phase == 2 and resumed.channels_sorted
    assert "val/acc_smallest_q" in trainer.callback_metrics
    assert bool(resumed.supernet.stem.conv.input_quantizer.initialized)  # ranges set in the QAT phase

    # the Lightning checkpoint loads as a plain supernet (weights_only) with the same weights
    net = load_supernet(ckpt_dir / "last.ckpt")
    for (k, a), (_, b) in zip(net.state_dict().items(), resumed.supernet.state_dict().items()):
        assert torch.equal(a, b), k


DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch, lightning as L
    from torch.utils.data import DataLoader, TensorDataset
    from cimnas.models.supernet import PhaseSpec
    from cimnas.models.supernet_module import OFASupernetModule
    torch.set_num_threads(1)
    L.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g))
    phases = [PhaseSpec("full", epochs=1, kernels=[3], depths=[2], hidden="max", kd=False, lr=0.05),
              PhaseSpec("width", epochs=1, kernels=[3], subnets_per_step=3, sort_channels=True, lr=0.02)]
    module = OFASupernetModule(space="apq_mbv2_tiny", phases=phases, calib_images=8)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", max_epochs=2,
                        limit_train_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(data, batch_size=4))
    checksum = float(sum(p.detach().double().sum() for p in module.supernet.parameters()))
    with open(sys.argv[1] + f".rank{trainer.global_rank}", "w") as f:
        json.dump({"checksum": checksum, "step": trainer.global_step, "world": trainer.world_size}, f)
""")


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "result"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["step"] == 4 for r in ranks)
    # same subnets on both ranks + all-reduced gradients => identical weights
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)


def test_random_sampler_trains_interior_subnets_not_the_sandwich():
    """``sampler='random'`` (OFA's dynamic batch): every subnet of a step is random, none is the
    phase's largest or smallest; ``sandwich`` keeps both extremes first. Bad names are refused."""
    module = OFASupernetModule(space="apq_mbv2_tiny", calib_images=32)
    net = module.supernet
    for sampler in ("sandwich", "random"):
        phase = PhaseSpec("kernel", depths=[4], hidden="max", subnets_per_step=4, sampler=sampler)
        largest = net.phase_extreme(phase, largest=True)[0]
        smallest = net.phase_extreme(phase, largest=False)[0]
        seen = []
        for step in range(5):
            subnets = module.step_subnets(phase, torch.Generator().manual_seed(step))
            assert len(subnets) == 4
            seen += [a for a, _, _ in subnets]
            if sampler == "sandwich":
                assert subnets[0][0] == largest and subnets[0][2] and subnets[1][0] == smallest
            else:
                assert not any(is_largest for _, _, is_largest in subnets)
        interior = [a for a in seen if a not in (largest, smallest)]
        assert len(interior) == (20 if sampler == "random" else 10)
        assert len({tuple(a.kernels) for a in interior}) > 1  # the 5x5 kernels get trained too
    with pytest.raises(ValueError, match="sampler"):
        PhaseSpec("kernel", sampler="ofa")


def test_ofa_recipe_config_parses_to_random_sampling():
    """configs/supernet/fmnist_ofa.yaml: random subnets in every elastic phase, with distillation."""
    import yaml

    config = yaml.safe_load((REPO / "configs/supernet/fmnist_ofa.yaml").read_text())
    phases = [PhaseSpec(**p) for p in config["model"]["init_args"]["phases"]]
    elastic = [p for p in phases if p.name != "full"]
    assert elastic and all(p.sampler == "random" and p.kd for p in elastic)
    assert [p.subnets_per_step for p in elastic][:3] == [1, 2, 4]
    assert config["trainer"]["max_epochs"] == sum(p.epochs for p in phases)
