"""Fine-tuning of searched designs: design-file checks, QAT, export round trip, CLI, batch table.

A tiny randomly initialised ``apq_mbv2_tiny`` supernet is built here (the shipped artifact is
not needed) and fine-tuned for a few steps on a small Fashion-MNIST subset.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from cimnas.data import FashionMNISTDataModule
from cimnas.finetune_batch import agreement, collect, write_table
from cimnas.models.design import Design, DesignError, load_design, top_designs
from cimnas.models.export import block_bit_widths, layer_bit_widths, load_subnet, read_subnet_record
from cimnas.models.finetune import FinetuneModule
from cimnas.space import Architecture, QuantPolicy, get_space
from cimnas.models.supernet import OFASupernet, save_supernet

SMALL_DATA = {"batch_size": 64, "eval_batch_size": 128, "train_subset": 192, "val_subset": 128, "test_subset": 128}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny supernet file and a mixed-precision design file of its space."""
    root = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    supernet = OFASupernet("apq_mbv2_tiny")
    save_supernet(supernet, root / "supernet.pt")
    space = supernet.space
    gen = torch.Generator().manual_seed(3)
    arch = Architecture.smallest(space)
    arch.kernels = [5] * space.num_blocks
    policy = QuantPolicy.random(space, gen)
    design = Design(space, arch, policy, {"rows": 128}, {"accuracy": 0.8125, "feasible": True}, "tiny")
    (root / "best.json").write_text(json.dumps(design.to_record()))
    return {"root": root, "supernet": root / "supernet.pt", "design": root / "best.json", "space": space,
            "arch": arch, "policy": policy}


def _record(tiny) -> dict:
    return json.loads(tiny["design"].read_text())


# ---------------------------------------------------------------------- design files


