"""Accuracy predictor: APQ-layout encoding, APQ state dict, query API, transfer, resumable
measurement, and learning a synthetic monotone target."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torchmetrics.functional.regression import kendall_rank_corrcoef

from cimnas.models.predictor import AccuracyPredictor, ArchEncoder, PredictorDataModule, PredictorModule
from cimnas.models.predictor.measure import measure_shard, merge_shards, sample_design, shard_path
from cimnas.models.predictor.records import design_key, read_records, records_to_batch, write_records_atomic
from cimnas.space import BIT_FIELDS, Architecture, ArchBatch, QuantPolicy, SpaceError, get_space

@pytest.fixture(autouse=True)
def one_thread():
    """Small matmuls on a shared 2-core box: one thread avoids OpenMP oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


APQ_E_CHOICES = [5, 7, 7, 7, 7, 11, 11, 11, 11, 21, 21, 21, 21, 25, 25, 25, 25, 49, 49, 49, 49]


def random_designs(space, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    designs = [(Architecture.random(space, g), QuantPolicy.random(space, g)) for _ in range(n)]
    return designs, ArchBatch.from_designs(space, [a for a, _ in designs], [q for _, q in designs])


def apq_reference_features(arch: Architecture, policy: QuantPolicy) -> torch.Tensor:
    """APQ ``Converter.spec2feature`` semantics for the 21-block MBv2 space, one design at a
    time: kernels (21 x 3) | expand one-hots (per block 4*C_in..6*C_in step 8) | 4 bit fields
    field-major (21 x 3 each); inactive blocks all zero."""
    c_in = [16] + [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4
    x = torch.zeros(772)
    col = 63
    for i in range(21):
        choices = list(range(4 * c_in[i], 6 * c_in[i] + 1, 8))
        active = i % 4 < arch.depths[i // 4]
        if active:
            x[3 * i + [3, 5, 7].index(arch.kernels[i])] = 1
            x[col + choices.index(arch.hidden[i])] = 1
        col += len(choices)
    assert col == 520
    for f, name in enumerate(BIT_FIELDS):
        for i in range(21):
            if i % 4 < arch.depths[i // 4]:
                x[520 + f * 63 + 3 * i + [4, 6, 8].index(getattr(policy, name)[i])] = 1
    return x


# ---------------------------------------------------------------------- encoding


def test_apq_mbv2_encoding_is_apqs_772_dim_layout():
    space = get_space("apq_mbv2")
    enc = ArchEncoder(space)
    assert (enc.kernel_dim, enc.hidden_dim, enc.arch_dim, enc.quant_dim, enc.dim) == (63, 457, 520, 252, 772)
    assert [len(h) for h in enc.hidden_choices] == APQ_E_CHOICES
    designs, batch = random_designs(space, 40, seed=1)
    features = enc.encode(batch)
    expected = torch.stack([apq_reference_features(a, q) for a, q in designs])
    assert torch.equal(features, expected)
    # one kernel, one hidden one-hot per active block, four bit one-hots per active block
    active = batch.active_blocks(space).sum(1).float()
    assert torch.equal(features[:, :520].sum(1), 2 * active)
    assert torch.equal(features[:, 520:].sum(1), 4 * active)
    assert torch.equal(enc.encode(batch, quantized=False), expected[:, :520])


def test_inactive_blocks_are_zero_and_their_genes_ignored():
    space = get_space("apq_mbv2_tiny")
    enc = ArchEncoder(space)
    arch = Architecture.largest(space)
    arch.depths = [2, 4, 3, 2, 4, 1]
    policy = QuantPolicy.uniform(space, 8)
    x = enc.encode(ArchBatch.from_designs(space, [arch], [policy]))[0]
    # change every gene of the inactive blocks: the encoding must not move
    inactive = [b for b, a in enumerate(arch.active_blocks(space)) if not a]
    assert inactive == [2, 3, 11, 14, 15]
    arch2 = Architecture.from_dict(arch.to_dict())
    policy2 = QuantPolicy.from_dict(policy.to_dict())
    for b in inactive:
        arch2.kernels[b] = 3
        arch2.hidden[b] = min(space.hidden_choices(b))
        for name in BIT_FIELDS:
            getattr(policy2, name)[b] = 4
    x2 = enc.encode(ArchBatch.from_designs(space, [arch2], [policy2]))[0]
    assert torch.equal(x, x2)
    for b in inactive:
        assert x[3 * b: 3 * b + 3].sum() == 0
        lo = enc.hidden_offsets[b]
        assert x[lo: lo + len(enc.hidden_choices[b])].sum() == 0
        for f in range(4):
            q = enc.arch_dim + f * enc.num_blocks * 3 + 3 * b
            assert x[q: q + 3].sum() == 0


def test_decode_round_trip_and_multi_resolution_space():
    for name in ("apq_mbv2_tiny", "ofa_mbv3"):
        space = get_space(name)
        enc = ArchEncoder(space)
        _, batch = random_designs(space, 25, seed=2)
        x = enc.encode(batch)
        assert torch.equal(enc.encode(enc.decode(x)), x)
    enc = ArchEncoder("ofa_mbv3")  # 20 x (3 + 3) + 25 resolutions = OFA's 145-dim arch part
    assert (enc.arch_dim, enc.quant_dim) == (145, 240)


def test_invalid_active_value_names_field_and_allowed_values():
    space = get_space("apq_mbv2_tiny")
    _, batch = random_designs(space, 4, seed=3)
    batch.depths[2, 0] = 4
    batch.hidden[2, 1] = 7  # block 1 is active (depth 4): 7 is not a hidden choice
    with pytest.raises(SpaceError, match=r"hidden\[1\]=7 .*allowed values: \[24, 26"):
        ArchEncoder(space).encode(batch)
    batch.hidden[2, 1] = 24
    batch.bits[1, 0, 3] = 5
    batch.depths[1, 0] = 4
    with pytest.raises(SpaceError, match=r"dw_a_bits\[0\]=5 .*allowed values: \[4, 6, 8\]"):
        ArchEncoder(space).encode(batch)
    # an off-grid value in an inactive block is ignored (redundant genome genes)
    batch.bits[1, 0, 3] = 8
    batch.depths[0, 0] = 2
    batch.kernels[0, 3] = 4
    x = ArchEncoder(space).encode(batch)
    assert x[0, 9:12].sum() == 0


# ---------------------------------------------------------------------- model / query API


def synthetic_apq_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    return {
        "layers.0.0.weight": r(400, 520), "layers.0.0.bias": r(400),
        "layers.1.0.weight": r(400, 400), "layers.1.0.bias": r(400),
        "layers.2.0.weight": r(400, 400), "layers.2.0.bias": r(400),
        "quantize_fc.weight": r(400, 252), "quantize_fc.bias": r(400),
        "regressor.weight": r(1, 400), "regressor.bias": torch.tensor([0.87]),
    }


def test_apq_state_dict_loads_and_predicts(tmp_path):
    sd = synthetic_apq_state_dict()
    path = tmp_path / "acc_quant.pt"
    torch.save(sd, path)
    predictor = AccuracyPredictor.from_checkpoint(path)
    assert predictor.space.name == "apq_mbv2" and predictor.quantized
    designs, batch = random_designs(predictor.space, 16, seed=4)
    pred = predictor.predict(batch)
    # APQ's forward written out on the reference features
    x = torch.stack([apq_reference_features(a, q) for a, q in designs])
    h = torch.relu(x[:, :520] @ sd["layers.0.0.weight"].T + sd["layers.0.0.bias"])
    h = h + x[:, 520:] @ sd["quantize_fc.weight"].T + sd["quantize_fc.bias"]
    for i in (1, 2):
        h = torch.relu(h @ sd[f"layers.{i}.0.weight"].T + sd[f"layers.{i}.0.bias"])
    expected = (h @ sd["regressor.weight"].T + sd["regressor.bias"]).squeeze(-1)
    assert pred.shape == (16,)
    torch.testing.assert_close(pred, expected, rtol=1e-5, atol=1e-5)
    # our checkpoint format round-trips the same predictions
    predictor.save(tmp_path / "ours.pt")
    again = AccuracyPredictor.from_checkpoint(tmp_path / "ours.pt")
    torch.testing.assert_close(again.predict(batch), pred)
    with pytest.raises(ValueError, match="unknown predictor checkpoint"):
        torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
        AccuracyPredictor.from_checkpoint(tmp_path / "bad.pt")


def test_index_form_equals_dense_forward():
    space = get_space("apq_mbv2_tiny")
    torch.manual_seed(0)
    predictor = AccuracyPredictor(space).eval()
    _, batch = random_designs(space, 50, seed=5)
    with torch.no_grad():
        dense = predictor(predictor.encode(batch))
        sparse = predictor.mlp.forward_indices(predictor.encoder.indices(batch), chunk_size=16)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_cpu_equals_cuda(tmp_path):
    space = get_space("apq_mbv2")
    torch.manual_seed(0)
    AccuracyPredictor(space).save(tmp_path / "p.pt")
    _, batch = random_designs(space, 64, seed=6)
    cpu = AccuracyPredictor.from_checkpoint(tmp_path / "p.pt", "cpu").predict(batch)
    cuda_pred = AccuracyPredictor.from_checkpoint(tmp_path / "p.pt", "cuda").predict(batch.to("cuda"))
    assert cuda_pred.device.type == "cuda"
    torch.testing.assert_close(cuda_pred.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_transfer_starts_at_the_full_precision_predictor(tmp_path):
    space = get_space("apq_mbv2_tiny")
    torch.manual_seed(1)
    fp = AccuracyPredictor(space, quantized=False)
    fp.save(tmp_path / "fp.pt")
    module = PredictorModule(space=space.name, quantized=True, transfer_from=str(tmp_path / "fp.pt"))
    _, batch = random_designs(space, 20, seed=7)
    torch.testing.assert_close(module.model.predict(batch), fp.predict(batch))
    default_init = PredictorModule(space=space.name, transfer_from=str(tmp_path / "fp.pt"),
                                   quant_branch_init="default")
    assert not torch.allclose(default_init.model.predict(batch), fp.predict(batch))
    with pytest.raises(ValueError, match="quant_branch_init='x'.*allowed values"):
        PredictorModule(quant_branch_init="x")


# ---------------------------------------------------------------------- measurement


def fake_accuracy(space, arch, policy):
    active = arch.active_blocks(space)
    s = sum(arch.hidden[b] / space.max_hidden(b) + arch.kernels[b] / 7 for b in range(space.num_blocks) if active[b])
    if policy is not None:
        s += sum(sum(policy.block_bits(b)) / 8 for b in range(space.num_blocks) if active[b])
    return 0.5 + 0.005 * s


class Interrupt(RuntimeError):
    pass


def test_interrupted_measurement_resumes_without_loss_or_duplicates(tmp_path):
    space = get_space("apq_mbv2_tiny")
    out = tmp_path / "records.jsonl"
    calls = []

    def evaluate(arch, policy, stop_after=None):
        if stop_after is not None and len(calls) >= stop_after:
            raise Interrupt
        calls.append(design_key(arch, policy))
        return fake_accuracy(space, arch, policy)

    with pytest.raises(Interrupt):
        measure_shard(lambda a, q: evaluate(a, q, stop_after=7), space, out, 20, seed=3, log=None)
    first = out.read_text()
    assert len(read_records(out)) == 7
    with open(out, "a") as f:  # a write cut in the middle of a line
        f.write('{"index": 7, "key": "trunc')
    n_before = len(calls)
    written = measure_shard(lambda a, q: evaluate(a, q), space, out, 20, seed=3, log=None)
    assert written == 13 and len(calls) - n_before == 13  # only the missing ones were measured
    records = read_records(out)
    assert out.read_text().startswith(first)  # earlier records untouched
    assert sorted(r["index"] for r in records) == list(range(20))
    assert len({r["key"] for r in records}) == 20
    assert measure_shard(evaluate, space, out, 20, seed=3, log=None) == 0  # complete: nothing to do
    for r in records:
        arch, policy = sample_design(space, 3, r["index"], True)
        assert r["key"] == design_key(arch, policy)
        assert r["accuracy"] == pytest.approx(fake_accuracy(space, arch, policy))
    with pytest.raises(ValueError, match="another design"):
        measure_shard(evaluate, space, out, 20, seed=4, log=None)


def test_rank_shards_merge_to_the_single_process_file(tmp_path):
    space = get_space("apq_mbv2_tiny")
    evaluate = lambda a, q: fake_accuracy(space, a, q)  # noqa: E731
    single = tmp_path / "single.jsonl"
    measure_shard(evaluate, space, single, 11, seed=0, quantized=False, log=None)
    sharded = tmp_path / "sharded.jsonl"
    for rank in range(3):
        measure_shard(evaluate, space, sharded, 11, seed=0, quantized=False, rank=rank, world_size=3, log=None)
    assert [r["index"] for r in read_records(shard_path(sharded, 1, 3))] == [1, 4, 7, 10]
    merged = merge_shards(sharded, 3)
    assert not shard_path(sharded, 1, 3).exists()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "eval_s"} for r in rs]  # noqa: E731
    assert strip(merged) == strip(read_records(single)) == strip(read_records(sharded))
    assert all(r["policy"] is None for r in merged)


def test_supernet_evaluator_measures_a_random_supernet(tmp_path):
    from cimnas.models.predictor.measure import SupernetEvaluator
    from cimnas.models.supernet import OFASupernet

    torch.manual_seed(0)
    net = OFASupernet("apq_mbv2_tiny")
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(32, 1, 28, 28, generator=g)]
    evals = [(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (20, 20, 10)]
    evaluator = SupernetEvaluator(net, calib, evals)
    out = tmp_path / "r.jsonl"
    measure_shard(evaluator, net.space, out, 2, seed=0, quantized=True, log=None)
    records = read_records(out)
    assert len(records) == 2
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and (r["accuracy"] * 50) == pytest.approx(round(r["accuracy"] * 50))
        # halves split at the batch boundary nearest the middle; their counts add up to the total
        assert r["half_images"] == [40, 10]
        first, second = r["accuracy_halves"]
        assert round(first * 40) + round(second * 10) == round(r["accuracy"] * 50)
    # the same design measured again gives the same numbers (fixed calibration / eval batches)
    arch, policy = sample_design(net.space, 0, 1, True)
    again = evaluator(arch, policy)
    assert again["accuracy"] == records[1]["accuracy"] and again["accuracy_halves"] == records[1]["accuracy_halves"]
    # one evaluation batch: no halves
    assert set(SupernetEvaluator(net, calib, evals[:1])(arch, policy)) == {"accuracy"}


# ---------------------------------------------------------------------- learning


def synthetic_records(space, n, quantized, seed, path):
    records = []
    for i in range(n):
        arch, policy = sample_design(space, seed, i, quantized)
        records.append({"index": i, "key": design_key(arch, policy), "arch": arch.to_dict(),
                        "policy": None if policy is None else policy.to_dict(),
                        "accuracy": fake_accuracy(space, arch, policy)})
    write_records_atomic(path, records)
    return path


def fit(module, datamodule, epochs, root):
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(root), check_val_every_n_epoch=10_000,
                        num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module, datamodule)
    return module.last_report["metrics"]


def test_predictor_learns_a_synthetic_monotone_target(tmp_path):
    L.seed_everything(0, verbose=False)
    space = get_space("apq_mbv2_tiny")
    path = synthetic_records(space, 500, True, seed=0, path=tmp_path / "q.jsonl")
    dm = PredictorDataModule([str(path)], space=space.name, quantized=True, batch_size=64)
    module = PredictorModule(space=space.name, quantized=True, export_path=str(tmp_path / "p.pt"))
    metrics = fit(module, dm, 60, tmp_path / "run")
    assert metrics["kendall"] >= 0.8, metrics
    assert metrics["rmse"] < 0.5 * metrics["baseline_rmse_predict_mean"], metrics
    assert (tmp_path / "run" / "predictor_scatter.png").stat().st_size > 1000
    report = json.loads((tmp_path / "run" / "predictor_report.json").read_text())
    assert report["metrics"]["num_configs"] == 100
    # the exported query checkpoint reproduces the module's held-out predictions
    predictor = AccuracyPredictor.from_checkpoint(tmp_path / "p.pt")
    test_records = sorted(read_records(path), key=lambda r: r["key"])
    batch = records_to_batch(space, test_records, quantized=True)
    with torch.no_grad():
        torch.testing.assert_close(predictor.predict(batch), module(dm.encoder.encode(batch)), rtol=1e-5, atol=1e-5)


def test_train_cli_configs_run(tmp_path):
    """The shipped configs parse and fit through train.py's LightningCLI (2 epochs)."""
    from cimnas.cli import train_cli

    space = get_space("apq_mbv2_tiny")
    fp_records = synthetic_records(space, 40, False, seed=1, path=tmp_path / "fp.jsonl")
    q_records = synthetic_records(space, 30, True, seed=2, path=tmp_path / "q.jsonl")
    common = ["--trainer.max_epochs", "2", "--trainer.logger", "false", "--trainer.callbacks", "[]",
              "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false"]
    train_cli(["fit", "--config", "configs/predictor/fmnist_fp.yaml", "--data.init_args.records", f"[{fp_records}]",
               "--model.init_args.export_path", str(tmp_path / "fp.pt"),
               "--trainer.default_root_dir", str(tmp_path / "fp_run"), *common])
    train_cli(["fit", "--config", "configs/predictor/fmnist_quant.yaml", "--data.init_args.records", f"[{q_records}]",
               "--model.init_args.transfer_from", str(tmp_path / "fp.pt"),
               "--model.init_args.export_path", str(tmp_path / "q.pt"),
               "--trainer.default_root_dir", str(tmp_path / "q_run"), *common])
    predictor = AccuracyPredictor.from_checkpoint(tmp_path / "q.pt")
    assert predictor.quantized and predictor.space.name == "apq_mbv2_tiny"
    assert (tmp_path / "q_run" / "predictor_report.json").exists()


def _small_predictor_fit(tmp_path, callbacks, **module_args):
    space = get_space("apq_mbv2_tiny")
    path = synthetic_records(space, 40, module_args.get("quantized", True), seed=3, path=tmp_path / "r.jsonl")
    dm = PredictorDataModule([str(path)], space=space.name, quantized=module_args.get("quantized", True),
                             batch_size=16)
    module = PredictorModule(space=space.name, **module_args)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path / "run"),
                        check_val_every_n_epoch=10_000, num_sanity_val_steps=0, callbacks=callbacks)
    return module, trainer, dm


