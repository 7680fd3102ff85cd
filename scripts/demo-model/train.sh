#!/usr/bin/env bash
# Train the bundled demo model (the exact recipe of the shipped package), then package it into the module.
#   bash scripts/demo-model/train.sh [WORK_FOLDER] [extra train options, e.g. --max-minutes 35]
# DATALIST=scripts/demo-model/datalist-sample-only.json trains the held-out recipe check instead
# (then package it by hand with build.py --no-install).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-venv.sh
work=${1:-demo-model-run}
shift || true
export PYTHONPATH=TokenUNetSegment
[ -f demo-model-data/UpperChestCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_second_patient.py
.venv/bin/python -m TokenUNetSegmentLib.pipeline train "${DATALIST:-scripts/demo-model/datalist.json}" \
  --config scripts/demo-model/config.json --out "$work" \
  --steps 2600 --batch-size 2 --optimizer adamw --lr 0.002 --schedule cosine --warmup-steps 50 \
  --augmentation 1.0 --val-every 250 --seed 0 --threads 2 --progress none "$@"
if [ -z "${DATALIST:-}" ]; then
  .venv/bin/python scripts/demo-model/build.py "$work/package" --second-patient demo-model-data/ChestCT.nii.gz \
    demo-model-data/ChestCT.PartialLabels.nii.gz demo-model-data/ChestCT.PartialLabels.names.json \
    --note scripts/demo-model/recipe-check.md
fi
