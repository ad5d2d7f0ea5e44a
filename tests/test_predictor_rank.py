"""Capacity features, the pairwise ranking loss and the RankPredictor (ridge + MLP ensemble)."""

from __future__ import annotations

import math

import pytest
import torch

from cimnas.models.predictor import AccuracyPredictor
from cimnas.models.predictor.features import CapacityFeatures
from cimnas.models.predictor.ranking import (RankPredictor, fit_rank_predictor, kendall_tau,
                                             pairwise_logistic_loss)
from cimnas.space import Architecture, ArchBatch, QuantPolicy, get_space
from cimnas.space.layers import layer_plan


def _random_batch(space, n, seed):
    g = torch.Generator().manual_seed(seed)
    designs = [(Architecture.random(space, g), QuantPolicy.random(space, g)) for _ in range(n)]
    return ArchBatch.from_designs(space, [a for a, _ in designs], [p for _, p in designs]), designs


def _reference_features(space, arch: Architecture, policy: QuantPolicy) -> list[float]:
    """Per-design loop over the layer plan's slots (independent of the batched gathers)."""
    plan = layer_plan(space)
    active = arch.active_blocks(space)
    macs = params = wbits = bitops = 0.0
    res = list(space.resolution_choices).index(arch.resolution)
    for l, name in enumerate(plan.names):
        b, role = int(plan.block[l]), int(plan.role[l])
        C, M, R, G = (int(plan.C[l]), int(plan.M[l]), int(plan.R[l]), int(plan.G[l]))
        P = int(plan.P_by_res[res, l])
        if b >= 0:
            if not active[b]:
                continue
            h, k = arch.hidden[b], arch.kernels[b]
            se = int(plan.se_lut[h])
            if name.endswith(".expand"):
                M = h
            elif name.endswith(".dw"):
                R, G = k, h
            elif name.endswith(".se_reduce"):
                C, M = h, se
            elif name.endswith(".se_expand"):
                C, M = se, h
            elif name.endswith(".project"):
                C = h
            pw_w, pw_a, dw_w, dw_a = policy.block_bits(b)
            w, a = (dw_w, dw_a) if name.endswith(".dw") else (pw_w, pw_a)
        else:
            w = a = space.fixed_bits
        p = G * C * M * R * R
        params += p
        macs += p * P * P
        wbits += p * w
        bitops += p * P * P * w * a
    idx = [b for b in range(space.num_blocks) if active[b]]
    out = [math.log(macs), math.log(params), math.log(wbits), math.log(bitops), float(len(idx))]
    out += [float(d) for d in arch.depths]
    out.append(sum(arch.kernels[b] for b in idx) / len(idx))
    out.append(sum(arch.hidden[b] / space.max_hidden(b) for b in idx) / len(idx))
    for field in ("pw_w_bits", "pw_a_bits", "dw_w_bits", "dw_a_bits"):
        out.append(sum(getattr(policy, field)[b] for b in idx) / len(idx))
    return out


@pytest.mark.parametrize("space_name", ["apq_mbv2_tiny", "ofa_mbv3"])
def test_capacity_features_match_per_design_loop(space_name):
    space = get_space(space_name)
    batch, designs = _random_batch(space, 12, seed=3)
    feats = CapacityFeatures(space)(batch)
    assert feats.shape == (12, CapacityFeatures(space).dim)
    ref = torch.tensor([_reference_features(space, a, p) for a, p in designs], dtype=torch.float32)
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)
    # the full-precision variant drops exactly the bit columns; the indicator is the last column
    fp = CapacityFeatures(space, bits=False)(batch)
    keep = [i for i, n in enumerate(CapacityFeatures(space).names) if "bits" not in n and "bitops" not in n]
    torch.testing.assert_close(fp, feats[:, keep])
    ind = CapacityFeatures(space, quantized_indicator=True)(batch, torch.tensor([0.0] * 6 + [1.0] * 6))
    assert ind[:, -1].tolist() == [0.0] * 6 + [1.0] * 6


