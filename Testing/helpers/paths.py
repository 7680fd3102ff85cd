"""Where the repository's parts are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "TokenUNetSegment"
LIB = MODULE_DIR / "TokenUNetSegmentLib"
RESOURCES = MODULE_DIR / "Resources"
SAMPLE_CT = RESOURCES / "Samples" / "AbdomenCT.nii.gz"
SAMPLE_LABELS = RESOURCES / "Samples" / "AbdomenCT.TotalSegmentatorLabels.nii.gz"
SCRIPTS = ROOT / "scripts"
SLICER_FACTS = ROOT / "Testing" / "slicer_api_facts.json"  # derived from Slicer's sources (scripts/slicer-api)
