#!/usr/bin/env bash
# Build the tiny OFA-ResNet50 artifacts (space ofa_resnet50_tiny, Fashion-MNIST) into one run folder:
# supernet -> quantized predictor records -> predictor -> layer value statistics, then promote
# them over cimnas/artifacts/fmnist_resnet/ with `python -m cimnas.promote` — only if no file is
# worse than the one it replaces (all checked before any is copied; FORCE=1 skips the comparison).
# They feed configs/search/resnet_tiny_sram_{7,32}nm.yaml.
# CPU, 1 thread (OMP_NUM_THREADS, default 1): about 10-15 min supernet + 1 min accuracy report
# + 10 min records (400 x ~1.5 s) + 1 min predictor + seconds for the statistics, ~12 min in
# all on a busy 2-core machine (supernet part: ~20 min) (per-step rates of smoke runs). On a GPU pass
# e.g. --trainer.accelerator gpu to the train.py steps by editing the configs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=${RUN:-runs/make_resnet_artifacts/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
echo "run folder: $RUN"
[ -f "$RUN/supernet/supernet.pt" ] || \
  $PY train.py fit --config configs/supernet/fmnist_resnet.yaml --trainer.default_root_dir "$RUN/supernet"
$PY -m cimnas.models.supernet_eval --supernet "$RUN/supernet/supernet.pt" --out "$RUN/supernet_eval.json"
# resumable: rerun with the same RUN=... to continue an interrupted measurement
$PY -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist_resnet.yaml \
  --supernet "$RUN/supernet/supernet.pt" --output "$RUN/predictor_records_quant.jsonl"
$PY train.py fit --config configs/predictor/fmnist_resnet.yaml --trainer.default_root_dir "$RUN/predictor" \
  --data.init_args.records "[$RUN/predictor_records_quant.jsonl]"                       # predictor.pt (from scratch)
$PY -m cimnas.search.value_stats --supernet "$RUN/supernet/supernet.pt" --out "$RUN/value_stats.pt"
FLAGS=(); [ "${FORCE:-0}" = 1 ] && FLAGS=(--force)
SET=("supernet $RUN/supernet/supernet.pt" "records_quant $RUN/predictor_records_quant.jsonl"
     "predictor $RUN/predictor/predictor.pt" "value_stats $RUN/value_stats.pt")
for item in "${SET[@]}"; do set -- $item; $PY -m cimnas.promote --kind "$1" --from "$2" --check "${FLAGS[@]}"; done
for item in "${SET[@]}"; do set -- $item; $PY -m cimnas.promote --kind "$1" --from "$2" "${FLAGS[@]}"; done
# supernet_eval.json beside the supernet is a report, not a promoted artifact: copy it yourself if wanted
echo "artifacts promoted from $RUN into cimnas/artifacts/fmnist_resnet/; searches:"
echo "  $PY search.py --config configs/search/resnet_tiny_sram_7nm.yaml    # -> results/resnet_tiny_sram_7nm/compare.md"
echo "  $PY search.py --config configs/search/resnet_tiny_sram_32nm.yaml   # -> results/resnet_tiny_sram_32nm/compare.md"