def test_pairwise_loss_lowers_with_training_on_monotone_target():
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    target = torch.tanh(x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0]))  # monotone in a projection
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = float(pairwise_logistic_loss(model(x).squeeze(-1), target).detach())
    for _ in range(150):
        loss = pairwise_logistic_loss(model(x).squeeze(-1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(pairwise_logistic_loss(model(x).squeeze(-1), target).detach())
    assert last < 0.5 * first
    assert kendall_tau(model(x).squeeze(-1).detach(), target) > 0.85
    # a perfectly ordered prediction scores lower than a reversed one
    assert pairwise_logistic_loss(target * 10, target) < pairwise_logistic_loss(-target * 10, target)


def test_kendall_tau_matches_torchmetrics():
    from torchmetrics.functional import kendall_rank_corrcoef

    g = torch.Generator().manual_seed(1)
    p, t = torch.randn(50, generator=g), torch.randint(0, 8, (50,), generator=g).float()
    assert kendall_tau(p, t) == pytest.approx(float(kendall_rank_corrcoef(p, t)), abs=1e-6)


def _synthetic(space, n, seed, bits=True):
    batch, _ = _random_batch(space, n, seed)
    f = CapacityFeatures(space)(batch)
    y = 0.8 + 0.01 * (f[:, 0] - f[:, 0].mean())  # MACs
    return batch, y + 0.005 * (f[:, -4] - 6.0) if bits else y  # and pw_w bits


@pytest.mark.parametrize("quantized", [True, False])
def test_rank_predictor_fits_saves_loads_and_predicts_batched(tmp_path, quantized):
    space = get_space("apq_mbv2_tiny")
    xb, y = _synthetic(space, 160, seed=0, bits=quantized)
    vb, vy = _synthetic(space, 60, seed=1, bits=quantized)
    model = RankPredictor(space, quantized=quantized, quantized_indicator=quantized, num_members=2, hidden_size=16)
    fit_rank_predictor(model, xb, y, torch.ones(160), val=(vb, vy), seed=0, epochs=5, batch_size=64)
    pred = model.predict(vb)
    assert pred.shape == (60,) and pred.dtype == torch.float32
    assert kendall_tau(pred, vy) > 0.5
    # the batched predict equals the dense training path
    with torch.no_grad():
        dense = model(model.inputs(vb)) * model.target_std + model.target_mean
    torch.testing.assert_close(pred, dense, rtol=0, atol=1e-5)
    # one call == row by row
    torch.testing.assert_close(torch.cat([model.predict(vb[i:i + 1]) for i in range(5)]), pred[:5],
                               rtol=0, atol=1e-6)
    path = tmp_path / "rank.pt"
    model.save(path)
    loaded = AccuracyPredictor.from_checkpoint(path)  # the search's loader dispatches on the format
    assert isinstance(loaded, RankPredictor) and loaded.quantized == quantized
    assert torch.equal(loaded.predict(vb), pred)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_ridge_only_is_closed_form_and_ignores_seed():
    space = get_space("apq_mbv2_tiny")
    xb, y = _synthetic(space, 120, seed=2)
    preds = []
    for seed in (0, 1):
        m = RankPredictor(space, num_members=0)
        fit_rank_predictor(m, xb, y, torch.ones(120), seed=seed, alpha=1.0)
        preds.append(m.predict(xb))
    assert torch.equal(preds[0], preds[1])
    assert kendall_tau(preds[0], y) > 0.9


def test_rank_checkpoint_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "cimnas.rank_predictor/1", "space": get_space("apq_mbv2_tiny").to_dict()}, bad)
    with pytest.raises(ValueError, match="no 'config'"):
        AccuracyPredictor.from_checkpoint(bad)


def test_rank_split_is_the_data_modules_split(tmp_path):
    from cimnas.models.predictor.data import PredictorDataModule
    from cimnas.models.predictor.rank_fit import _load, split_records
    from cimnas.models.predictor.records import design_key, write_records_atomic

    space = get_space("apq_mbv2_tiny")
    _, designs = _random_batch(space, 40, seed=5)
    g = torch.Generator().manual_seed(0)
    recs = [{"index": i, "key": design_key(a, p), "arch": a.to_dict(), "policy": p.to_dict(),
             "accuracy": float(torch.rand((), generator=g)), "space": space.name} for i, (a, p) in enumerate(designs)]
    path = tmp_path / "r.jsonl"
    write_records_atomic(path, recs)
    dm = PredictorDataModule([str(path)], space=space.name, quantized=True, split_seed=3)
    dm.setup()
    parts = split_records(_load([str(path)]), 0.2, 0.1, split_seed=3)
    for name in ("train", "val", "test"):
        assert dm.splits[name].tensors[1].tolist() == [pytest.approx(r["accuracy"]) for r in parts[name]]


# ---------------------------------------------------------------------- lookup-table inputs


def _random_rank_model(space, quantized, seed):
    """An untrained RankPredictor with random weights and feature statistics (exercises every
    term of predict; bit-identity does not depend on training)."""
    torch.manual_seed(seed)
    model = RankPredictor(space, quantized=quantized, quantized_indicator=quantized, num_members=3, hidden_size=8)
    model.reset_members(seed)
    with torch.no_grad():
        model.lin_w.normal_()
        model.feature_mean.normal_()
        model.feature_std.uniform_(0.5, 2.0)
        model.target_std.fill_(0.05)
        model.target_mean.fill_(0.8)
    return model


