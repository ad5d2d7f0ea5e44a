"""One scoring path: `python -m cimnas.experiments.hw_evaluate best.json` reproduces the metrics
the search wrote for that design (issue 16), with the value statistics the file records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimnas.experiments.hw_evaluate import main as hw_evaluate_main
from cimnas.search.cli import parse_config
from cimnas.search.run import run_search

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search")
    config = parse_config(["--config", str(REPO / "configs/search/default.yaml"), f"--output.dir={out}",
                           f"--predictor={REPO / 'cimnas/artifacts/fmnist/predictor.pt'}",
                           f"--value_stats={REPO / 'cimnas/artifacts/fmnist/value_stats.pt'}",
                           f"--hardware={REPO / 'configs/hw/reference.yaml'}", "--output.plots=false",
                           "--output.progress=false", "--wandb.mode=disabled", "--ga.popsize=24",
                           "--ga.generations=4"])
    run_search(config)
    return out


def _scored(capsys, *argv: str) -> dict:
    assert hw_evaluate_main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[0])


def test_hw_evaluate_on_best_json_reproduces_the_search(searched, capsys):
    best = json.loads((searched / "best.json").read_text())
    assert best["source"]["value_stats"].endswith("value_stats.pt")
    rec = _scored(capsys, str(searched / "best.json"))
    assert rec["value_stats"] == best["source"]["value_stats"]
    for ours, theirs in (("energy_j", "energy_j"), ("latency_s", "latency_s"), ("area_mm2", "area_mm2"),
                         ("edap", "edap_j_s_mm2")):
        assert rec[ours] == pytest.approx(best["metrics"][theirs], rel=1e-6), ours


def test_typical_statistics_are_an_explicit_choice_and_differ(searched, capsys):
    best = json.loads((searched / "best.json").read_text())
    rec = _scored(capsys, str(searched / "best.json"), "--value-stats", "typical")
    assert rec["value_stats"] == "typical"
    assert rec["energy_j"] != pytest.approx(best["metrics"]["energy_j"], rel=1e-3)


def test_a_design_file_without_a_record_gets_the_search_default(searched, tmp_path, capsys):
    best = json.loads((searched / "best.json").read_text())
    del best["source"]["value_stats"]
    old = tmp_path / "old_best.json"
    old.write_text(json.dumps(best))
    rec = _scored(capsys, str(old))
    assert rec["value_stats"].endswith("cimnas/artifacts/fmnist/value_stats.pt")
    assert rec["energy_j"] == pytest.approx(best["metrics"]["energy_j"], rel=1e-6)


def test_results_folder_resumes_its_own_configuration_and_refuses_another(searched, capsys):
    """A second search into the same folder: same configuration -> resumes (same results, no new
    generations); another configuration -> refused with the field to set, nothing changed;
    --output.overwrite true -> replaced."""
    from cimnas.search.cli import main

    common = ["--config", str(REPO / "configs/search/default.yaml"), f"--output.dir={searched}",
              f"--predictor={REPO / 'cimnas/artifacts/fmnist/predictor.pt'}",
              f"--value_stats={REPO / 'cimnas/artifacts/fmnist/value_stats.pt'}",
              f"--hardware={REPO / 'configs/hw/reference.yaml'}", "--output.plots=false",
              "--output.progress=false", "--wandb.mode=disabled", "--ga.popsize=24"]
    before = (searched / "best.json").read_bytes()
    assert main(common + ["--ga.generations=4"]) == 0  # same configuration: resumed, nothing to do
    assert (searched / "best.json").read_bytes() == before
    capsys.readouterr()
    assert main(common + ["--ga.generations=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output.overwrite" in err[0] and str(searched) in err[0]
    assert (searched / "best.json").read_bytes() == before
    assert main(common + ["--ga.generations=5", "--output.overwrite=true"]) == 0
    summary = json.loads((searched / "summary.json").read_text())
    assert json.loads((searched / "run.json").read_text())["config"]["ga"]["generations"] == 5
    assert summary["n_evaluations"] > 0


def test_summary_reports_diversity_and_top_k_falls_back_to_the_archive(tmp_path):
    """A results folder whose population holds one network: top_designs still returns k
    distinct networks from the Pareto archive, and warns when fewer exist."""
    import csv

    from cimnas.models.design import top_designs

    config = parse_config(["--config", str(REPO / "configs/search/default.yaml"), f"--output.dir={tmp_path}",
                           f"--predictor={REPO / 'cimnas/artifacts/fmnist/predictor.pt'}", "--value_stats=null",
                           f"--hardware={REPO / 'configs/hw/reference.yaml'}", "--output.plots=false",
                           "--output.progress=false", "--wandb.mode=disabled", "--ga.popsize=24",
                           "--ga.generations=6", "--constraints.min_accuracy_quantile=0.5"])
    summary = run_search(config)
    assert summary["n_feasible"] > 0
    div = summary["final_population"]
    assert div["size"] == 24 and 1 <= div["distinct_networks"] <= 24 and 1 <= div["distinct_hardware"] <= 24
    # collapse the population file to its first row, repeated
    rows = list(csv.DictReader(open(tmp_path / "population.csv")))
    with open(tmp_path / "population.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([rows[0]] * len(rows))
    from cimnas.models.design import load_designs

    archive = {d.network_key() for d in load_designs(tmp_path / "pareto.json")
               if d.metrics.get("feasible", True) in (True, 1.0)}
    assert len(archive) >= 2  # the archive holds several networks (else the check below is empty)
    picked = top_designs(tmp_path, 2)
    assert len(picked) == 2 and len({d.network_key() for d in picked}) == 2
    assert picked[0].name.startswith("rank")  # the population's best first, then the archive
    with pytest.warns(UserWarning, match="distinct networks"):
        top_designs(tmp_path, 10_000)
