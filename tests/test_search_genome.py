"""Genome, operators, objectives and constraint-domination ranking of the joint search (no cost model)."""

from __future__ import annotations

import math

import pytest
import torch

from cimnas.hw.params import HardwareSpace
from cimnas.space import BIT_FIELDS, Architecture, ArchBatch, QuantPolicy, apq_mbv2, apq_mbv2_tiny
from cimnas.search.genome import GenomeError, JointGenome
from cimnas.search.objectives import ObjectiveConfig, ObjectiveError, objective_keys
from cimnas.search.operators import (
    binary_tournament, first_occurrence, lexsort, polynomial_mutation, simulated_binary_crossover,
)


@pytest.fixture(scope="module")
def reference_genome() -> JointGenome:
    return JointGenome(apq_mbv2(), HardwareSpace.from_yaml("configs/hw/reference.yaml"))


def test_space_size_reference_and_paper_lists(reference_genome):
    # cimnas-reference-code.md §1.3: 9,676,800 HW x 7.03e78 SW = 6.8e85; paper lists 9.92e85.
    assert reference_genome.length == 141
    parts = reference_genome.space_size_by_part()
    assert parts["hardware"] == 9_676_800
    assert parts["software"] == pytest.approx(7.0277e78, rel=1e-4)
    assert reference_genome.space_size() == pytest.approx(6.8006e85, rel=1e-4)
    paper = JointGenome(apq_mbv2(), HardwareSpace.from_yaml("configs/hw/paper.yaml"))
    assert paper.space_size_by_part()["hardware"] == 14_112_000
    assert paper.space_size() == pytest.approx(9.917e85, rel=1e-3)
    assert paper.log10_space_size() == pytest.approx(math.log10(paper.space_size()), abs=1e-9)


def test_gene_order_is_the_reference_order(reference_genome):
    names = reference_genome.names
    assert names[:9] == ["voltage", "bits_per_cell", "cycle_s", "rows", "cols", "router_groups",
                         "tiles_per_group", "macros_per_tile", "glb_depth_words"]
    groups = [g.group for g in reference_genome.sw_genes]
    expected = ["depth"] * 6 + ["kernel"] * 21 + [f for f in BIT_FIELDS for _ in range(21)] + ["hidden"] * 21
    assert groups == expected
    # expansion option counts of the reference (x120..x140): 5, 7x4, 11x4, 21x4, 25x4, 49x4
    hidden = [g.cardinality for g in reference_genome.sw_genes if g.group == "hidden"]
    assert hidden == [5] + [7] * 4 + [11] * 4 + [21] * 4 + [25] * 4 + [49] * 4


def test_decode_encode_round_trip(reference_genome):
    g = reference_genome
    genome = g.random(64, torch.Generator().manual_seed(0))
    arch, hw = g.decode(genome)
    assert arch.batch_size == 64 and hw.batch_size == 64
    # every decoded design is valid in the space and equals the per-row decode
    for i, (a, q) in enumerate(arch.to_designs()[:8]):
        a.validate(g.space)
        q.validate(g.space)
        assert a.depths[-1] == 1  # the 1-block stage's redundant depth gene clips to 1
    back = g.encode(arch, g.hw_indices(genome))
    assert torch.equal(back, g.canonical(genome))
    arch2, hw2 = g.decode(back)
    for name in ("depths", "kernels", "hidden", "resolution", "bits"):
        assert torch.equal(getattr(arch, name), getattr(arch2, name))
    assert torch.equal(hw.rows, hw2.rows) and torch.allclose(hw.voltage, hw2.voltage)
    # only the redundant depth gene of the last stage may differ between genome and canonical form
    diff = (genome != back).any(dim=0).nonzero().reshape(-1).tolist()
    assert set(diff) <= {9 + 5}


