"""Facts about Slicer, CTK, Qt, SlicerPyTorch and the Extensions Index, derived from their sources at the
supported tags by ``scripts/slicer-api/derive_facts.py`` (Testing/slicer_api_facts.json)."""

import json

from .paths import SLICER_FACTS

FACTS = json.loads(SLICER_FACTS.read_text(encoding="utf-8"))
TAGS = FACTS["supported_tags"]
