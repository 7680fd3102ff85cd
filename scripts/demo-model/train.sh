#!/usr/bin/env bash
# Train the bundled demo model (the exact recipe of the shipped package), measure it and package it into the module.
#   bash scripts/demo-model/train.sh [WORK_FOLDER] [extra train options, e.g. --max-minutes 120]
# Re-running with the same WORK_FOLDER resumes from its last checkpoint (saved every 5 minutes), so a long run
# can be spread over several sessions. WORK_FOLDER defaults to /work/runs/demo-model (outside git).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-venv.sh
work=${1:-/work/runs/demo-model}
shift || true
export PYTHONPATH=TokenUNetSegment
source scripts/demo-model/recipe.sh
[ -f demo-model-data/UpperChestCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_second_patient.py
[ -f demo-model-data/LiverCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_liver_patient.py
# the shipped weights never see patient C (LiTS, non-commercial): phase 1 is the leave-one-patient-out fold "C"
# (lopo.sh), phase 2 continues it to SHIPPED_STEPS
for steps in 2500 "$SHIPPED_STEPS"; do
  .venv/bin/python -m TokenUNetSegmentLib.pipeline train scripts/demo-model/datalist-patients.json --hold-out C \
    --id abdomen-organs-3mm-demo --out "$work" --resume "${RECIPE[@]}" --steps "$steps" "$@"
done
.venv/bin/python scripts/demo-model/build.py "$work/package" --datalist scripts/demo-model/datalist-patients.json \
  --lopo "${LOPO:-/work/runs/demo-model-lopo}" ${BASELINE:+--baseline "$BASELINE"}
