"""Which designs a measurement labels (cimnas.models.predictor.design_sets): seeded by index,
valid, covering sizes uniform sampling misses; finite sets capped; a file's designs in order."""

import json

import pytest
import torch

from cimnas.models.design import load_designs
from cimnas.models.predictor.design_sets import design_at, set_size
from cimnas.models.predictor.features import CapacityFeatures
from cimnas.models.predictor.measure import measure_shard, sample_design
from cimnas.models.predictor.records import design_key, read_records
from cimnas.space import ArchBatch, Architecture, QuantPolicy, apq_mbv2_tiny


def _log_macs(space, designs):
    feats = CapacityFeatures(space, bits=False)
    batch = ArchBatch.from_designs(space, [a for a, _ in designs], [q or QuantPolicy.uniform(space, 8) for _, q in designs])
    return feats(batch)[:, feats.names.index("log_macs")]


def test_uniform_set_is_the_historical_sampler():
    space = apq_mbv2_tiny()
    for i in range(5):
        assert design_at(space, "uniform", 3, i, True) == sample_design(space, 3, i, True)
    g = torch.Generator().manual_seed(3 * 1_000_003 + 2)
    assert sample_design(space, 3, 2, True) == (Architecture.random(space, g), QuantPolicy.random(space, g))


def test_stratified_set_spans_sizes_uniform_sampling_misses():
    space = apq_mbv2_tiny()
    strat = [design_at(space, "stratified", 0, i, True) for i in range(200)]
    unif = [design_at(space, "uniform", 0, i, True) for i in range(200)]
    for arch, policy in strat:
        arch.validate(space)
        policy.validate(space)
    assert strat == [design_at(space, "stratified", 0, i, True) for i in range(200)]  # index-seeded
    s, u = _log_macs(space, strat), _log_macs(space, unif)
    assert s.min() < u.min() and s.max() > u.max()
    by_stratum = torch.stack([s[k::10].mean() for k in range(10)])
    assert bool((by_stratum[1:] > by_stratum[:-1]).all()), by_stratum  # strata ordered by size
    assert s.std() > 1.5 * u.std()
    bits = torch.tensor([sum(sum(getattr(q, f)) for f in ("pw_w_bits", "pw_a_bits", "dw_w_bits", "dw_a_bits"))
                         for _, q in strat], dtype=torch.float)
    assert bits.std() > 0  # bit widths vary across the set


def test_grid_and_extremes_are_finite_and_exact():
    space = apq_mbv2_tiny()
    grid = [design_at(space, "grid", 0, i, True) for i in range(set_size(space, "grid", True))]
    assert len(grid) == 27 * len(space.bit_choices) and len({design_key(a, q) for a, q in grid}) == len(grid)
    smallest_shape, largest_shape = grid[0][0], grid[26][0]
    assert smallest_shape.depths == Architecture.smallest(space).depths
    assert largest_shape == Architecture.largest(space)
    assert grid[0][1] == QuantPolicy.uniform(space, min(space.bit_choices))
    assert design_at(space, "extremes", 0, 0, True) == (Architecture.largest(space), QuantPolicy.uniform(space, 4))
    assert design_at(space, "extremes", 0, 5, True) == (Architecture.smallest(space), QuantPolicy.uniform(space, 8))
    assert design_at(space, "extremes", 0, 1, False) == (Architecture.median(space), None)
    with pytest.raises(ValueError, match=r"num_samples: the 'extremes' set has 3 designs"):
        design_at(space, "extremes", 0, 3, False)
    with pytest.raises(ValueError, match=r"allowed values: \['uniform', 'stratified'"):
        design_at(space, "sobol", 0, 0, False)


def test_measure_shard_caps_a_finite_set_and_reads_a_design_file(tmp_path):
    space = apq_mbv2_tiny()
    out = tmp_path / "grid.jsonl"
    assert measure_shard(lambda a, q: 0.5, space, out, 100, quantized=False, designs="grid", log=None) == 27
    records = read_records(out)
    assert [r["designs"] for r in records] == ["grid"] * 27
    with pytest.raises(ValueError, match="'grid' design set, this run measures 'uniform'"):
        measure_shard(lambda a, q: 0.5, space, out, 5, quantized=False, log=None)
    # a design file (pareto.json-like list) in file order
    designs = [design_at(space, "uniform", 9, i, True) for i in range(3)]
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps([{"space": space.to_dict(), "architecture": a.to_dict(), "quantization": q.to_dict()}
                                for a, q in designs]))
    loaded = load_designs(path, space)
    out2 = tmp_path / "file.jsonl"
    assert measure_shard(lambda a, q: 0.5, space, out2, 10, quantized=True, designs="file", file_designs=loaded,
                         log=None) == 3
    assert [r["key"] for r in read_records(out2)] == [design_key(a, q) for a, q in designs]
