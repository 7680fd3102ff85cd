#!/usr/bin/env bash
# Leave-one-patient-out folds of the demo model's recipe: for each patient P of datalist-patients.json, train on
# the others (nothing derived from P, synthetic cases included) and measure P with the robustness command.
#   bash scripts/demo-model/lopo.sh [RUNS_FOLDER] [PATIENT ...]     (default /work/runs/demo-model-lopo; A B C)
# Extra train options go in TRAIN_OPTIONS, e.g. TRAIN_OPTIONS="--max-minutes 100". Re-running resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-venv.sh
runs=${1:-/work/runs/demo-model-lopo}
shift || true
patients=("$@")
[ ${#patients[@]} -gt 0 ] || patients=(A B C)
export PYTHONPATH=TokenUNetSegment
source scripts/demo-model/recipe.sh
[ -f demo-model-data/UpperChestCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_second_patient.py
[ -f demo-model-data/LiverCT.Labels.nii.gz ] || .venv/bin/python scripts/demo-model/fetch_liver_patient.py
for patient in "${patients[@]}"; do
  fold="$runs/fold-$patient"
  # shellcheck disable=SC2086
  .venv/bin/python -m TokenUNetSegmentLib.pipeline train scripts/demo-model/datalist-patients.json --out "$fold" \
    --resume --hold-out "$patient" --id "demo-lopo-$patient" "${RECIPE[@]}" ${TRAIN_OPTIONS:-}
  .venv/bin/python -m TokenUNetSegmentLib.pipeline robustness --model "$fold/package" \
    --datalist scripts/demo-model/datalist-patients.json --patient "$patient" --out "$fold/robustness"
done
