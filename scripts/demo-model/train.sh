#!/usr/bin/env bash
# Train the bundled demo model (the exact recipe of the shipped package), measure it and package it into the module.
#   bash scripts/demo-model/train.sh [RUNS_FOLDER] [extra train options, e.g. --max-minutes 120]
# The shipped weights are the leave-one-patient-out fold without patient C (LiTS, non-commercial licence), trained in
# RUNS_FOLDER/fold-C; build.py also reads the other folds there (lopo.sh) when they exist. Re-running resumes from the
# last checkpoint (saved every 5 minutes), so a long run can be spread over several sessions (exit code 3: stopped by
# --max-minutes, run again). RUNS_FOLDER defaults to ${TOKENUNET_RUNS:-$HOME/tokenunet-runs}/demo-model (outside git).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-venv.sh
runs=${1:-${TOKENUNET_RUNS:-$HOME/tokenunet-runs}/demo-model}
shift || true
export PYTHONPATH=TokenUNetSegment
source scripts/demo-model/recipe.sh
[ -f demo-model-data/UpperChestCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_second_patient.py
[ -f demo-model-data/LiverCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_liver_patient.py
train_recipe "$runs/fold-C" C abdomen-organs-3mm-demo "$@"
robustness_of "$runs/fold-C" C
# BASELINES: optional "NAME=FOLDER ..." of earlier models' robustness; PREVIOUS_LOPO: earlier recipes' fold folders
compare=()
for entry in ${BASELINES:-}; do compare+=(--baseline "$entry"); done
for entry in ${PREVIOUS_LOPO:-}; do compare+=(--previous-lopo "$entry"); done
.venv/bin/python scripts/demo-model/build.py "$runs/fold-C/package" --datalist "$DATALIST" --lopo "$runs" "${compare[@]}" \
  --note scripts/demo-model/card-notes.md