def test_designs_round_trip_through_plain_dicts(reference_genome):
    g = reference_genome
    genome = g.canonical(g.random(5, torch.Generator().manual_seed(1)))
    designs = g.to_designs(genome)
    rebuilt = g.encode_designs([
        (Architecture.from_dict(d["architecture"]), QuantPolicy.from_dict(d["quantization"]), d["hardware"])
        for d in designs
    ])
    assert torch.equal(rebuilt, genome)


def test_decode_values_are_the_option_lists(reference_genome):
    g = reference_genome
    genome = torch.zeros(1, g.length, dtype=torch.long)
    genome[0, :9] = g.upper_bounds()[:9]
    arch, hw = g.decode(genome)
    assert float(hw.voltage[0]) == pytest.approx(0.85) and int(hw.glb_depth_words[0]) == 131072
    assert arch.kernels[0].tolist() == [3] * 21 and arch.bits[0].unique().tolist() == [4]
    assert arch.hidden[0].tolist() == [min(g.space.hidden_choices(b)) for b in range(21)]


def test_bad_genomes_and_values_name_the_gene(reference_genome):
    g = reference_genome
    genome = torch.zeros(2, g.length, dtype=torch.long)
    genome[1, 3] = 99
    with pytest.raises(GenomeError, match="rows"):
        g.check(genome)
    with pytest.raises(GenomeError, match=r"shape \[B, 141\]"):
        g.check(torch.zeros(2, 5, dtype=torch.long))
    arch = g.decode_arch(torch.zeros(1, g.length, dtype=torch.long))
    arch.kernels[0, 4] = 9
    with pytest.raises(GenomeError, match=r"kernel\[4\]=9"):
        g.encode_arch(arch)


def test_tiny_space_genome_without_hardware():
    g = JointGenome(apq_mbv2_tiny())
    assert g.num_hw == 0 and g.length == 132
    assert g.space_size() == pytest.approx(apq_mbv2_tiny().space_size(), rel=1e-12)


# ---------------------------------------------------------------------- operators


def test_sbx_and_mutation_stay_integral_within_bounds_and_skip_frozen_genes():
    gen = torch.Generator().manual_seed(0)
    lower = torch.tensor([0, 0, 2, 0, 0])
    upper = torch.tensor([4, 48, 2, 0, 7])  # gene 2 frozen at 2, gene 3 single-option
    a = torch.stack([torch.randint(0, int(u) + 1, (200,), generator=gen) for u in upper.clamp(min=lower)], 1)
    a[:, 2] = 2
    b = torch.stack([torch.randint(0, int(u) + 1, (200,), generator=gen) for u in upper.clamp(min=lower)], 1)
    b[:, 2] = 2
    children = simulated_binary_crossover(a, b, lower, upper, eta=3.0, prob=0.95, generator=gen)
    mutated = polynomial_mutation(children, lower, upper, eta=3.0, prob=0.95, generator=gen)
    for x in (children, mutated):
        assert x.dtype == torch.long and x.shape == (400, 5)
        assert ((x >= lower) & (x <= upper)).all()
        assert (x[:, 2] == 2).all() and (x[:, 3] == 0).all()
    # SBX spreads children around the parents: some genes change, the wide gene takes many values
    assert (children != torch.cat([a, b])).any()
    assert children[:, 1].unique().numel() > 20


def test_operator_probabilities_zero_copy_parents():
    gen = torch.Generator().manual_seed(1)
    lower, upper = torch.zeros(6, dtype=torch.long), torch.full((6,), 9)
    a = torch.randint(0, 10, (50, 6), generator=gen)
    b = torch.randint(0, 10, (50, 6), generator=gen)
    assert torch.equal(simulated_binary_crossover(a, b, lower, upper, eta=3, prob=0.0, generator=gen), torch.cat([a, b]))
    assert torch.equal(polynomial_mutation(a, lower, upper, eta=3, prob=0.0, generator=gen), a)
    # Pm = 1 with the default per-gene 1/n_var changes about one gene per individual
    gen.manual_seed(2)
    many = torch.randint(0, 10, (4000, 6), generator=gen)
    changed = (polynomial_mutation(many, lower, upper, eta=3, prob=1.0, generator=gen) != many).sum(1).float()
    assert 0.5 < float(changed.mean()) <= 1.0