@pytest.mark.parametrize("space_name,quantized", [("apq_mbv2_tiny", True), ("apq_mbv2_tiny", False),
                                                  ("ofa_mbv3", True), ("ofa_resnet50_tiny", True)])
def test_lookup_table_inputs_equal_the_encoder_and_features_bit_for_bit(space_name, quantized):
    space = get_space(space_name)
    model = _random_rank_model(space, quantized, seed=3)
    batch, _ = _random_batch(space, 300, seed=4)
    index, offsets, raw = model.input_tables(batch)
    assert torch.equal(raw, model.features(batch))
    idx = model.encoder.indices(batch)
    dense = torch.zeros(batch.batch_size, model.onehot_dim)
    rows = torch.repeat_interleave(torch.arange(batch.batch_size), torch.diff(offsets, append=torch.tensor([len(index)])))
    dense.index_put_((rows, index), torch.ones(len(index)), accumulate=True)
    assert torch.equal(dense, model.encoder.encode(batch, quantized=quantized))
    assert idx.arch_index.shape[0] == batch.batch_size
    # predictions: same bits, whatever the chunking
    ref = model.predict(batch, lookup_tables=False)
    assert torch.equal(model.predict(batch), ref)
    assert torch.equal(model.predict(batch, chunk_size=7), model.predict(batch, chunk_size=7, lookup_tables=False))


def test_lookup_table_path_falls_back_on_values_outside_the_space():
    space = get_space("apq_mbv2_tiny")
    model = _random_rank_model(space, True, seed=5)
    batch, _ = _random_batch(space, 20, seed=6)
    active = batch.active_blocks(space)
    row, block = (int(i) for i in (~active).nonzero()[0])
    odd = ArchBatch(*(t.clone() for t in (batch.depths, batch.kernels, batch.hidden, batch.resolution, batch.bits)))
    odd.kernels[row, block] = 4  # not a kernel choice, in a skipped block: ignored by both paths
    odd.bits[row, block, 2] = 99
    assert model.input_tables(odd) is None
    assert torch.equal(model.predict(odd), model.predict(odd, lookup_tables=False))
    # (the encoder's careful path sums the quant columns field-major: equal up to rounding)
    torch.testing.assert_close(model.predict(odd), model.predict(batch), rtol=0, atol=1e-6)
    row, block = (int(i) for i in active.nonzero()[0])
    odd.kernels[row, block] = 4  # in an active block: the encoder's error
    with pytest.raises(Exception, match=r"kernels\[\d+\]=4"):
        model.predict(odd)


def test_shipped_rank_predictor_lookup_tables_reproduce_it_on_the_records():
    from cimnas.models.predictor.records import read_records, records_to_batch

    predictor = AccuracyPredictor.from_checkpoint("cimnas/artifacts/fmnist/predictor_rank.pt")
    batch = records_to_batch(predictor.space, read_records("cimnas/artifacts/fmnist/predictor_records_quant.jsonl"),
                             quantized=True)
    assert torch.equal(predictor.predict(batch), predictor.predict(batch, lookup_tables=False))
    # and after an in-place parameter change the cached first layer follows
    before = predictor.predict(batch[:50])
    with torch.no_grad():
        predictor.lin_b.add_(0.01)
    after = predictor.predict(batch[:50])
    assert torch.equal(after, predictor.predict(batch[:50], lookup_tables=False)) and not torch.equal(after, before)


def test_bf16_members_rank_the_shipped_records_like_fp32():
    from cimnas.models.predictor.records import read_records, records_to_batch

    predictor = AccuracyPredictor.from_checkpoint("cimnas/artifacts/fmnist/predictor_rank.pt")
    batch = records_to_batch(predictor.space, read_records("cimnas/artifacts/fmnist/predictor_records_quant.jsonl"),
                             quantized=True)
    fp32 = predictor.predict(batch).double()
    predictor.hidden_dtype = torch.bfloat16
    try:
        bf16 = predictor.predict(batch).double()
        reference_path = predictor.predict(batch, lookup_tables=False).double()
    finally:
        predictor.hidden_dtype = None
    assert not torch.equal(fp32, bf16)  # the opt-in really changes the arithmetic
    assert torch.equal(predictor.predict(batch).double(), fp32)  # and switching it off restores float32
    for other in (bf16, reference_path):
        assert kendall_tau(fp32, other) >= 0.999  # measured 0.99973 on the 1,035 records
        top = lambda x: set(torch.topk(x, 100).indices.tolist())  # noqa: E731
        assert len(top(fp32) & top(other)) >= 98  # measured 100
        assert float((fp32 - other).abs().max()) < 1e-3  # measured 8.6e-6 (accuracy fraction)
