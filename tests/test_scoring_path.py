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
