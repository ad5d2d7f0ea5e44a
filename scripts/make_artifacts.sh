#!/usr/bin/env bash
# Regenerate the default artifacts of cimnas/artifacts/fmnist/ from scratch: train everything into
# one run folder (supernet -> predictor records -> predictors -> layer value statistics), then
# promote the set over the shipped defaults with `python -m cimnas.promote` — only if no file is
# worse than the one it replaces (every file is checked before any is copied; FORCE=1 skips the
# comparison). Nothing is written into cimnas/artifacts/ before the promotion step.
# CPU (2 threads): about 45 min supernet + ~2.5 h measurements (2,252 float + 1,035 quantized records,
# resumable: rerun with the same RUN=... to continue) + 10 min predictors + 1 min statistics
# on an idle 2-core machine; on a GPU pass e.g. --trainer.accelerator gpu to the train.py steps by
# editing the configs.
#   SUPERNET=<file>  start from a trained supernet instead of training configs/supernet/fmnist.yaml
#                    (e.g. the OFA recipe's: scripts/supernet_ofa.sh, runs/supernet_fmnist_ofa/supernet.pt)
#   VAL_SIZE=15000   the held-out split the supernet was trained without (fmnist_ofa.yaml: 15,000;
#                    fmnist.yaml: 5,000, the default); labels average all of its images
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RUN=${RUN:-runs/make_artifacts/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
echo "run folder: $RUN"
VAL_SIZE=${VAL_SIZE:-5000}
if [ -n "${SUPERNET:-}" ] && [ ! -f "$RUN/supernet/supernet.pt" ]; then
  mkdir -p "$RUN/supernet" && cp "$SUPERNET" "$RUN/supernet/supernet.pt"
fi
[ -f "$RUN/supernet/supernet.pt" ] || \
  $PY train.py fit --config configs/supernet/fmnist.yaml --trainer.default_root_dir "$RUN/supernet"   # supernet.pt
$PY -m cimnas.models.supernet_eval --supernet "$RUN/supernet/supernet.pt" --val_size "$VAL_SIZE" --out "$RUN/supernet_eval.json"
# fp and quantized records side by side, one thread each (both resumable: rerun to continue); each
# set's label reliability lands beside it (<records>.reliability.json)
HELD_OUT=(--data.init_args.val_size "$VAL_SIZE" --eval_images "$VAL_SIZE")
$PY -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist_fp.yaml "${HELD_OUT[@]}" \
  --supernet "$RUN/supernet/supernet.pt" --output "$RUN/predictor_records_fp.jsonl" & fp_pid=$!
$PY -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist.yaml "${HELD_OUT[@]}" \
  --supernet "$RUN/supernet/supernet.pt" --output "$RUN/predictor_records_quant.jsonl"
wait "$fp_pid"
$PY train.py fit --config configs/predictor/fmnist_fp.yaml --trainer.default_root_dir "$RUN/predictor_fp" \
  --data.init_args.records "[$RUN/predictor_records_fp.jsonl]"                           # predictor_fp.pt
$PY train.py fit --config configs/predictor/fmnist_quant.yaml --trainer.default_root_dir "$RUN/predictor" \
  --data.init_args.records "[$RUN/predictor_records_quant.jsonl]" \
  --model.init_args.transfer_from "$RUN/predictor_fp/predictor_fp.pt"                   # predictor.pt (transfer)
# the ranking predictors (the default search's accuracy source; docs/predictor.md), ~2 min each
$PY -m cimnas.models.predictor.rank_fit fit --config configs/predictor/fmnist_rank_fp.yaml \
  --records "[$RUN/predictor_records_fp.jsonl]" --output "$RUN/predictor_rank_fp.pt"        # predictor_rank_fp.pt
$PY -m cimnas.models.predictor.rank_fit fit --config configs/predictor/fmnist_rank_quant.yaml \
  --records "[$RUN/predictor_records_quant.jsonl]" --extra_float_records "[$RUN/predictor_records_fp.jsonl]" \
  --output "$RUN/predictor_rank.pt"                                                        # predictor_rank.pt
$PY -m cimnas.search.value_stats --supernet "$RUN/supernet/supernet.pt" --out "$RUN/value_stats.pt"
# promotion: check the whole set, then copy it (FORCE=1: replace even better files)
FLAGS=(); [ "${FORCE:-0}" = 1 ] && FLAGS=(--force)
SET=("supernet $RUN/supernet/supernet.pt" "records_fp $RUN/predictor_records_fp.jsonl"
     "records_quant $RUN/predictor_records_quant.jsonl" "predictor_fp $RUN/predictor_fp/predictor_fp.pt"
     "predictor $RUN/predictor/predictor.pt" "predictor_rank_fp $RUN/predictor_rank_fp.pt"
     "predictor_rank $RUN/predictor_rank.pt" "value_stats $RUN/value_stats.pt")
for item in "${SET[@]}"; do set -- $item; $PY -m cimnas.promote --kind "$1" --from "$2" --check "${FLAGS[@]}"; done
for item in "${SET[@]}"; do set -- $item; $PY -m cimnas.promote --kind "$1" --from "$2" "${FLAGS[@]}"; done
echo "artifacts promoted from $RUN into cimnas/artifacts/fmnist/"
