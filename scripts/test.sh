#!/usr/bin/env bash
# Install everything the tests need into .venv and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

# The embedded default data set (Debian package; installs into /usr/share/datasets/fashion-mnist).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${CIMNAS_FASHION_MNIST_DIR:-}" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q dataset-fashion-mnist
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import cimnas, torch, torchvision, lightning, timm, evotorch" # fail fast on a broken install

export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
tests_start=$(date +%s)
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
end=$(date +%s)
echo "test suite: $((end - tests_start)) s (setup + tests: $((end - start)) s)"
exit $status
