#!/usr/bin/env bash
# The GPU checks and figures of a session lent a CUDA machine (the `device` tool), in one call:
#   tests: Testing/pipeline/test_cuda.py (float16 inference agrees with the CPU, training steps run) and the model
#          tests; benchmarks: bench_models.py on CUDA (float32 and float16 autocast, next to SwinUNETR),
#          bench_pipeline.py in process (ours vs SwinUNETR) and --cli (the user's path) on CUDA.
# Run from the repository root, with the wheels of the packages the machine lacks in .whl/ (monai, SimpleITK):
#   bash Testing/benchmarks/gpu_check.sh OUT_FOLDER
# Each step has its own time limit, so one that fails or hangs leaves the others' figures.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_FOLDER}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log, report its status
  local name=$1 limit=$2 started=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - started)) s"
  tail -n "${TAIL:-25}" "$out/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import sys, torch, monai, SimpleITK, numpy; print(sys.version.split()[0], torch.__version__, \
torch.version.cuda, monai.__version__, SimpleITK.__version__, numpy.__version__, torch.cuda.get_device_name())"
TAIL=8 step tests 120 python3 -m pytest -q -p no:cacheprovider Testing/pipeline/test_cuda.py Testing/model -x
TAIL=14 step models 140 python3 Testing/benchmarks/bench_models.py --device cuda --size 128 --runs 20 --warmup 5 \
  --models 32AttnLong 32AttnLong:fp16 32AttnLong:bf16 SwinUNETR:fp16 SwinUNETR --json "$out/models-cuda.json"
TAIL=3 step pipeline 110 python3 Testing/benchmarks/bench_pipeline.py --device cuda --json "$out/pipeline-cuda.json"
python3 - "$out/pipeline-cuda.json" <<'PY' || true
import json, sys
s = json.load(open(sys.argv[1]))
for r in s["results"]:
    print(r["pipeline"], r["device"], r["timings_s"], "RSS", r["peak_rss_gib"], "GiB, GPU", r["peak_gpu_gib"], "GiB")
print("ours/swin time", s.get("ours_vs_swin_time"), "peak rss", s.get("ours_vs_swin_peak_rss"))
PY
TAIL=9 step user-path 170 python3 Testing/benchmarks/bench_pipeline.py --cli --device cuda --json "$out/user-path-cuda.json"
