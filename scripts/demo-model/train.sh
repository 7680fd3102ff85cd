#!/usr/bin/env bash
# Train the bundled demo model (the exact recipe of the shipped package), then package it into the module.
#   bash scripts/demo-model/train.sh [WORK_FOLDER] [extra train options, e.g. --max-minutes 35]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-venv.sh
work=${1:-demo-model-run}
shift || true
export PYTHONPATH=TokenUNetSegment
.venv/bin/python -m TokenUNetSegmentLib.pipeline train scripts/demo-model/datalist.json \
  --config scripts/demo-model/config.json --out "$work" \
  --steps 1500 --batch-size 2 --optimizer adamw --lr 0.002 --schedule cosine --warmup-steps 50 \
  --augmentation 1.25 --val-every 150 --seed 0 --threads 1 "$@"
.venv/bin/python scripts/demo-model/build.py "$work/package"
