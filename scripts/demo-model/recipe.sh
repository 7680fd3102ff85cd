# The demo model's training recipe, shared by train.sh (the shipped model = the leave-one-patient-out fold without
# patient C) and lopo.sh (every fold). Sourced, not run; call from the repository root with PYTHONPATH set.
# Phase 1 (2500 steps) learns organs from heavily augmented real, re-mapped and synthetic patches; phase 2 resumes
# it to 4000 steps on the longer cosine schedule (a warm restart, package 2.0.0); phase 3 goes on to 6000 steps at
# half the rate with fewer synthetic and re-mapped patches (package 2.1.0); phase 4 goes on to 8000 steps at a quarter
# of the rate (package 2.2.0, the shipped one; its metadata lists the phases). PHASE_OPTIONS[i] adds train options to
# phase i only.
RECIPE=(
  --config scripts/demo-model/config.json
  --batch-size 2 --patch-size 48 48 48
  --optimizer adamw --lr 0.002 --schedule cosine --warmup-steps 50
  --augmentation 1.0 --synthetic-ratio 0.3 --remap-ratio 0.4 --background-ratio 0.3 --lesion-probability 0.3
  --select last --val-every 500 --seed 0 --threads 1 --progress none
)
PHASE_STEPS=(2500 4000 6000 8000)
PHASE_OPTIONS=("" "" "--lr 0.001 --synthetic-ratio 0.15 --remap-ratio 0.3" "--lr 0.0005 --synthetic-ratio 0.15 --remap-ratio 0.3")
DATALIST=scripts/demo-model/datalist-patients.json

# steps the run in folder $1 has finished (its log's last "end" record; 0 before any)
steps_done() {
  .venv/bin/python - "$1/train.log" <<'PY'
import json, sys
try:
    ends = [json.loads(line)["step"] for line in open(sys.argv[1], encoding="utf-8") if '"event": "end"' in line]
except FileNotFoundError:
    ends = []
print(ends[-1] if ends else 0)
PY
}

# train_recipe OUT HOLD_OUT MODEL_ID [extra train options, e.g. --max-minutes 120]: every phase in turn, resuming
# from OUT's last checkpoint; returns 3 when a phase stopped early (--max-minutes), so the caller can run it again.
train_recipe() {
  local out=$1 hold=$2 id=$3 phase
  shift 3
  for phase in "${!PHASE_STEPS[@]}"; do
    [ "$(steps_done "$out")" -ge "${PHASE_STEPS[$phase]}" ] && continue
    # shellcheck disable=SC2086
    .venv/bin/python -m TokenUNetSegmentLib.pipeline train "$DATALIST" --hold-out "$hold" --id "$id" --out "$out" \
      --resume "${RECIPE[@]}" --steps "${PHASE_STEPS[$phase]}" ${PHASE_OPTIONS[$phase]} "$@"
    if [ "$(steps_done "$out")" -lt "${PHASE_STEPS[$phase]}" ]; then
      echo "stopped early in phase $((phase + 1)) of $out: run the same command again to resume" >&2
      return 3
    fi
  done
}

# robustness_of FOLD PATIENT: the robustness table of FOLD/package on PATIENT, in FOLD/robustness/
robustness_of() {
  .venv/bin/python -m TokenUNetSegmentLib.pipeline robustness --model "$1/package" --datalist "$DATALIST" \
    --patient "$2" --out "$1/robustness"
}