def test_export_callback_writes_report_and_checkpoint_at_fit_end(tmp_path, monkeypatch):
    """PredictorExport (listed explicitly: used as given, not doubled) writes nothing before fit
    ends, then the report, the held-out metrics file and the query checkpoint, with no temporary
    file left; the module's default callback writes ``<run>/predictor_fp.pt`` for an fp predictor."""
    from cimnas.models.predictor import PredictorExport

    monkeypatch.setenv("CIMNAS_METRICS_FILE", str(tmp_path / "metrics.json"))
    seen_before_end = []

    class Observer(L.Callback):
        def on_train_end(self, trainer, pl_module):
            seen_before_end.append((tmp_path / "explicit.pt").exists())

    export = PredictorExport(export_path=str(tmp_path / "explicit.pt"))
    module, trainer, dm = _small_predictor_fit(tmp_path, [Observer(), export], export_path=str(tmp_path / "unused.pt"))
    trainer.fit(module, dm)
    assert seen_before_end == [False]
    assert [cb for cb in trainer.callbacks if isinstance(cb, PredictorExport)] == [export]
    predictor = AccuracyPredictor.from_checkpoint(tmp_path / "explicit.pt")
    assert predictor.meta["report"] == module.last_report == export.last_report
    assert not (tmp_path / "unused.pt").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["predictor_report.json", "predictor_scatter.png"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["held_out_num_configs"] == module.last_report["metrics"]["num_configs"] == 8
    # the module's default callback (no config entry): default file name of a full-precision predictor
    module, trainer, dm = _small_predictor_fit(tmp_path / "fp", [], quantized=False, report=False)
    trainer.fit(module, dm)
    assert sum(isinstance(cb, PredictorExport) for cb in trainer.callbacks) == 1
    assert sorted(p.name for p in (tmp_path / "fp" / "run").iterdir()) == ["predictor_fp.pt"]
    assert module.last_report is None and not AccuracyPredictor.from_checkpoint(tmp_path / "fp" / "run" /
                                                                                "predictor_fp.pt").quantized


def test_failed_fit_or_failed_export_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    """A fit that raises exports nothing; an export that fails while writing leaves the previous
    checkpoint as it was and no temporary file."""

    class Fail(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            raise RuntimeError("boom")

    module, trainer, dm = _small_predictor_fit(tmp_path, [Fail()], export_path=str(tmp_path / "p.pt"))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(module, dm)
    assert not (tmp_path / "p.pt").exists() and not (tmp_path / "run" / "predictor_report.json").exists()
    assert module.last_report is None

    (tmp_path / "p.pt").write_bytes(b"previous")

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    module, trainer, dm = _small_predictor_fit(tmp_path, [], export_path=str(tmp_path / "p.pt"), report=False)
    with pytest.raises(OSError, match="disk full"):
        trainer.fit(module, dm)
    assert (tmp_path / "p.pt").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["p.pt", "r.jsonl"]


def test_export_callback_listed_in_a_config_behaves_as_the_default(tmp_path, monkeypatch):
    """``trainer.callbacks`` may name PredictorExport: the same files and the same metrics file
    (the held-out metrics, written after the trainer's metrics) as the module's default callback."""
    from cimnas.cli import train_cli

    space = get_space("apq_mbv2_tiny")
    records = synthetic_records(space, 40, False, seed=1, path=tmp_path / "fp.jsonl")
    files = {}
    for name, callbacks in (("default", "[]"), ("listed", '[{"class_path": "cimnas.models.predictor.PredictorExport"}]')):
        monkeypatch.setenv("CIMNAS_METRICS_FILE", str(tmp_path / f"{name}.json"))
        train_cli(["fit", "--config", "configs/predictor/fmnist_fp.yaml", "--data.init_args.records", f"[{records}]",
                   "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1",
                   "--trainer.logger", "false", "--trainer.callbacks", callbacks,
                   "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", str(tmp_path / name)])
        files[name] = sorted(p.name for p in (tmp_path / name).iterdir())
        metrics = json.loads((tmp_path / f"{name}.json").read_text())
        assert any(k.startswith("held_out_") for k in metrics), metrics
        assert "val_kendall" in metrics, metrics  # configs/sweeps/predictor_fmnist.yaml's metric survives
    assert files["default"] == files["listed"] and "predictor_fp.pt" in files["listed"], files


def test_agreement_of_two_measurements(tmp_path):
    from cimnas.models.predictor.agreement import agreement

    space = get_space("apq_mbv2_tiny")
    a = synthetic_records(space, 12, False, seed=5, path=tmp_path / "a.jsonl")
    records = read_records(a)
    for i, r in enumerate(records):  # a second, noisier measurement of the first 10 designs
        r["accuracy"] += 0.001 * (-1) ** i
    write_records_atomic(tmp_path / "b.jsonl", records[:10])
    m = agreement(str(a), str(tmp_path / "b.jsonl"))
    assert m["num_configs"] == 10 and m["rmse"] == pytest.approx(0.001, rel=1e-3)
    assert 0.5 < m["kendall"] <= 1.0


def test_diagnose_separates_a_learnable_target_from_noise(tmp_path):
    """``diagnose`` sees the capacity effect and the linear learnability of a monotone synthetic
    target, and neither in shuffled labels of the same designs."""
    from cimnas.models.predictor.diagnose import diagnose

    space = get_space("apq_mbv2_tiny")
    path = synthetic_records(space, 200, True, seed=3, path=tmp_path / "q.jsonl")
    good = diagnose([str(path)], space=space.name, quantized=True)
    assert good["capacity_tau"]["depth"] > 0.5 and good["capacity_tau"]["hidden"] > 0.3, good
    assert good["ridge_curve_held_out_tau"]["160"] > 0.7, good
    records = read_records(path)
    accs = [r["accuracy"] for r in records]
    perm = torch.randperm(len(accs), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [{**r, "accuracy": accs[p]} for r, p in zip(records, perm)]
    write_records_atomic(tmp_path / "s.jsonl", shuffled)
    noise = diagnose([str(tmp_path / "s.jsonl")], space=space.name, quantized=True)
    assert abs(noise["ridge_curve_held_out_tau"]["160"]) < 0.3, noise
    assert all(abs(t) < 0.2 for t in noise["capacity_tau"].values()), noise
    assert noise["spread_pt"] == good["spread_pt"]


def test_label_ceiling_matches_a_simulated_measurement():
    """Spearman-Brown + Greiner: the ceiling predicted from two disjoint half measurements equals
    the Kendall tau of the true accuracy against the full-set label (Gaussian simulation)."""
    from cimnas.models.predictor.agreement import kendall_from_pearson, label_ceiling, spearman_brown

    assert spearman_brown(0.5, 1.0) == pytest.approx(0.5)
    assert spearman_brown(0.5, 2.0) == pytest.approx(2 / 3)
    assert spearman_brown(-0.1, 4.0) == 0.0
    assert spearman_brown(0.3, 2.0) < spearman_brown(0.3, 4.0) < 1.0
    assert kendall_from_pearson(0.0) == 0.0 and kendall_from_pearson(1.0) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    n, noise_var_half = 20000, 0.5  # noise variance of a label on one half of the images
    true = torch.randn(n, generator=g, dtype=torch.float64)
    half_a = true + noise_var_half ** 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    half_b = true + noise_var_half ** 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    full = (half_a + half_b) / 2  # the label on both halves
    pair_r = float(torch.corrcoef(torch.stack([half_a, half_b]))[0, 1])
    ceiling = label_ceiling(pair_r, 2500, 5000)
    assert ceiling["label_reliability"] == pytest.approx(1 / (1 + noise_var_half / 2), abs=0.01)
    assert ceiling["ceiling_pearson"] == pytest.approx(float(torch.corrcoef(torch.stack([true, full]))[0, 1]), abs=0.01)
    sub = slice(0, 3000)  # Kendall on a subset (quadratic cost)
    measured_tau = float(kendall_rank_corrcoef(true[sub], full[sub]))
    assert ceiling["ceiling_kendall"] == pytest.approx(measured_tau, abs=0.03)
    with pytest.raises(ValueError, match="label_images"):
        label_ceiling(0.5, 2500, 0)


def test_agreement_reports_the_ceiling_only_for_disjoint_images(tmp_path):
    from cimnas.models.predictor.agreement import agreement

    space = get_space("apq_mbv2_tiny")
    records = read_records(synthetic_records(space, 30, False, seed=6, path=tmp_path / "s.jsonl"))
    g = torch.Generator().manual_seed(1)
    a = [{**r, "eval_skip": 0, "eval_images": 2500,
          "accuracy": r["accuracy"] + 0.002 * float(torch.randn(1, generator=g))} for r in records]
    b = [{**r, "eval_skip": 2500, "eval_images": 2500,
          "accuracy": r["accuracy"] + 0.002 * float(torch.randn(1, generator=g))} for r in records]
    write_records_atomic(tmp_path / "a.jsonl", a)
    write_records_atomic(tmp_path / "b.jsonl", b)
    m = agreement(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert m["disjoint_images"] and m["label_images"] == 5000
    assert m["label_reliability"] > m["pearson"] and m["ceiling_pearson"] ** 2 == pytest.approx(m["label_reliability"])
    lo, hi = m["ceiling_kendall_ci95"]
    assert lo < m["ceiling_kendall"] < hi <= 1.0
    write_records_atomic(tmp_path / "c.jsonl", [{**r, "eval_skip": 0} for r in b])  # same images as a
    same = agreement(str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl"))
    assert not same["disjoint_images"] and "ceiling_kendall" not in same
    with pytest.raises(ValueError, match="disjoint"):
        agreement(str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl"), label_images=5000)


def test_diagnose_bounds_the_ceiling_from_half_set_accuracies(tmp_path):
    """Records with ``accuracy_halves`` get a label-noise ceiling: 1 for identical halves, lower
    the noisier the halves are; records without halves get none."""
    from cimnas.models.predictor.diagnose import diagnose

    space = get_space("apq_mbv2_tiny")
    records = read_records(synthetic_records(space, 120, False, seed=4, path=tmp_path / "s.jsonl"))
    assert "label_ceiling_upper" not in diagnose([str(tmp_path / "s.jsonl")], space=space.name, quantized=False)
    spread = float(torch.tensor([r["accuracy"] for r in records]).std())
    ceilings = []
    for noise in (0.0, 0.5, 2.0):  # half-set noise in units of the label spread
        g = torch.Generator().manual_seed(0)
        rows = []
        for r in records:
            e = (noise * spread * torch.randn(2, generator=g)).tolist()  # independent per half
            rows.append({**r, "accuracy_halves": [r["accuracy"] + e[0], r["accuracy"] + e[1]], "half_images": [2500, 2500]})
        rows[0] = {k: v for k, v in rows[0].items() if k not in ("accuracy_halves", "half_images")}  # an older record
        write_records_atomic(tmp_path / f"h{noise}.jsonl", rows)
        out = diagnose([str(tmp_path / f"h{noise}.jsonl")], space=space.name, quantized=False)["label_ceiling_upper"]
        assert out["label_images"] == 5000 and out["designs"] == 119
        ceilings.append(out["ceiling_kendall"])
    assert ceilings[0] == pytest.approx(1.0, abs=1e-3)
    assert ceilings[0] > ceilings[1] > ceilings[2]


def test_standardized_transfer_keeps_the_function_and_exports_in_accuracy_units(tmp_path):
    """With target standardisation the transferred predictor still starts as the fp one (its
    regressor is unfolded into the quant targets' units) and the export folds it back: with a
    zero learning rate the exported quantization-aware predictor equals the fp predictor."""
    L.seed_everything(0, verbose=False)
    space = get_space("apq_mbv2_tiny")
    fp = AccuracyPredictor(space, quantized=False)
    with torch.no_grad():
        fp.mlp.regressor.bias.fill_(0.8)
    fp.save(tmp_path / "fp.pt")
    path = synthetic_records(space, 60, True, seed=8, path=tmp_path / "q.jsonl")
    dm = PredictorDataModule([str(path)], space=space.name, quantized=True, batch_size=16)
    module = PredictorModule(space=space.name, quantized=True, transfer_from=str(tmp_path / "fp.pt"),
                             lr=0.0, export_path=str(tmp_path / "q.pt"))
    fit(module, dm, 1, tmp_path / "run")
    assert float(module.target_std) == pytest.approx(dm.train_target_std) and dm.train_target_std < 0.1
    _, batch = random_designs(space, 20, seed=9)
    exported = AccuracyPredictor.from_checkpoint(tmp_path / "q.pt")
    torch.testing.assert_close(exported.predict(batch), fp.predict(batch), rtol=1e-5, atol=1e-5)
    features = exported.encode(batch)
    with torch.no_grad():
        torch.testing.assert_close(module(features), fp.predict(batch), rtol=1e-5, atol=1e-5)
    assert exported.meta["target_std"] == pytest.approx(dm.train_target_std)


def test_predictor_learns_a_target_spread_over_tenths_of_a_point(tmp_path):
    """Real supernet labels differ by ~0.5 pt (std 0.005): with standardised targets the APQ MLP
    still learns a monotone target of that spread (in accuracy units Adam's weight decay
    overwhelms the ~1e-5 loss gradients)."""
    L.seed_everything(0, verbose=False)
    space = get_space("apq_mbv2_tiny")
    records = read_records(synthetic_records(space, 500, True, seed=0, path=tmp_path / "wide.jsonl"))
    acc = torch.tensor([r["accuracy"] for r in records])
    squeeze = 0.005 / float(acc.std())
    write_records_atomic(tmp_path / "q.jsonl", [{**r, "accuracy": 0.845 + squeeze * (r["accuracy"] - float(acc.mean()))}
                                                for r in records])
    dm = PredictorDataModule([str(tmp_path / "q.jsonl")], space=space.name, quantized=True, batch_size=64)
    metrics = fit(PredictorModule(space=space.name, quantized=True), dm, 60, tmp_path / "run")
    assert metrics["kendall"] >= 0.8, metrics
    assert metrics["rmse"] < 0.5 * metrics["baseline_rmse_predict_mean"], metrics


def test_measurement_records_its_label_reliability(tmp_path):
    """write_reliability: the split-half reliability of a record set beside it; more signal
    between designs relative to the noise of one half gives a higher reliability."""
    from cimnas.models.predictor.agreement import pair_ceiling
    from cimnas.models.predictor.measure import reliability_path, write_reliability

    g = torch.Generator().manual_seed(0)
    true = 0.8 + 0.02 * torch.randn(200, generator=g, dtype=torch.float64)

    def records(noise):
        halves = [true + noise * torch.randn(200, generator=g, dtype=torch.float64) for _ in range(2)]
        return [{"key": str(i), "accuracy": float((halves[0][i] + halves[1][i]) / 2),
                 "accuracy_halves": [float(halves[0][i]), float(halves[1][i])], "half_images": [2500, 2500]}
                for i in range(200)]

    clean, noisy = records(0.005), records(0.02)
    out = tmp_path / "r.jsonl"
    result = write_reliability(out, clean)
    assert json.loads(reliability_path(out).read_text()) == json.loads(json.dumps(result))
    x = torch.tensor([r["accuracy_halves"][0] for r in clean], dtype=torch.float64)
    y = torch.tensor([r["accuracy_halves"][1] for r in clean], dtype=torch.float64)
    assert result["label_reliability"] == pytest.approx(pair_ceiling(x, y, 2500, 2500)["label_reliability"])
    assert result["label_images"] == 5000 and result["records"] == 200
    assert result["label_reliability"] > write_reliability(tmp_path / "n.jsonl", noisy)["label_reliability"]
    assert write_reliability(tmp_path / "few.jsonl", clean[:9]) is None and not reliability_path(tmp_path / "few.jsonl").exists()
