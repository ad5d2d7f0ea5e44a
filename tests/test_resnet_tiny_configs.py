"""The tiny OFA-ResNet50 pipeline's configs (scripts/make_resnet_artifacts.sh and the two
resnet_tiny search configs) parse and fit the ``ofa_resnet50_tiny`` space, without the artifacts
in cimnas/artifacts/fmnist_resnet/ (they are produced later by the script)."""

import dataclasses
from pathlib import Path

import pytest
import torch

from cimnas.space import get_space

ROOT = Path(__file__).resolve().parents[1]
SEARCH_CONFIGS = ["configs/search/resnet_tiny_sram_7nm.yaml", "configs/search/resnet_tiny_sram_32nm.yaml"]
ARTIFACTS = "cimnas/artifacts/fmnist_resnet"


@pytest.mark.parametrize("path", SEARCH_CONFIGS, ids=lambda p: Path(p).stem)
def test_resnet_tiny_search_config(path, monkeypatch):
    from cimnas.search.cli import parse_config
    from cimnas.search.run import build_setup, evaluate_fixed, expert_genome, resolve_network

    monkeypatch.chdir(ROOT)
    config = parse_config(["--config", path])
    assert config.mode == "compare" and config.space == "ofa_resnet50_tiny"
    assert config.compare_methods == ["joint", "hardware_only", "two_stage", "random", "fixed"]
    assert config.predictor == f"{ARTIFACTS}/predictor.pt" and config.value_stats == f"{ARTIFACTS}/value_stats.pt"
    assert config.output.dir == f"results/{Path(path).stem}"
    assert [e.name for e in config.expert_designs] == ["baseline_like", "reference_rank1_hw"]
    assert config.network == "largest" and all(e.network == "largest" for e in config.expert_designs)
    space = get_space(config.space)
    resolve_network(space, config.network)
    # everything but the two artifacts: a constant accuracy stands in for the predictor
    setup = build_setup(dataclasses.replace(config, predictor="constant:0.9", value_stats=None))
    rows = [expert_genome(setup, e) for e in config.expert_designs]
    result = evaluate_fixed(setup, "fixed", torch.cat(rows))
    assert result.best_metrics()["feasible"]


@pytest.mark.parametrize("path", ["configs/supernet/fmnist_resnet.yaml", "configs/predictor/fmnist_resnet.yaml"],
                         ids=["supernet", "predictor"])
def test_resnet_tiny_training_configs_parse(path, monkeypatch, capsys):
    from cimnas.cli import train_cli

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        train_cli(args=["fit", "--config", path, "--print_config"])
    assert info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert printed.count("space: ofa_resnet50_tiny") >= 1
    # issue 16: training writes into its run folder, never into the shipped artifacts
    assert "export_path: null" in printed and "default_root_dir: runs/" in printed and "{timestamp}" in printed


def test_resnet_tiny_supernet_phases_and_predictor_shape():
    import yaml

    from cimnas.models.predictor import PredictorModule
    from cimnas.models.supernet import OFASupernet, PhaseSpec

    cfg = yaml.safe_load((ROOT / "configs/supernet/fmnist_resnet.yaml").read_text())
    phases = [PhaseSpec(**p) for p in cfg["model"]["init_args"]["phases"]]
    assert [p.name for p in phases] == ["full", "depth", "width", "quant"]
    assert sum(p.epochs for p in phases) == cfg["trainer"]["max_epochs"]
    space = get_space("ofa_resnet50_tiny")
    assert all(p.kernels in (None, [3]) for p in phases)
    full = OFASupernet(space).phase_choices(phases[0])
    assert full["depths"] == [[max(space.stage_depth_choices(s))] for s in range(space.num_stages)]
    pred = yaml.safe_load((ROOT / "configs/predictor/fmnist_resnet.yaml").read_text())["model"]["init_args"]
    assert pred["transfer_from"] is None
    PredictorModule(**{k: v for k, v in pred.items() if k != "export_path"})


def test_resnet_tiny_measure_config_parses(capsys):
    from cimnas.models.predictor.measure import main

    with pytest.raises(SystemExit) as info:
        main(["--config", str(ROOT / "configs/predictor/measure_fmnist_resnet.yaml"), "--print_config"])
    assert info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert f"supernet: {ARTIFACTS}/supernet.pt" in printed
    assert "output: runs/measure_fmnist_resnet/predictor_records_quant.jsonl" in printed  # not into the artifacts
    assert "num_samples: 400" in printed and "quantized: true" in printed


# ---------------------------------------------------------------------- shipped artifacts

SHIPPED = {
    "fmnist": ("apq_mbv2_tiny", ["predictor_records_fp.jsonl", "predictor_records_quant.jsonl",
                                 "label_noise_half_a.jsonl", "label_noise_half_b.jsonl",
                                 "label_noise_quant_half_a.jsonl", "label_noise_quant_half_b.jsonl"]),
    "fmnist_resnet": ("ofa_resnet50_tiny", ["predictor_records_quant.jsonl"]),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_records_come_from_the_shipped_supernet(name):
    """Every shipped record was measured on the shipped supernet (no stale artifact mix)."""
    import json

    from cimnas.models.predictor.measure import file_sha256

    root = Path(__file__).resolve().parents[1] / "cimnas" / "artifacts" / name
    sha = file_sha256(root / "supernet.pt")[:16]
    for records in SHIPPED[name][1]:
        lines = (root / records).read_text().splitlines()
        assert len(lines) >= 100
        assert {json.loads(line)["supernet_sha256"] for line in lines} == {sha}, records


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_predictor_prefers_8_bit_over_4_bit(name):
    """The shipped quantization-aware predictors know what the supernet measures: the largest
    network at w8a8 is more accurate than at w4a4 (measured: 2.0 pt for the tiny ResNet)."""
    from cimnas.models.predictor.predictor import AccuracyPredictor
    from cimnas.space import Architecture, ArchBatch, QuantPolicy, get_space

    space_name = SHIPPED[name][0]
    root = Path(__file__).resolve().parents[1] / "cimnas" / "artifacts" / name
    predictor = AccuracyPredictor.from_checkpoint(root / "predictor.pt")
    space = get_space(space_name)
    assert predictor.space.name == space_name
    arch = Architecture.largest(space)
    batch = ArchBatch.from_designs(space, [arch, arch], [QuantPolicy.uniform(space, 8), QuantPolicy.uniform(space, 4)])
    acc8, acc4 = predictor.predict(batch).tolist()
    assert 0.5 < acc4 < acc8 < 1.0


@pytest.mark.parametrize("prefix, ceiling", [("label_noise", 0.658), ("label_noise_quant", 0.629)])
def test_shipped_label_noise_measurements_bound_the_predictor(prefix, ceiling):
    """The two shipped measurements of the same 160 designs (float / quantized) on disjoint
    halves of the held-out images give the documented label-noise ceiling (docs/predictor.md):
    Kendall-tau ceiling 0.66 float / 0.63 quantized, 95 % intervals below 0.8."""
    from cimnas.models.predictor.agreement import agreement

    root = Path(__file__).resolve().parents[1] / "cimnas" / "artifacts" / "fmnist"
    m = agreement(str(root / f"{prefix}_half_a.jsonl"), str(root / f"{prefix}_half_b.jsonl"))
    assert m["num_configs"] == 160 and m["disjoint_images"] and m["label_images"] == 5000
    assert m["ceiling_kendall"] == pytest.approx(ceiling, abs=0.002)
    assert m["ceiling_kendall_ci95"][1] < 0.8
