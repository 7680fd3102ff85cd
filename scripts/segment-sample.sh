#!/usr/bin/env bash
# The main job: set up .venv if needed, then segment the bundled sample CT with the bundled demo model.
#   bash scripts/segment-sample.sh [OUTPUT_FOLDER]   (default: the repository's sample-output/)
# Writes OUTPUT/segmentation.seg.nrrd, OUTPUT/attention/*.nrrd (token heatmaps), OUTPUT/report.json,
# OUTPUT/overview.png, and OUTPUT/evaluation.json (Dice, HD95, volumes against the sample's reference labels).
set -euo pipefail
usage="usage: bash scripts/segment-sample.sh [OUTPUT_FOLDER]   (default: the repository's sample-output/; \
a folder whose name starts with '-' after --)"
case "${1:-}" in
  -h | --help) echo "$usage"; exit 0 ;;
  --) shift ;;
  -*) echo "error: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
esac
if [ $# -gt 1 ]; then
  echo "error: one OUTPUT_FOLDER at most, got $#" >&2; echo "$usage" >&2; exit 2
fi
out=${1:-}
case "$out" in
  "" | /*) ;;
  "~") out=$HOME ;;  # a tilde the shell left (quoted): the home folder, as the command line takes it
  "~/"*) out="$HOME/${out#\~/}" ;;
  *) out="$PWD/$out" ;;  # a relative OUTPUT_FOLDER is where the script was run from, not the repository
esac
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
out=${out:-sample-output}
samples=TokenUNetSegment/Resources/Samples
export PYTHONPATH=TokenUNetSegment
.venv/bin/python -m TokenUNetSegmentLib.pipeline segment "$samples/AbdomenCT.nii.gz" --out "$out"
.venv/bin/python -m TokenUNetSegmentLib.pipeline evaluate "$samples/AbdomenCT.TotalSegmentatorLabels.nii.gz" \
  --prediction "$out/segmentation.seg.nrrd" --json "$out/evaluation.json"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac  # paths that open from wherever the script was run
echo "open $out/overview.png, or load $out/segmentation.seg.nrrd and $PWD/$samples/AbdomenCT.nii.gz in 3D Slicer"