@pytest.mark.parametrize("mutate, field, allowed", [
    (lambda r: r.pop("quantization"), "quantization", "required keys"),
    (lambda r: r["architecture"].pop("hidden"), "hidden", "expected keys"),
    (lambda r: r["architecture"]["kernels"].__setitem__(2, 4), "architecture.kernels[2]=4", "[3, 5, 7]"),
    (lambda r: r["architecture"]["depths"].__setitem__(0, 9), "architecture.depths[0]=9", "[2, 3, 4]"),
    (lambda r: r["quantization"]["dw_a_bits"].__setitem__(5, 5), "quantization.dw_a_bits[5]=5", "[4, 6, 8]"),
    (lambda r: r["architecture"].__setitem__("resolution", 32), "resolution=32", "[28]"),
    (lambda r: (r.pop("space_config"), r.__setitem__("space", "apq_mbv2")), "space='apq_mbv2'", "['apq_mbv2_tiny']"),
    (lambda r: r["space_config"].__setitem__("num_classes", 100), "num_classes", "space_config"),
    (lambda r: r.__setitem__("format", "other/2"), "format='other/2'", "cimnas.design/1"),
])
def test_malformed_design_names_the_field(tiny, tmp_path, mutate, field, allowed):
    record = _record(tiny)
    mutate(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(DesignError) as info:
        load_design(path, space=tiny["space"])
    message = str(info.value)
    assert str(path) in message and field in message and allowed in message


def test_design_round_trip_and_module_rejects_bad_design(tiny, tmp_path):
    design = load_design(tiny["design"], space=tiny["space"])
    assert design.architecture == tiny["arch"] and design.quantization == tiny["policy"]
    assert design.predicted_accuracy == 0.8125 and design.hardware == {"rows": 128}
    bad = _record(tiny)
    bad["quantization"]["pw_w_bits"] = bad["quantization"]["pw_w_bits"][:-1]
    path = tmp_path / "short.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DesignError, match="quantization.pw_w_bits has 20 entries"):
        FinetuneModule(str(path), supernet=str(tiny["supernet"]))


def test_top_designs_from_population_csv(tiny, tmp_path):
    space, rec = tiny["space"], _record(tiny)
    (tmp_path / "best.json").write_text(json.dumps(rec))
    join = lambda v: " ".join(map(str, v))  # noqa: E731
    archs = [Architecture.smallest(space), Architecture.largest(space), Architecture.median(space)]
    rows = []
    for rank, (a, acc, feasible) in enumerate([(archs[0], 0.80, True), (archs[0], 0.80, True),  # same network
                                               (archs[1], 0.90, False), (archs[2], 0.85, True),
                                               (archs[1], 0.70, True)]):
        q = QuantPolicy.uniform(space, 8 if rank != 4 else 4)
        kernels = list(a.kernels)
        if rank == 1:  # same running network: only a block that depth 2 skips differs
            assert not a.active_blocks(space)[3]
            kernels[3] = 7
            q.pw_w_bits[3] = 4
        rows.append({"rank": rank, "feasible": feasible, "accuracy": acc, "depths": join(a.depths),
                     "kernels": join(kernels), "hidden": join(a.hidden), "resolution": a.resolution,
                     **{f: join(getattr(q, f)) for f in ("pw_w_bits", "pw_a_bits", "dw_w_bits", "dw_a_bits")},
                     "hw_rows": 128 + rank, "genome": "0 1"})
    with open(tmp_path / "population.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    top = top_designs(tmp_path, 5)
    assert [d.name for d in top] == ["rank0", "rank3", "rank4"]  # duplicate and infeasible rows dropped
    assert [d.predicted_accuracy for d in top] == [0.80, 0.85, 0.70]
    assert top[1].architecture == archs[2] and top[2].quantization == QuantPolicy.uniform(space, 4)
    assert top[0].hardware == {"rows": "128"}
    assert [d.name for d in top_designs(tmp_path, 2, selection="spread")] == ["rank4", "rank3"]


# ---------------------------------------------------------------------- fine-tuning and export


@pytest.fixture(scope="module")
def finetuned(tiny):
    torch.set_num_threads(1)
    L.seed_everything(0)
    out = tiny["root"] / "direct"
    module = FinetuneModule(str(tiny["design"]), supernet=str(tiny["supernet"]), lr=0.05, calib_images=128,
                            calib_batch_size=64, output_dir=str(out))
    inherited_before = {k: v.clone() for k, v in module.net.state_dict().items()}
    data = FashionMNISTDataModule(**SMALL_DATA)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=1, limit_test_batches=1, logger=False,
                        enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    recalibrated = {}

    class Snapshot(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            recalibrated.update({k: v.clone() for k, v in pl_module.net.state_dict().items()})

    trainer.callbacks.append(Snapshot())
    trainer.fit(module, data)
    return {"module": module, "before": inherited_before, "recalibrated": recalibrated, "out": out,
            "result": json.loads((out / "best.finetune.json").read_text())}


def test_finetune_changes_weights_and_keeps_bit_widths(tiny, finetuned):
    module, policy = finetuned["module"], tiny["policy"]
    before, recal = finetuned["before"], finetuned["recalibrated"]
    # BN recalibration replaced the running statistics of the inherited subnet, weights untouched
    assert not torch.equal(before["blocks.0.expand.bn.running_var"], recal["blocks.0.expand.bn.running_var"])
    assert torch.equal(before["blocks.0.expand.conv.weight"], recal["blocks.0.expand.conv.weight"])
    after = module.net.state_dict()
    changed = [k for k, v in after.items() if k.endswith("weight") and not torch.equal(v, recal[k])]
    weights = [k for k in after if k.endswith("conv.weight")]
    assert set(weights) <= set(changed), "every conv weight must have been updated by fine-tuning"
    active = [b for b, on in enumerate(tiny["arch"].active_blocks(tiny["space"])) if on]
    assert block_bit_widths(module.net) == [policy.block_bits(b) for b in active]
    fixed = {(w, a) for name, w, a in layer_bit_widths(module.net) if not name.startswith("blocks.")}
    assert fixed == {(8, 8)}  # stem, first block, head and classifier stay at space.fixed_bits
    result = finetuned["result"]
    assert result["predicted_accuracy"] == 0.8125 and result["steps"] == 3
    for key in ("inherited_val_accuracy", "finetuned_val_accuracy", "finetuned_test_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert math.isclose(result["abs_error"], abs(0.8125 - result["finetuned_val_accuracy"]))
    assert result["architecture"] == tiny["arch"].to_dict() and result["quantization"] == policy.to_dict()


def test_export_reloads_into_identical_network(tiny, finetuned):
    module = finetuned["module"]
    path = Path(finetuned["result"]["export"]["state_dict"])
    record = read_subnet_record(path)  # torch.load(weights_only=True) inside
    assert record["architecture"] == tiny["arch"].to_dict()
    assert record["quantization"] == tiny["policy"].to_dict()
    assert [tuple(t) for t in record["layer_bits"]] == layer_bit_widths(module.net)
    assert finetuned["result"]["export"]["onnx"] is None or Path(finetuned["result"]["export"]["onnx"]).is_file()
    rebuilt = load_subnet(path)
    module.net.eval()
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), module.net(x))
    assert block_bit_widths(rebuilt) == block_bit_widths(module.net)


# ---------------------------------------------------------------------- CLI


def _finetune_trainer(callbacks):
    return L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, limit_test_batches=1, logger=False,
                     enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks)


def test_report_callback_writes_the_result_at_fit_end_and_nothing_on_a_failed_fit(tiny, tmp_path):
    """FinetuneReport listed in the trainer is used as given (not doubled by the module's default):
    nothing is written while fitting or when the fit raises; at the end of a fit the result file
    appears, with no temporary file beside it, and validate adds its accuracy to it."""
    from cimnas.models.finetune import FinetuneReport

    def module():
        return FinetuneModule(str(tiny["design"]), supernet=str(tiny["supernet"]), calib_images=64,
                              calib_batch_size=64, measure_inherited=False, output_dir=str(tmp_path))

    class Fail(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            assert not list(tmp_path.iterdir())
            raise RuntimeError("boom")

    data = FashionMNISTDataModule(**SMALL_DATA)
    with pytest.raises(RuntimeError, match="boom"):
        _finetune_trainer([FinetuneReport(export=False, final_test=False), Fail()]).fit(module(), data)
    assert not list(tmp_path.iterdir())

    report = FinetuneReport(export=False, final_test=False)
    trainer = _finetune_trainer([report])
    finetune = module()
    trainer.fit(finetune, data)
    assert [cb for cb in trainer.callbacks if isinstance(cb, FinetuneReport)] == [report]
    assert [p.name for p in tmp_path.iterdir()] == ["best.finetune.json"]
    result = json.loads((tmp_path / "best.finetune.json").read_text())
    assert result == {**finetune.result}
    assert result["export"] == {} and result["finetuned_test_accuracy"] is None and result["steps"] == 1
    assert result["inherited_val_accuracy"] is None and 0.0 <= result["finetuned_val_accuracy"] <= 1.0
    # the module's default callback: validate merges its accuracy into the same file
    trainer = _finetune_trainer([])
    trainer.validate(finetune, data)
    assert sum(isinstance(cb, FinetuneReport) for cb in trainer.callbacks) == 1
    result = json.loads((tmp_path / "best.finetune.json").read_text())
    assert result["validate_accuracy"] == pytest.approx(finetune.last_val_accuracy)
    assert result["steps"] == 1 and [p.name for p in tmp_path.iterdir()] == ["best.finetune.json"]


def _cli_args(tiny, tmp_path, *extra):
    return ["--config", "configs/finetune.yaml", f"--model.init_args.supernet={tiny['supernet']}",
            f"--model.init_args.output_dir={tmp_path}", "--model.init_args.calib_images=128",
            "--model.init_args.calib_batch_size=64",
            *(f"--data.init_args.{k}={v}" for k, v in SMALL_DATA.items()),
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.logger.init_args.mode=offline",
            f"--trainer.default_root_dir={tmp_path}", *extra]


def test_cli_fit_then_validate_and_test_same_config(tiny, tmp_path, monkeypatch):
    import wandb

    from cimnas.cli import train_cli

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cli = train_cli(["fit", *_cli_args(tiny, tmp_path, "--trainer.max_epochs=1",
                                       f"--model.init_args.design={tiny['design']}")])
    wandb.finish()
    result = json.loads((tmp_path / "best.finetune.json").read_text())
    assert result["steps"] == 3 and result["finetuned_val_accuracy"] is not None
    last = result["last_checkpoint"]
    assert last and Path(last).is_file()
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*")), "W&B offline run folder expected"
    assert cli.trainer.callback_metrics["val/acc"] == pytest.approx(result["finetuned_val_accuracy"])
    # the same config validates / tests a checkpoint; --model.design is the class_path shorthand
    train_cli(["validate", *_cli_args(tiny, tmp_path, f"--model.design={tiny['design']}", f"--ckpt_path={last}")])
    wandb.finish()
    train_cli(["test", *_cli_args(tiny, tmp_path, f"--model.design={tiny['design']}", f"--ckpt_path={last}")])
    wandb.finish()
    result = json.loads((tmp_path / "best.finetune.json").read_text())
    assert result["validate_accuracy"] == pytest.approx(result["finetuned_val_accuracy"])
    assert result["test_accuracy"] == pytest.approx(result["finetuned_test_accuracy"])


# ---------------------------------------------------------------------- batch table


def test_agreement_and_table(tmp_path):
    stats = agreement([0.9, 0.8, 0.7, 0.6], [0.85, 0.80, 0.60, 0.65])
    assert stats["n"] == 4 and stats["mae"] == pytest.approx((0.05 + 0 + 0.1 + 0.05) / 4)
    assert stats["kendall_tau"] == pytest.approx((5 - 1) / 6)  # 5 concordant, 1 discordant pair
    assert agreement([0.9, None], [0.8, 0.7])["n"] == 1
    space = get_space("apq_mbv2_tiny")
    designs = [Design(space, Architecture.smallest(space), QuantPolicy.uniform(space, b), {}, {"accuracy": p}, f"d{b}")
               for b, p in ((4, 0.7), (6, 0.8), (8, 0.9))]
    design_dir = tmp_path / "designs"
    design_dir.mkdir()
    for i, (d, val) in enumerate(zip(designs, (0.72, 0.79, 0.93))):
        (design_dir / f"{i:02d}_{d.name}.finetune.json").write_text(json.dumps(
            {"predicted_accuracy": d.predicted_accuracy, "inherited_val_accuracy": val - 0.1,
             "finetuned_val_accuracy": val, "finetuned_test_accuracy": val - 0.01}))
    rows, stats = collect(designs, design_dir, tmp_path, {0: 1.0})
    assert stats["finetuned"]["kendall_tau"] == pytest.approx(1.0)
    assert stats["finetuned"]["mae"] == pytest.approx((0.02 + 0.01 + 0.03) / 3)
    files = write_table(rows, stats, tmp_path)
    table = list(csv.DictReader(open(files["csv"])))
    assert [float(r["finetuned_val_accuracy"]) for r in table] == [0.72, 0.79, 0.93]
    assert "Kendall τ = 1.0000" in files["md"].read_text()
    assert files["png"].stat().st_size > 1000


def test_missing_predictions_come_from_the_predictor(tmp_path):
    from cimnas.finetune_batch import _fill_predictions
    from cimnas.models.predictor.predictor import AccuracyPredictor
    from cimnas.space import ArchBatch

    space = get_space("apq_mbv2_tiny")
    torch.manual_seed(0)
    predictor = AccuracyPredictor(space, hidden_size=16, num_layers=1)
    predictor.save(tmp_path / "predictor.pt")
    gen = torch.Generator().manual_seed(4)
    designs = [Design(space, Architecture.random(space, gen), QuantPolicy.random(space, gen), {}, m, f"d{i}")
               for i, m in enumerate(({}, {"accuracy": 0.5}, {}))]
    _fill_predictions(designs, str(tmp_path / "predictor.pt"))
    batch = ArchBatch.from_designs(space, [d.architecture for d in designs], [d.quantization for d in designs])
    expected = predictor.predict(batch).tolist()
    assert designs[0].predicted_accuracy == pytest.approx(expected[0])
    assert designs[1].predicted_accuracy == 0.5  # a recorded prediction is kept
    assert designs[2].predicted_accuracy == pytest.approx(expected[2])