def test_tournament_prefers_better_rank_and_dedup_helpers():
    gen = torch.Generator().manual_seed(0)
    rank = torch.arange(100)
    winners = binary_tournament(rank, 10_000, gen)
    # a binary tournament's winner rank has mean ~ N/3 (min of two uniform ranks)
    assert float(winners.float().mean()) == pytest.approx(33.0, abs=2.0)
    rows = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]])
    assert first_occurrence(rows).tolist() == [True, True, False, True, False]
    keys = [torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0.0, 5.0, 3.0, -1.0])]
    assert lexsort(keys).tolist() == [2, 1, 3, 0]


# ---------------------------------------------------------------------- objectives


def _metrics(**kw):
    base = dict(energy_j=torch.tensor([1e-4, 2e-4]), latency_s=torch.tensor([1e-3, 1e-3]),
                area_mm2=torch.tensor([100.0, 40.0]), accuracy=torch.tensor([0.9, 0.8]),
                weight_bits=torch.tensor([1e6, 2e6]))
    base.update(kw)
    return {k: v.double() for k, v in base.items()}


def test_reference_objectives_values():
    m = _metrics()
    ela_acc = objective_keys(ObjectiveConfig(name="ela_acc"), m)[:, 0]
    assert torch.allclose(ela_acc, m["energy_j"] * m["latency_s"] * m["area_mm2"] / m["accuracy"], rtol=1e-12)
    assert torch.allclose(objective_keys(ObjectiveConfig(name="el"), m)[:, 0], m["energy_j"] * m["latency_s"])
    assert torch.allclose(objective_keys(ObjectiveConfig(name="e_acc"), m)[:, 0], m["energy_j"] / m["accuracy"])
    # priority with unit weights == ela_acc; a heavy accuracy weight flips the order
    prio = objective_keys(ObjectiveConfig(name="priority"), m)[:, 0]
    assert torch.allclose(prio, ela_acc)
    heavy = objective_keys(ObjectiveConfig(name="priority", weights={"energy": 1, "latency": 1, "area": 1,
                                                                     "accuracy": 30}), m)[:, 0]
    assert (ela_acc[0] > ela_acc[1]) and (heavy[0] < heavy[1])  # 1.11e-5 vs 1.0e-5; accuracy^30 decides


def test_lexicographic_and_pareto_keys():
    m = _metrics(accuracy=torch.tensor([0.900, 0.898]))
    cfg = ObjectiveConfig(name="lexicographic", order=["accuracy", "ela"], tolerance=[0.005, 0.0])
    keys = objective_keys(cfg, m)
    assert keys.shape == (2, 2)
    assert lexsort([keys[:, 0], keys[:, 1]]).tolist() == [1, 0]  # accuracies tie within 0.5 points -> lower EDAP wins
    strict = objective_keys(ObjectiveConfig(name="lexicographic", order=["accuracy", "ela"], tolerance=[0.0, 0.0]), m)
    assert lexsort([strict[:, 0], strict[:, 1]]).tolist() == [0, 1]
    pareto = objective_keys(ObjectiveConfig(name="pareto"), m)
    assert ObjectiveConfig(name="pareto").senses == ["min", "max"]
    assert torch.allclose(pareto[:, 1], m["accuracy"])
    bad = objective_keys(ObjectiveConfig(name="ela_acc"), _metrics(energy_j=torch.tensor([math.nan, 1e-4])))
    assert math.isinf(float(bad[0, 0])) and math.isfinite(float(bad[1, 0]))


def test_objective_config_errors_name_the_field():
    with pytest.raises(ObjectiveError, match="objective.name='edp'.*allowed values"):
        ObjectiveConfig(name="edp")
    with pytest.raises(ObjectiveError, match="objective.order"):
        ObjectiveConfig(name="lexicographic", order=["speed"], tolerance=[0.0])
