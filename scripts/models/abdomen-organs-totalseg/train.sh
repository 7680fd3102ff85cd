#!/usr/bin/env bash
# Train a larger abdominal model (12 organs, BTCV names, 1.5 mm, 32AttnLong) on the TotalSegmentator dataset, on
# one machine or several, with the same tool as the bundled model.
#
#   bash scripts/models/abdomen-organs-totalseg/train.sh DATASET RUN [extra train options]
#
# DATASET is the TotalSegmentator dataset folder (<case>/ct.nii.gz, <case>/segmentations/*.nii.gz, meta.csv);
# RUN receives datalist.json, train.log, checkpoints/ and package/. Re-running resumes from RUN's checkpoint.
# Environment: NPROC processes per node (default: one per visible GPU, else 1), NNODES (1), NODE_RANK (0),
# MASTER host:port of node 0 for several nodes, STEPS (100000), CONFIG (config.json here), PYTHON.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
if [ $# -lt 2 ]; then echo "usage: $0 DATASET RUN [train options]" >&2; exit 2; fi
data=$1 run=$2
shift 2
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || { bash "$repo/scripts/setup-venv.sh"; python=$repo/.venv/bin/python; }
config=${CONFIG:-$here/config.json}
export PYTHONPATH="$repo/TokenUNetSegment${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$run"
if [ ! -f "$run/datalist.json" ]; then
  "$python" -m TokenUNetSegmentLib.pipeline datalist totalsegmentator "$data" --config "$config" --out "$run/datalist.json"
fi
gpus=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
nproc=${NPROC:-$(( gpus > 0 ? gpus : 1 ))}
nnodes=${NNODES:-1}
options=(--config "$config" --out "$run" --resume --steps "${STEPS:-100000}" --batch-size 2
  --optimizer sgd --lr 0.01 --schedule poly --warmup-steps 500
  --augmentation 1.0 --synthetic-ratio 0.2 --remap-ratio 0.3 --background-ratio 0.2 --workers "${WORKERS:-6}"
  --val-every 5000 --select best --seed 0 --progress none)
if [ "$nproc" -eq 1 ] && [ "$nnodes" -eq 1 ]; then
  exec "$python" -m TokenUNetSegmentLib.pipeline train "$run/datalist.json" "${options[@]}" "$@"
fi
if [ "$nnodes" -gt 1 ]; then
  rendezvous=(--nnodes "$nnodes" --node_rank "${NODE_RANK:-0}" --rdzv_backend c10d --rdzv_endpoint "${MASTER:?set MASTER=host:port of node 0}")
else
  rendezvous=(--standalone --nnodes 1)
fi
exec "$python" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node "$nproc" \
  -m TokenUNetSegmentLib.pipeline train "$run/datalist.json" "${options[@]}" "$@"
