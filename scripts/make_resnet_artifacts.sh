#!/usr/bin/env bash
# Build the tiny OFA-ResNet50 artifacts in cimnas/artifacts/fmnist_resnet/ from scratch, in order:
# supernet -> quantized predictor records -> predictor -> layer value statistics (space
# ofa_resnet50_tiny, Fashion-MNIST). They feed configs/search/resnet_tiny_sram_{7,32}nm.yaml.
# CPU, 1 thread (OMP_NUM_THREADS, default 1): about 10-15 min supernet + 1 min accuracy report
# + 10 min records (400 x ~1.5 s) + 1 min predictor + seconds for the statistics, ~12 min in
# all on a busy 2-core machine (supernet part: ~20 min) (per-step rates of smoke runs). On a GPU pass
# e.g. --trainer.accelerator gpu to the train.py steps by editing the configs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=cimnas/artifacts/fmnist_resnet
$PY train.py fit --config configs/supernet/fmnist_resnet.yaml                             # supernet.pt
$PY -m cimnas.models.supernet_eval --supernet $OUT/supernet.pt --out $OUT/supernet_eval.json  # accuracy spread report
# records of an older supernet would be refused (supernet_sha256); the measurement is resumable: rerun
# that line alone to continue an interrupted one
rm -f $OUT/predictor_records_quant.jsonl
$PY -m cimnas.models.predictor.measure --config configs/predictor/measure_fmnist_resnet.yaml   # predictor_records_quant.jsonl
$PY train.py fit --config configs/predictor/fmnist_resnet.yaml                            # predictor.pt (from scratch)
$PY -m cimnas.search.value_stats --supernet $OUT/supernet.pt --out $OUT/value_stats.pt   # value_stats.pt
echo "artifacts written to $OUT/; searches:"
echo "  $PY search.py --config configs/search/resnet_tiny_sram_7nm.yaml    # -> results/resnet_tiny_sram_7nm/compare.md"
echo "  $PY search.py --config configs/search/resnet_tiny_sram_32nm.yaml   # -> results/resnet_tiny_sram_32nm/compare.md"
