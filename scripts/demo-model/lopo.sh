#!/usr/bin/env bash
# Leave-one-patient-out folds of the demo model's recipe: for each patient P of datalist-patients.json, train on
# the others (nothing derived from P, synthetic cases included) and measure P with the robustness command.
#   bash scripts/demo-model/lopo.sh [RUNS_FOLDER] [PATIENT ...]     (default ${TOKENUNET_RUNS:-$HOME/tokenunet-runs}/demo-model; A B C)
# Fold C is the shipped model (train.sh trains it in the same folder). Extra train options go in TRAIN_OPTIONS,
# e.g. TRAIN_OPTIONS="--max-minutes 100". Re-running resumes (exit code 3: a fold stopped early, run again).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-venv.sh
runs=${1:-${TOKENUNET_RUNS:-$HOME/tokenunet-runs}/demo-model}
shift || true
patients=("$@")
[ ${#patients[@]} -gt 0 ] || patients=(A B C)
export PYTHONPATH=TokenUNetSegment
source scripts/demo-model/recipe.sh
[ -f demo-model-data/UpperChestCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_second_patient.py
[ -f demo-model-data/LiverCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_liver_patient.py
for patient in "${patients[@]}"; do
  id=demo-lopo-$patient
  [ "$patient" = C ] && id=abdomen-organs-3mm-demo
  # shellcheck disable=SC2086
  train_recipe "$runs/fold-$patient" "$patient" "$id" ${TRAIN_OPTIONS:-}
  robustness_of "$runs/fold-$patient" "$patient"
done
