#!/usr/bin/env bash
# Regenerate the shipped default artifacts in cimnas/artifacts/fmnist/ from scratch, in order:
# supernet -> predictor records -> predictors -> layer value statistics.
# CPU (2 threads): about 45 min supernet + ~2.5 h measurements (2,252 float + 1,035 quantized records,
# resumable: rerun to continue) + 10 min predictors + 1 min statistics
# on an idle 2-core machine; on a GPU pass
# e.g. --trainer.accelerator gpu to the train.py steps by editing the configs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
$PY train.py fit --config configs/supernet/fmnist.yaml                             # supernet.pt
$PY -m cimnas.models.supernet_eval --supernet cimnas/artifacts/fmnist/supernet.pt   # accuracy spread report
rm -f cimnas/artifacts/fmnist/predictor_records_fp.jsonl cimnas/artifacts/fmnist/predictor_records_quant.jsonl
# fp and quantized records side by side, one thread each (both resumable: rerun to continue)
$PY -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist_fp.yaml & fp_pid=$!
$PY -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist.yaml     # quantized records
wait "$fp_pid"                                                                            # fp records
$PY train.py fit --config configs/predictor/fmnist_fp.yaml                           # predictor_fp.pt
$PY train.py fit --config configs/predictor/fmnist_quant.yaml                        # predictor.pt (transfer)
$PY -m cimnas.search.value_stats                                                     # value_stats.pt
echo "artifacts regenerated in cimnas/artifacts/fmnist/"
