#!/usr/bin/env bash
# The OFA-recipe supernet (configs/supernet/fmnist_ofa.yaml, issue 18) in resumable pieces.
#
#   bash scripts/supernet_ofa.sh run     # start, or resume from the last checkpoint (the run folder's,
#                                        # else the one carried in progress/supernet_fmnist_ofa/)
#   bash scripts/supernet_ofa.sh save    # carry the last checkpoint and the phase reports into
#                                        # progress/supernet_fmnist_ofa/ (tracked: the next session resumes there)
#
# The run takes many CPU hours on the 2-core machine (about 20 epochs of 45,000 images; later
# phases train 2-4 subnets plus the teacher per step, and every phase ends with a ~40 min interior
# report), so it runs in the background across sessions. Extra arguments after `run` go to train.py
# (e.g. --trainer.accelerator gpu on a lent GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/supernet_fmnist_ofa
CARRY=progress/supernet_fmnist_ofa
PY=${PYTHON:-.venv/bin/python}
case "${1:-run}" in
  run)
    shift || true
    if [ ! -f "$RUN/checkpoints/last.ckpt" ] && [ -f "$CARRY/last.ckpt" ]; then
      mkdir -p "$RUN/checkpoints"
      cp "$CARRY/last.ckpt" "$RUN/checkpoints/last.ckpt"
      [ -d "$CARRY/phase_reports" ] && cp -r "$CARRY/phase_reports" "$RUN/"
    fi
    resume=()
    [ -f "$RUN/checkpoints/last.ckpt" ] && resume=(--ckpt_path "$RUN/checkpoints/last.ckpt")
    exec env OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} \
      "$PY" train.py fit --config configs/supernet/fmnist_ofa.yaml "${resume[@]}" "$@"
    ;;
  save)
    mkdir -p "$CARRY"
    cp "$RUN/checkpoints/last.ckpt" "$CARRY/last.ckpt.tmp" && mv "$CARRY/last.ckpt.tmp" "$CARRY/last.ckpt"
    [ -d "$RUN/phase_reports" ] && mkdir -p "$CARRY/phase_reports" && cp "$RUN"/phase_reports/*.json "$CARRY/phase_reports/" 2>/dev/null || true
    "$PY" - "$CARRY/last.ckpt" <<'PYEOF'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(f"carried {sys.argv[1]}: epoch {ck['epoch']}, global step {ck['global_step']}")
PYEOF
    ;;
  *) echo "usage: bash scripts/supernet_ofa.sh run|save [train.py args]" >&2; exit 2 ;;
esac
