"""Issue 9 (beyond the paper): SRAM pricing, node scaling, node transfer, device variation."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from cimnas.hw import HardwareBatch, HardwareError, HardwareParams, HardwareSpace, Workload, evaluate
from cimnas.search.lowering import workload_from_arch
from cimnas.hw.components import dram
from cimnas.space import ArchBatch, Architecture, QuantPolicy, get_space
from cimnas.models.variation import (
    RetentionModel, VariationConfig, accuracy, fit_retention, noisy_accuracy, noisy_weights,
    perturb_levels, relative_weight_noise, slice_sigma_levels,
)
from cimnas.search.accuracy import NoiseAwareAccuracy
from cimnas.search.cli import parse_config
from cimnas.search.accuracy import ConstantAccuracy
from cimnas.search.constraints import ConstraintConfig
from cimnas.search.genome import JointGenome
from cimnas.search.transfer import node_setup, rescore, transfer

SUPERNET = Path("cimnas/artifacts/fmnist/supernet.pt")
REF = "configs/hw/reference.yaml"
SPACES = (REF, "configs/hw/sram_7nm.yaml", "configs/hw/sram_lpddr4_32nm.yaml")


def _workload() -> Workload:
    return Workload.from_layers([
        dict(kind="conv", C=3, M=16, R=3, S=3, P=14, Q=14, stride=2),
        dict(kind="depthwise", C=1, M=1, R=3, S=3, P=14, Q=14, G=16),
        dict(kind="pointwise", C=16, M=24, P=14, Q=14, input_bits=4, weight_bits=6),
        dict(kind="linear", C=24, M=10),
    ])


def _designs(path: str, n: int, seed: int) -> HardwareBatch:
    space = HardwareSpace.from_yaml(path)
    return space.decode(space.random_indices(n, torch.Generator().manual_seed(seed)))


# ---------------------------------------------------------------------- SRAM and DRAM


def test_sram_designs_never_pay_rram_cell_read_energy():
    wl = _workload()
    for path in SPACES[1:]:
        res = evaluate(wl, _designs(path, 128, 1))
        assert torch.equal(res.energy_by_component_j["cim_unit"], torch.zeros(128, dtype=torch.float64))
        assert bool((res.energy_j[res.feasible] > 0).all())
    rram = evaluate(wl, _designs(REF, 128, 1))
    assert bool((rram.energy_by_component_j["cim_unit"][rram.feasible] > 0).all())


def test_sram_stores_one_bit_per_cell():
    with pytest.raises(HardwareError, match="bits_per_cell"):
        HardwareParams(cell="sram_example", bits_per_cell=4)
    with pytest.raises(HardwareError, match="bits_per_cell"):
        HardwareSpace(genes={"rows": [64, 128], "bits_per_cell": [1, 2]}, fixed={"cell": "sram_example"})
    one = HardwareBatch.from_params([HardwareParams(cell="sram_example", bits_per_cell=1, technology_nm=7)])
    forced = dataclasses.replace(one, bits_per_cell=torch.tensor([8]))  # bypasses validation
    a, b = evaluate(_workload(), one), evaluate(_workload(), forced)
    assert torch.equal(a.energy_j, b.energy_j) and torch.equal(a.required_cells, b.required_cells)


def test_smaller_node_never_costs_more_energy_or_area():
    space = get_space("apq_mbv2_tiny")
    g = torch.Generator().manual_seed(5)
    archs = [Architecture.random(space, g) for _ in range(4)]
    pols = [QuantPolicy.random(space, g) for _ in range(4)]
    for path in SPACES:
        hw = _designs(path, 256, 2)
        wl = workload_from_arch(space, ArchBatch.from_designs(space, archs * 64, pols * 64))
        res = {}
        for node in (7.0, 22.0, 32.0):
            res[node] = evaluate(wl, dataclasses.replace(hw, technology_nm=torch.full_like(hw.technology_nm, node)))
        ok = torch.isfinite(res[32.0].energy_j)
        assert ok.any()
        for small, big in ((7.0, 32.0), (22.0, 32.0)):
            assert bool((res[small].energy_j[ok] <= res[big].energy_j[ok]).all()), (path, small)
            assert bool((res[small].area_mm2 <= res[big].area_mm2).all()), (path, small)


def test_weights_that_do_not_fit_stream_from_lpddr4():
    wl = _workload()
    small = HardwareParams(cell="sram_example", bits_per_cell=1, rows=32, cols=32, router_groups=1,
                           tiles_per_group=1, macros_per_tile=4, technology_nm=7, adc_bits=5)
    big = dataclasses.replace(small, router_groups=8, tiles_per_group=8, macros_per_tile=8)
    designs = [small, dataclasses.replace(small, weight_memory="lpddr4"), dataclasses.replace(big, weight_memory="lpddr4")]
    res = evaluate(wl, HardwareBatch.from_params(designs))
    assert res.reason_names == ["layer-exceeds-chip", "ok", "ok"]
    assert bool(res.required_cells[1] > res.available_cells[1]) and bool(res.required_cells[2] <= res.available_cells[2])
    weight_bits = float((wl.C * wl.M * wl.R * wl.S * wl.G * wl.weight_bits * wl.mask).sum())
    assert res.energy_by_component_j["main_memory"][1].item() == pytest.approx(weight_bits * dram.LPDDR4_ENERGY_PJ_PER_BIT * 1e-12)
    assert res.energy_by_component_j["main_memory"][2].item() == 0.0  # resident: nothing per inference
    fetch_s = weight_bits / dram.LPDDR4_BANDWIDTH_BITS_PER_S
    assert res.latency_s[1].item() >= fetch_s + res.cycles[1].item() * 1e-9 * (1 - 1e-9)
    assert bool(res.cycles[1] > res.cycles[2])  # temporal passes over what does not fit


# ---------------------------------------------------------------------- node transfer


def _config(hardware: str, **kw):
    config = parse_config(["--space", "apq_mbv2_tiny", "--hardware", hardware, "--value_stats", "null",
                           "--ga.popsize", "12", "--ga.generations", "3", "--output.progress", "false",
                           "--output.plots", "false", "--wandb.mode", "disabled"])
    return dataclasses.replace(config, **kw)


@pytest.mark.parametrize("hardware,capacity", [(REF, True), ("configs/hw/sram_lpddr4_32nm.yaml", False),
                                               ("configs/hw/sram_7nm.yaml", True)])
def test_transfer_rescoring_equals_direct_evaluation_at_node_b(hardware, capacity):
    config = _config(hardware, constraints=ConstraintConfig(area_budget_mm2=800.0, capacity=capacity))
    acc = ConstantAccuracy(0.8)
    source = node_setup(config, None, acc)
    values = source.genome.random(24, torch.Generator().manual_seed(3))
    for node in (7.0, 22.0):
        scored = rescore(node_setup(config, node, acc), values)
        # direct: the same YAML with technology_nm = node, decoded and evaluated by the cost model
        data = HardwareSpace.from_yaml(hardware).to_dict()
        if "technology_nm" in data["genes"]:
            data["genes"]["technology_nm"] = [node]
            values_b = values.clone()
            values_b[:, list(data["genes"]).index("technology_nm")] = 0
        else:
            data["fixed"]["technology_nm"] = node
            values_b = values
        genome_b = JointGenome(get_space("apq_mbv2_tiny"), HardwareSpace.from_dict(data))
        arch, hw = genome_b.decode(values_b)
        direct = evaluate(workload_from_arch(genome_b.space, arch, value_stats="typical"), hw)
        assert bool((hw.technology_nm == node).all())
        order = [int((values_b == row).all(1).nonzero()[0]) for row in scored.values]
        p = scored.problem
        for column, expected in (("energy_j", direct.energy_j), ("latency_s", direct.latency_s),
                                 ("area_mm2", direct.area_mm2)):
            got = scored.evals[:, p.column(column)]
            assert torch.allclose(got, expected[order].double(), rtol=1e-9, atol=0), column
        ok = scored.evals[:, p.cv_column] <= 0
        ela = (direct.energy_j * direct.latency_s * direct.area_mm2)[order] / 0.8
        assert torch.allclose(scored.evals[ok, 0], ela[ok].double(), rtol=1e-6)


def test_warm_start_never_loses_the_best_rescored_design(tmp_path):
    config = _config(REF)  # the warm search's checkpoint goes to a temporary folder, not results/default
    config = dataclasses.replace(config, output=dataclasses.replace(config.output, dir=str(tmp_path / "out")))
    acc = ConstantAccuracy(0.8)
    values = node_setup(config, None, acc).genome.random(30, torch.Generator().manual_seed(4))
    res = transfer(config, values, 7.0, warm_generations=3, accuracy=acc)
    assert res.warm is not None and res.warm.n_evaluations == 3 * config.ga.popsize
    assert res.warm.best_objective <= res.rescored.best_objective
    assert all(b <= a for a, b in zip(res.warm.history, res.warm.history[1:]))  # elitist


# ---------------------------------------------------------------------- device variation


def test_cell_noise_model_levels_and_multilevel_is_noisier():
    levels = torch.arange(-127, 128, dtype=torch.float32).repeat(400)
    assert torch.equal(perturb_levels(levels, 8, 4, VariationConfig(0.0, 0.0)), levels)
    config = VariationConfig()
    noise = [relative_weight_noise(8, c, config) for c in (1, 2, 4, 8)]
    assert noise == sorted(noise) and noise[0] > 0
    for c in (1, 3, 4, 6, 8):  # Monte-Carlo RMS error matches the closed form (uniform levels)
        err = perturb_levels(levels, 8, c, config, torch.Generator().manual_seed(c)) - levels
        assert err.pow(2).mean().sqrt().item() / 127 == pytest.approx(relative_weight_noise(8, c, config), rel=0.05)
    # state-independent term: per-cell σ in level units grows as 2^c - 1 (levels get closer); on the
    # weight the MSB slice dominates, so 8-bit cells are still ~1.7x noisier than 1-bit slicing
    abs_only = VariationConfig(sigma_rel=0.0, sigma_abs=0.01)
    zero = torch.zeros(1, dtype=torch.float64)
    assert slice_sigma_levels(zero, 8, abs_only).item() == pytest.approx(255 * slice_sigma_levels(zero, 1, abs_only).item())
    assert relative_weight_noise(8, 8, abs_only) > 1.5 * relative_weight_noise(8, 1, abs_only)


@pytest.fixture(scope="module")
def trained_subnet():
    from cimnas.models.predictor.measure import sample_design
    from cimnas.models.supernet import load_supernet
    from cimnas.experiments.variation import load_fmnist_batches, subnet

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs on a shared CPU: more threads only add contention
    calib, batches = load_fmnist_batches(eval_images=500, calibration_images=250)
    net = load_supernet(SUPERNET).eval()
    arch, policy = sample_design(net.space, 3, 0, quantized=True)
    yield subnet(net, arch, policy, calib), batches
    torch.set_num_threads(threads)


def test_zero_variation_equals_noise_free(trained_subnet):
    net, batches = trained_subnet
    clean = accuracy(net, batches)
    x = batches[0][0]
    with torch.no_grad():
        logits = net(x)
        with noisy_weights(net, 8, VariationConfig(sigma_rel=0.0, sigma_abs=0.0)):
            zero_logits = net(x)
    assert torch.equal(logits, zero_logits)
    for bpc in (1, 4, 8):
        mean, std = noisy_accuracy(net, batches, bpc, VariationConfig().scaled(0.0), samples=2)
        assert mean == clean and std == 0.0
    assert accuracy(net, batches) == clean  # weights restored after the noisy block
    assert clean > 0.5  # a trained subnet (10 classes)


def test_accuracy_falls_monotonically_with_sigma(trained_subnet):
    net, batches = trained_subnet
    means = [noisy_accuracy(net, batches, 8, VariationConfig().scaled(s), samples=2, seed=1)[0]
             for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(b < a for a, b in zip(means, means[1:])), means
    assert means[-1] < 0.3


def test_noise_aware_accuracy_source_uses_the_hardware():
    space = get_space("apq_mbv2_tiny")
    model = fit_retention([0.0, 0.05, 0.1, 0.2], [1.0, 0.9, 0.5, 0.2], chance=0.1, variation=VariationConfig())
    assert model.retention(torch.tensor([0.0])).item() == pytest.approx(1.0)
    assert RetentionModel.from_dict(model.to_dict()) == model
    source = NoiseAwareAccuracy(ConstantAccuracy(0.8), model, space=space)
    genome = JointGenome(space, HardwareSpace.from_yaml(REF))
    from cimnas.search.evaluator import DesignEvaluator

    values = genome.random(8, torch.Generator().manual_seed(1))
    bpc_gene = [g.name for g in genome.hw_genes].index("bits_per_cell")
    v1, v8 = values.clone(), values.clone()
    v1[:, bpc_gene], v8[:, bpc_gene] = 0, 7  # 1 and 8 bits per cell
    ev = DesignEvaluator(genome, source, ConstraintConfig())
    a1, a8 = ev.evaluate(v1).metrics["accuracy"], ev.evaluate(v8).metrics["accuracy"]
    assert bool((a8 < a1).all()) and bool((a1 <= 0.8).all())
    sram = JointGenome(space, HardwareSpace.from_yaml("configs/hw/sram_7nm.yaml"))
    a_sram = DesignEvaluator(sram, source, ConstraintConfig()).evaluate(sram.random(8, torch.Generator().manual_seed(1)))
    assert torch.allclose(a_sram.metrics["accuracy"], torch.full((8,), 0.8, dtype=torch.float64))
    assert math.isclose(model.chance, 0.1)


def test_variation_measure_and_fit_jobs_run_end_to_end(tmp_path):
    """The measurement job (one design, two cell types, 100 images) writes a resumable record
    whose noisy accuracy never beats the clean one by more than noise, and the fit job turns the
    records into a retention model that a search can load."""
    from cimnas.experiments.variation import fit, measure

    out = tmp_path / "records.jsonl"
    recs = measure(str(SUPERNET), str(out), num_designs=1, bits_per_cell=(1, 8), samples=1, eval_images=100,
                   calibration_images=100)
    assert len(recs) == 1 and out.is_file()
    rec = recs[0]
    assert 0.0 < rec["clean"] <= 1.0 and {n["bits_per_cell"] for n in rec["noisy"]} == {1, 8}
    assert measure(str(SUPERNET), str(out), num_designs=1, bits_per_cell=(1, 8), samples=1, eval_images=100,
                   calibration_images=100) == []  # resumed: nothing left to measure
    model = fit(str(out), str(tmp_path / "model.json"))
    assert RetentionModel.load(tmp_path / "model.json").scale == pytest.approx(model.scale)


def test_variation_command_line_fits_and_refuses_unknown_commands(tmp_path, capsys):
    """``python -m cimnas.experiments.variation fit`` (jsonargparse sub-commands, like every job)
    writes the model; an unknown command is one error line with exit status 2."""
    from cimnas.experiments.variation import main, measure

    records = tmp_path / "r.jsonl"
    measure(str(SUPERNET), str(records), num_designs=1, bits_per_cell=(1, 8), samples=1, eval_images=100,
            calibration_images=100)
    assert main(["fit", "--records", str(records), "--output", str(tmp_path / "m.json")]) == 0
    assert RetentionModel.load(tmp_path / "m.json").chance == pytest.approx(0.1)
    with pytest.raises(SystemExit) as exc:
        main(["bogus"])
    assert exc.value.code == 2 and "measure" in capsys.readouterr().err
