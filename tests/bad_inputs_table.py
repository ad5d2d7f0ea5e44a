"""The bad-input table of issue 16, shared by ``tests/test_bad_inputs.py`` (in-process) and
``scripts/bad_inputs_survey.py`` (subprocesses, counts outcomes on any checkout).

Each case: an id, an entry point, its arguments (``{x}`` = a fixture file of :func:`make_fixtures`,
``{tmp}`` = the scratch folder) and the substrings the one-line error must contain (the file
and the field / tensor named).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ART = ROOT / "cimnas" / "artifacts"

#: entry point -> (module run with ``python -m`` / script, in-process callable path)
ENTRIES = {
    "search": ("search.py", "cimnas.search.cli:main"),
    "train": ("train.py", "cimnas.cli:main"),
    "supernet_eval": ("-m cimnas.models.supernet_eval", "cimnas.models.supernet_eval:main"),
    "measure": ("-m cimnas.models.predictor.measure", "cimnas.models.predictor.measure:main"),
    "value_stats": ("-m cimnas.search.value_stats", "cimnas.search.value_stats:main"),
    "hw_evaluate": ("-m cimnas.experiments.hw_evaluate", "cimnas.experiments.hw_evaluate:main"),
    "finetune_batch": ("-m cimnas.finetune_batch", "cimnas.finetune_batch:main"),
    "promote": ("-m cimnas.promote", "cimnas.promote:main"),
}

PRED = ["fit", "--config", "configs/predictor/fmnist_quant.yaml", "--trainer.max_epochs=1"]
SUPERNET = ["fit", "--config", "configs/supernet/fmnist_smoke.yaml", "--trainer.max_steps=1"]
FINETUNE = ["fit", "--config", "configs/finetune.yaml", "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu"]
SEARCH = ["--ga.popsize", "8", "--ga.generations", "2", "--output.dir", "{tmp}/out", "--wandb.mode", "disabled"]
MEASURE = ["--config", "configs/predictor/measure_fmnist.yaml", "--num_samples", "1", "--output", "{tmp}/out/r.jsonl"]

CASES: list[tuple[str, str, list[str], list[str]]] = [
    # --- search.py
    ("search_predictor_empty", "search", [*SEARCH, "--predictor", "{empty_pt}"], ["empty.pt", "empty"]),
    ("search_predictor_text", "search", [*SEARCH, "--predictor", "{text_pt}"], ["text.pt", "text"]),
    ("search_predictor_corrupt", "search", [*SEARCH, "--predictor", "{corrupt_pt}"], ["corrupt.pt"]),
    ("search_predictor_list", "search", [*SEARCH, "--predictor", "{list_pt}"], ["list.pt", "dict"]),
    ("search_predictor_pickle", "search", [*SEARCH, "--predictor", "{pickle_pt}"], ["pickle.pt", "weights_only"]),
    ("search_predictor_other_space", "search", [*SEARCH, "--predictor", str(ART / "fmnist_resnet/predictor.pt")],
     ["predictor.pt", "ofa_resnet50_tiny"]),
    ("search_value_stats_shape", "search", [*SEARCH, "--value_stats", "{vs_shape_pt}"], ["vs_shape.pt", "input_hist", "[3, 31]"]),
    ("search_value_stats_nan", "search", [*SEARCH, "--value_stats", "{vs_nan_pt}"], ["vs_nan.pt", "non-finite"]),
    ("search_value_stats_space", "search", [*SEARCH, "--value_stats", "{vs_space_pt}"], ["vs_space.pt", "space"]),
    ("search_value_stats_missing_key", "search", [*SEARCH, "--value_stats", "{vs_nokey_pt}"], ["vs_nokey.pt", "weight_hist"]),
    ("search_value_stats_unnormalised", "search", [*SEARCH, "--value_stats", "{vs_unnorm_pt}"], ["vs_unnorm.pt", "sum"]),
    ("search_value_stats_text", "search", [*SEARCH, "--value_stats", "{text_pt}"], ["text.pt"]),
    ("search_hw_missing_rows", "search", [*SEARCH, "--hardware", "{hw_norows_yaml}"], ["hw_norows.yaml", "rows"]),
    ("search_hw_syntax", "search", [*SEARCH, "--hardware", "{hw_syntax_yaml}"], ["hw_syntax.yaml", "line"]),
    ("search_hw_unknown_gene", "search", [*SEARCH, "--hardware", "{hw_unknown_yaml}"], ["hw_unknown.yaml", "rowz"]),
    ("search_hw_bad_value", "search", [*SEARCH, "--hardware", "{hw_badvalue_yaml}"], ["hw_badvalue.yaml", "rows"]),
    ("search_hw_list", "search", [*SEARCH, "--hardware", "{hw_list_yaml}"], ["hw_list.yaml", "mapping"]),
    ("search_hw_missing_file", "search", [*SEARCH, "--hardware", "{tmp}/nope.yaml"], ["nope.yaml"]),
    ("search_device_cuda", "search", [*SEARCH, "--device", "cuda"], ["device", "cuda"]),
    ("search_config_syntax", "search", ["--config", "{cfg_syntax_yaml}", *SEARCH], ["cfg_syntax.yaml"]),
    ("search_abbreviated_key", "search", [*SEARCH, "--ga.popsiz", "9"], ["--ga.popsiz"]),
    ("search_bad_value", "search", [*SEARCH[2:], "--ga.popsize", "-3"], ["popsize"]),
    # --- train.py: predictor / supernet / fine-tune fit configs
    ("train_abbreviated_key", "train", [*PRED, "--trainer.max_epoch", "1"], ["--trainer.max_epoch"]),
    ("train_unknown_model_key", "train", [*PRED, "--model.init_args.bogus", "1"], ["bogus"]),
    ("train_records_missing", "train", [*PRED, "--data.init_args.records", "[{tmp}/nope.jsonl]"], ["nope.jsonl"]),
    ("train_records_garbage_line", "train", [*PRED, "--data.init_args.records", "[{rec_garbage_jsonl}]"],
     ["rec_garbage.jsonl", "line 2"]),
    ("train_records_no_accuracy", "train", [*PRED, "--data.init_args.records", "[{rec_noacc_jsonl}]"],
     ["rec_noacc.jsonl", "accuracy"]),
    ("train_records_nan_accuracy", "train", [*PRED, "--data.init_args.records", "[{rec_nan_jsonl}]"],
     ["rec_nan.jsonl", "accuracy"]),
    ("train_records_other_space", "train", [*PRED, "--data.init_args.records", "[{rec_space_jsonl}]"],
     ["rec_space.jsonl", "space"]),
    ("train_records_fp_for_quant", "train", [*PRED, "--data.init_args.records", "[{rec_fp_jsonl}]"],
     ["rec_fp.jsonl", "policy"]),
    ("train_transfer_from_text", "train", [*PRED, "--model.init_args.transfer_from", "{text_pt}"], ["text.pt"]),
    ("train_transfer_from_other_space", "train",
     [*PRED, "--model.init_args.transfer_from", str(ART / "fmnist_resnet/predictor.pt")], ["predictor.pt", "ofa_resnet50_tiny"]),
    ("train_export_into_artifacts", "train", [*PRED, "--model.init_args.export_path", str(ART / "fmnist/predictor.pt")],
     ["export_path", "shipped artifacts"]),
    ("train_supernet_init_from_empty", "train", [*SUPERNET, "--model.init_args.init_from", "{empty_pt}"], ["empty.pt"]),
    ("train_supernet_ckpt_other_config", "train", [*SUPERNET, "--ckpt_path", "{ckpt_other}"],
     ["other.ckpt", "ofa_resnet50_tiny"]),
    ("train_supernet_ckpt_text", "train", [*SUPERNET, "--ckpt_path", "{text_ckpt}"], ["text.ckpt"]),
    ("train_finetune_design_missing", "train", [*FINETUNE, "--model.init_args.design", "{tmp}/nope.json"], ["nope.json"]),
    ("train_finetune_design_bad_json", "train", [*FINETUNE, "--model.init_args.design", "{design_badjson_json}"],
     ["design_badjson.json", "JSON"]),
    ("train_finetune_design_other_space", "train", [*FINETUNE, "--model.init_args.design", "{design_space_json}"],
     ["design_space.json", "space"]),
    ("train_finetune_design_bad_bits", "train", [*FINETUNE, "--model.init_args.design", "{design_bits_json}"],
     ["design_bits.json", "quantization"]),
    ("train_finetune_supernet_text", "train",
     [*FINETUNE, "--model.init_args.design", "{design_ok_json}", "--model.init_args.supernet", "{text_pt}"], ["text.pt"]),
    ("train_finetune_supernet_wrong_tensor", "train",
     [*FINETUNE, "--model.init_args.design", "{design_ok_json}", "--model.init_args.supernet", "{supernet_shape_pt}"],
     ["supernet_shape.pt", "tensor"]),
    # --- supernet_eval
    ("supernet_eval_missing", "supernet_eval", ["--supernet", "{tmp}/nope.pt"], ["nope.pt"]),
    ("supernet_eval_empty", "supernet_eval", ["--supernet", "{empty_pt}"], ["empty.pt", "empty"]),
    ("supernet_eval_text", "supernet_eval", ["--supernet", "{text_pt}"], ["text.pt", "text"]),
    ("supernet_eval_not_supernet", "supernet_eval", ["--supernet", "{notsupernet_pt}"], ["notsupernet.pt", "format"]),
    ("supernet_eval_out_into_artifacts", "supernet_eval",
     ["--supernet", str(ART / "fmnist/supernet.pt"), "--out", str(ART / "fmnist/x.json")], ["out", "shipped artifacts"]),
    # --- measure
    ("measure_supernet_corrupt", "measure", [*MEASURE, "--supernet", "{corrupt_pt}"], ["corrupt.pt"]),
    ("measure_supernet_list", "measure", [*MEASURE, "--supernet", "{list_pt}"], ["list.pt", "dict"]),
    ("measure_output_into_artifacts", "measure", [*MEASURE, "--output", str(ART / "fmnist/r.jsonl")],
     ["output", "shipped artifacts"]),
    ("measure_abbreviated_key", "measure", [*MEASURE, "--num_sample", "2"], ["--num_sample"]),
    # --- value_stats
    ("value_stats_supernet_text", "value_stats", ["--supernet", "{text_pt}", "--out", "{tmp}/out/v.pt"], ["text.pt"]),
    ("value_stats_supernet_wrong_tensor", "value_stats", ["--supernet", "{supernet_shape_pt}", "--out", "{tmp}/out/v.pt"],
     ["supernet_shape.pt", "tensor"]),
    ("value_stats_out_into_artifacts", "value_stats", ["--out", str(ART / "fmnist/value_stats.pt")], ["--out", "shipped"]),
    ("value_stats_zero_images", "value_stats", ["--images", "0", "--out", "{tmp}/out/v.pt"], ["--images"]),
    # --- hw_evaluate
    ("hw_evaluate_missing", "hw_evaluate", ["{tmp}/nope.json"], ["nope.json"]),
    ("hw_evaluate_bad_json", "hw_evaluate", ["{design_badjson_json}"], ["design_badjson.json", "JSON"]),
    ("hw_evaluate_hardware_missing_rows", "hw_evaluate", ["{design_norows_json}"], ["design_norows.json", "rows"]),
    ("hw_evaluate_bad_key", "hw_evaluate", ["--key", "A_1_2"], ["expected 37"]),
    # --- finetune_batch
    ("finetune_batch_results_missing", "finetune_batch", ["--results", "{tmp}/nope", "--output", "{tmp}/out/ft"], ["nope"]),
    ("finetune_batch_supernet_text", "finetune_batch",
     ["--results", "{design_ok_json}", "--supernet", "{text_pt}", "--output", "{tmp}/out/ft"], ["text.pt"]),
    ("finetune_batch_design_other_space", "finetune_batch",
     ["--results", "{design_space_json}", "--output", "{tmp}/out/ft"], ["design_space.json", "space"]),
    # --- promote
    ("promote_from_missing", "promote", ["--kind", "predictor", "--from", "{tmp}/nope.pt", "--artifacts", "{tmp}/art"],
     ["nope.pt"]),
    ("promote_from_text", "promote", ["--kind", "predictor", "--from", "{text_pt}", "--artifacts", "{tmp}/art"], ["text.pt"]),
    ("promote_other_space", "promote",
     ["--kind", "predictor", "--from", str(ART / "fmnist_resnet/predictor.pt"), "--space", "apq_mbv2_tiny",
      "--artifacts", "{tmp}/art"], ["ofa_resnet50_tiny"]),
    ("promote_value_stats_shape", "promote", ["--kind", "value_stats", "--from", "{vs_shape_pt}", "--artifacts", "{tmp}/art"],
     ["vs_shape.pt", "[3, 31]"]),
]


def make_fixtures(tmp: Path) -> dict[str, str]:
    """Write the bad (and a few good) input files into ``tmp``; returns ``{name: path}``."""
    import datetime
    import math

    import torch
    import yaml

    from cimnas.space import Architecture, QuantPolicy, get_space

    f: dict[str, str] = {"tmp": str(tmp)}

    def put(name: str, writer) -> None:
        path = tmp / name
        writer(path)
        f[name.replace(".", "_")] = str(path)

    tiny, resnet = get_space("apq_mbv2_tiny"), get_space("ofa_resnet50_tiny")
    real = ART / "fmnist" / "value_stats.pt"
    put("empty.pt", lambda p: p.write_bytes(b""))
    put("text.pt", lambda p: p.write_text("hello, I am not a checkpoint\n"))
    put("text.ckpt", lambda p: p.write_text("not a checkpoint either\n"))
    put("corrupt.pt", lambda p: p.write_bytes(real.read_bytes()[:300]))
    put("list.pt", lambda p: torch.save([1, 2, 3], p))
    put("pickle.pt", lambda p: torch.save({"when": datetime.date(2020, 1, 1)}, p))
    put("notsupernet.pt", lambda p: torch.save({"weights": torch.zeros(2)}, p))
    stats = torch.load(real, weights_only=True)
    put("vs_shape.pt", lambda p: torch.save({**stats, "input_hist": torch.full((3, 31), 1 / 31),
                                              "weight_hist": torch.full((3, 31), 1 / 31)}, p))
    nan = stats["input_hist"].clone()
    nan[0, 0] = math.nan
    put("vs_nan.pt", lambda p: torch.save({**stats, "input_hist": nan}, p))
    put("vs_space.pt", lambda p: torch.save({**stats, "space": "ofa_resnet50_tiny"}, p))
    put("vs_nokey.pt", lambda p: torch.save({k: v for k, v in stats.items() if k != "weight_hist"}, p))
    put("vs_unnorm.pt", lambda p: torch.save({**stats, "input_hist": stats["input_hist"] * 2}, p))
    hw = yaml.safe_load((ROOT / "configs/hw/reference.yaml").read_text())
    put("hw_norows.yaml", lambda p: p.write_text(yaml.safe_dump({**hw, "genes": {k: v for k, v in hw["genes"].items()
                                                                                 if k != "rows"}})))
    put("hw_syntax.yaml", lambda p: p.write_text("name: x\ngenes:\n  rows: [32, 64\n  cols: [1]\n"))
    put("hw_unknown.yaml", lambda p: p.write_text(yaml.safe_dump({**hw, "genes": {**hw["genes"], "rowz": [1]}})))
    put("hw_badvalue.yaml", lambda p: p.write_text(yaml.safe_dump({**hw, "genes": {**hw["genes"], "rows": [0, 64]}})))
    put("hw_list.yaml", lambda p: p.write_text("- 1\n- 2\n"))
    put("cfg_syntax.yaml", lambda p: p.write_text("ga:\n  popsize: [1, 2\n"))
    recs = [json.loads(line) for line in (ART / "fmnist/predictor_records_quant.jsonl").read_text().splitlines()[:20]]

    def jsonl(rows):
        return "".join(json.dumps(r) + "\n" for r in rows)

    put("rec_garbage.jsonl", lambda p: p.write_text(jsonl(recs[:1]) + "garbage{\n" + jsonl(recs[1:])))
    put("rec_noacc.jsonl", lambda p: p.write_text(jsonl([{k: v for k, v in r.items() if k != "accuracy"} for r in recs])))
    put("rec_nan.jsonl", lambda p: p.write_text(jsonl([{**r, "accuracy": math.nan} for r in recs])))
    put("rec_space.jsonl", lambda p: p.write_text(jsonl([{**r, "space": "ofa_resnet50_tiny"} for r in recs])))
    put("rec_fp.jsonl", lambda p: p.write_text(jsonl([{**r, "policy": None} for r in recs])))
    design = {"format": "cimnas.design/1", "space": tiny.name, "architecture": Architecture.largest(tiny).to_dict(),
              "quantization": QuantPolicy.uniform(tiny, 8).to_dict(),
              "hardware": {k: v for k, v in __import__("cimnas.hw.params", fromlist=["x"]).HardwareParams().to_dict().items()},
              "metrics": {"accuracy": 0.8}}
    put("design_ok.json", lambda p: p.write_text(json.dumps(design)))
    put("design_badjson.json", lambda p: p.write_text("{'architecture': oops"))
    put("design_space.json", lambda p: p.write_text(json.dumps({**design, "space": resnet.name,
                                                               "architecture": Architecture.largest(resnet).to_dict(),
                                                               "quantization": QuantPolicy.uniform(resnet, 8).to_dict()})))
    bad_bits = QuantPolicy.uniform(tiny, 8).to_dict()
    first = next(iter(bad_bits))
    bad_bits[first] = [3] * len(bad_bits[first])
    put("design_bits.json", lambda p: p.write_text(json.dumps({**design, "quantization": bad_bits})))
    put("design_norows.json", lambda p: p.write_text(json.dumps({**design, "hardware": {k: v for k, v in design["hardware"].items()
                                                                                        if k != "rows"}})))
    sn = torch.load(ART / "fmnist/supernet.pt", weights_only=True)
    key = next(k for k, v in sn["state_dict"].items() if v.ndim == 4)
    put("supernet_shape.pt", lambda p: torch.save({**sn, "state_dict": {**sn["state_dict"], key: torch.zeros(1, 1, 1, 1)}}, p))
    other = torch.load(ART / "fmnist_resnet/supernet.pt", weights_only=True)
    (tmp / "run" / "checkpoints").mkdir(parents=True, exist_ok=True)
    ckpt = tmp / "run" / "checkpoints" / "other.ckpt"
    torch.save({"state_dict": {}, "cimnas_supernet": {k: other[k] for k in ("format", "space", "options")},
                "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6"}, ckpt)
    f["ckpt_other"] = str(ckpt)
    (tmp / "art").mkdir(exist_ok=True)
    return f


def expand(args: list[str], fixtures: dict[str, str]) -> list[str]:
    return [a.format(**fixtures) for a in args]
