"""The supernet interior report (issue 18): one JSON per phase, the same random subnets in each,
figures equal to a direct measurement, training state untouched; the export is a Callback."""

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from cimnas.models.evaluation import evaluate_accuracy, recalibrate_bn
from cimnas.models.supernet import PhaseSpec, load_supernet
from cimnas.models.supernet_module import OFASupernetModule, SupernetExport
from cimnas.models.supernet_report import PhaseReport, report_designs, report_lines
from cimnas.space import Architecture, get_space

from test_supernet_train import _data  # noqa: E402  (synthetic band images)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class _BNProbe(L.Callback):
    """Records the BN statistics where PhaseReport reports (epoch start, train end)."""

    def __init__(self) -> None:
        self.states = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.states.append(pl_module._bn_state())

    def on_train_end(self, trainer, pl_module) -> None:
        self.states.append(pl_module._bn_state())


def test_report_designs_are_seeded_and_valid():
    space = get_space("apq_mbv2_tiny")
    a, b = report_designs(space, 5, seed=3), report_designs(space, 5, seed=3)
    assert [x[0].to_dict() for x in a] == [x[0].to_dict() for x in b]
    assert [x[0].to_dict() for x in a] != [x[0].to_dict() for x in report_designs(space, 5, seed=4)]
    for arch, policy in a:
        arch.validate(space)
        policy.validate(space)
    with pytest.raises(ValueError, match="n_random"):
        PhaseReport(n_random=-1)


def test_phase_report_per_phase_equals_direct_measurement_and_restores_bn(tmp_path):
    L.seed_everything(0)
    train, val = _data(16, 0), _data(16, 1)
    phases = [PhaseSpec("full", epochs=1, kernels=[3], depths=[2], hidden="max", kd=False, lr=0.05),
              PhaseSpec("width", epochs=1, kernels=[3], depths=[2], subnets_per_step=2, lr=0.02)]
    module = OFASupernetModule(space="apq_mbv2_tiny", phases=phases, calib_images=16, calib_batch_size=8,
                               export_path=str(tmp_path / "out" / "supernet.pt"))
    before, after = _BNProbe(), _BNProbe()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False,
                        default_root_dir=str(tmp_path), max_epochs=2,
                        callbacks=[before, PhaseReport(n_random=2, seed=5), after])
    trainer.fit(module, DataLoader(train, batch_size=8), DataLoader(val, batch_size=8))
    # the module added its export callback itself, once
    assert sum(isinstance(c, SupernetExport) for c in trainer.callbacks) == 1
    assert (tmp_path / "out" / "supernet.pt").is_file()
    reports = [json.loads((tmp_path / "phase_reports" / name).read_text()) for name in ("0_full.json", "1_width.json")]
    assert [r["phase"] for r in reports] == ["full", "width"] and [r["epoch"] for r in reports] == [0, 1]
    assert reports[0]["measurements"] == 3 * 2 + 2 * 3
    assert [s["arch"] for s in reports[0]["subnets"]] == [s["arch"] for s in reports[1]["subnets"]]
    for r in reports:
        assert r["val_images"] == 16 and r["low_bits"] == min(module.space.bit_choices)
        for tau in r["kendall_tau"].values():
            assert -1.0 <= tau <= 1.0 or tau != tau
        assert all(s["macs"] > s["params"] > 0 for s in r["subnets"])
    # training BN statistics are what they were before the report
    for a, b in zip(before.states, after.states):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the last report is a direct measurement of the final weights
    net = load_supernet(tmp_path / "out" / "supernet.pt")
    net.eval()
    net.set_active(Architecture.largest(net.space), None)
    recalibrate_bn(net, module.calibration_batches())
    assert evaluate_accuracy(net, DataLoader(val, batch_size=8)) == pytest.approx(
        reports[1]["reference"]["largest"]["fp"], abs=1e-6)
    assert len(report_lines(reports[1])) == 4


def test_listed_export_callback_is_not_duplicated(tmp_path):
    L.seed_everything(0)
    module = OFASupernetModule(space="apq_mbv2_tiny", calib_images=8, calib_batch_size=8,
                               phases=[PhaseSpec("full", epochs=1, kernels=[3], depths=[2], hidden="max", kd=False)],
                               export_path=str(tmp_path / "s.pt"))
    listed = SupernetExport()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                        max_epochs=1, callbacks=[listed])
    trainer.fit(module, DataLoader(_data(8), batch_size=8))
    assert [c for c in trainer.callbacks if isinstance(c, SupernetExport)] == [listed]
    assert load_supernet(tmp_path / "s.pt").space.name == "apq_mbv2_tiny"


def test_a_phase_is_reported_after_its_last_checkpoint_and_only_once(tmp_path):
    """The report of a phase runs once the phase's last epoch is checkpointed (a run cut during
    the report resumes from that checkpoint), and an existing report file is not redone."""
    seen = []

    class Recording(PhaseReport):
        def _maybe_report(self, trainer, pl_module, epochs_done):
            if self._ended_phase(pl_module, epochs_done) is not None and epochs_done:
                seen.append((epochs_done, sorted(p.name for p in (tmp_path / "ck").glob("*.ckpt"))))
            super()._maybe_report(trainer, pl_module, epochs_done)

    L.seed_everything(0)
    phases = [PhaseSpec("full", epochs=1, kernels=[3], depths=[2], hidden="max", kd=False, lr=0.05),
              PhaseSpec("width", epochs=1, kernels=[3], depths=[2], subnets_per_step=2, lr=0.02)]
    module = OFASupernetModule(space="apq_mbv2_tiny", phases=phases, calib_images=8, calib_batch_size=8,
                               export_path=str(tmp_path / "s.pt"))
    (tmp_path / "phase_reports").mkdir()
    (tmp_path / "phase_reports" / "1_width.json").write_text("{}")  # already reported: kept as it is
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path),
                        max_epochs=2, callbacks=[L.pytorch.callbacks.ModelCheckpoint(
                            dirpath=tmp_path / "ck", save_top_k=-1, every_n_epochs=1, filename="{epoch}"),
                            Recording(n_random=1)])
    trainer.fit(module, DataLoader(_data(8), batch_size=8), DataLoader(_data(8, 1), batch_size=8))
    assert seen[0] == (1, ["epoch=0.ckpt"])  # phase 0 reported after its checkpoint
    assert json.loads((tmp_path / "phase_reports" / "0_full.json").read_text())["phase"] == "full"
    assert (tmp_path / "phase_reports" / "1_width.json").read_text() == "{}"
