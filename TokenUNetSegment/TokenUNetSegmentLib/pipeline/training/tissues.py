"""Tissue classes for CT synthesis: what each labelled structure (or, where nothing is labelled, each HU
range) is made of, and CT-plausible HU distributions per contrast phase.

A *tissue map* assigns every voxel of a training case one of :data:`TISSUES`. Where a case has full label
maps (e.g. TotalSegmentator's 117 classes) the structure names decide; everywhere else the voxel's HU
decides (air, lung, fat, soft tissue, dense, bone). Synthesis then draws each tissue's intensity from
:data:`HU_PRIORS` with per-scan shifts (unenhanced, arterial, portal venous phase), as SynthSeg (Billot et
al., Medical Image Analysis 2023) draws each label's intensity from a random Gaussian, but constrained to CT.

HU values are typical figures from radiology references (water 0, fat about -100, unenhanced liver 55-65,
portal venous liver 100-120, arterial aorta 250-400); the ranges are deliberately wide.
"""

from __future__ import annotations

import re

import numpy as np

TISSUES = (
    "air",  # 0: outside the body, or padding
    "lung",
    "airway",  # gas in the trachea or bowel
    "fat",
    "muscle",
    "soft",  # unlabelled soft tissue
    "dense",  # unlabelled 140-400 HU: enhanced vessels, oral contrast, cancellous bone
    "bone",
    "cartilage",
    "fluid",  # bile, urine, cysts
    "liver",
    "spleen",
    "kidney",
    "pancreas",
    "adrenal",
    "bowel",
    "artery",
    "vein",
    "heart",
    "nerve",  # spinal cord, brain
    "thyroid",
)
TISSUE_ID = {name: index for index, name in enumerate(TISSUES)}
PHASES = ("unenhanced", "arterial", "portal venous")

# tissue -> (mean HU per phase, per-scan SD of that mean, within-tissue texture SD)
HU_PRIORS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "air": ((-1000, -1000, -1000), 5, 8),
    "lung": ((-850, -850, -850), 40, 50),
    "airway": ((-950, -950, -950), 30, 30),
    "fat": ((-100, -100, -100), 12, 18),
    "muscle": ((50, 55, 62), 8, 14),
    "soft": ((40, 60, 70), 10, 22),
    "dense": ((220, 240, 230), 60, 60),
    "bone": ((380, 380, 380), 90, 140),
    "cartilage": ((110, 110, 115), 20, 25),
    "fluid": ((8, 8, 10), 7, 6),
    "liver": ((58, 75, 110), 9, 12),
    "spleen": ((48, 115, 120), 7, 16),
    "kidney": ((32, 170, 170), 6, 25),
    "pancreas": ((42, 100, 95), 8, 15),
    "adrenal": ((30, 60, 60), 10, 15),
    "bowel": ((25, 40, 50), 25, 40),
    "artery": ((42, 320, 165), 6, 15),
    "vein": ((42, 90, 150), 6, 20),
    "heart": ((42, 280, 150), 8, 35),
    "nerve": ((32, 35, 35), 6, 8),
    "thyroid": ((90, 150, 130), 15, 15),
}
ENHANCING = {"muscle", "soft", "liver", "spleen", "kidney", "pancreas", "adrenal", "bowel", "artery", "vein", "heart"}
"""Tissues whose contrast uptake is scaled together by one per-scan factor (how much and how fast contrast was
given), on top of their own independent variation."""

# HU thresholds for voxels that no structure claims: upper bounds (exclusive), in order
THRESHOLDS = ((-900.0, "air"), (-350.0, "lung"), (-20.0, "fat"), (140.0, "soft"), (400.0, "dense"), (np.inf, "bone"))

_RULES = (  # (regular expression on the normalised name, tissue); the first match wins
    (r"cyst|gallbladder|bladder|bile|urine|fluid|csf", "fluid"),
    (r"vein|vena|cava|venous", "vein"),
    (r"aorta|arter|trunk", "artery"),
    (r"liver|hepat", "liver"),
    (r"spleen|splen(?!ic vein)", "spleen"),
    (r"kidney|renal cortex", "kidney"),
    (r"pancrea", "pancreas"),
    (r"adrenal", "adrenal"),
    (r"lung|pulmonary lobe", "lung"),
    (r"trachea|airway|bronch", "airway"),
    (r"esophag|oesophag|stomach|bowel|duoden|colon|rectum|intestin|jejun|ileum|caecum|cecum", "bowel"),
    (r"cartilage|disc", "cartilage"),
    (r"vertebra|sacrum|rib|hip|femur|humerus|scapula|clavic|skull|sternum|bone|pelvi|coccyx|tibia|fibula", "bone"),
    (r"heart|atri|ventricl|myocard", "heart"),
    (r"spinal cord|brain|nerve", "nerve"),
    (r"thyroid", "thyroid"),
    (r"gluteus|autochthon|iliopsoas|psoas|muscle", "muscle"),
    (r"fat", "fat"),
)


def tissue_of(name: str) -> str | None:
    """The tissue a structure named ``name`` is made of (TotalSegmentator, BTCV, AMOS and similar names);
    None when no rule knows the name."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    for pattern, tissue in _RULES:
        if re.search(pattern, key):
            return tissue
    return None


def threshold_tissues(hu: np.ndarray) -> np.ndarray:
    """A tissue map (uint8) from HU alone: air, lung, fat, soft, dense, bone."""
    out = np.empty(hu.shape, np.uint8)
    out.fill(TISSUE_ID["bone"])
    for upper, tissue in reversed(THRESHOLDS[:-1]):
        out[hu < upper] = TISSUE_ID[tissue]
    return out


def tissue_map(hu: np.ndarray, structures: np.ndarray | None, names: dict[int, str] | None) -> np.ndarray:
    """Tissue of every voxel: the named structure's tissue where ``structures`` (a label map whose values
    ``names`` names) has one, the HU threshold class elsewhere. Gas inside bowel structures stays gas; a
    structure whose name no rule knows is one tissue, the threshold class of its median HU."""
    tissues = threshold_tissues(hu)
    if structures is None or not names:
        return tissues
    lut = np.full(int(max(max(names), int(structures.max()))) + 1, 255, np.uint8)
    for value, name in names.items():
        tissue = tissue_of(name)
        if tissue is None:
            inside = hu[structures == value]
            if inside.size == 0:
                continue
            tissue = TISSUES[int(threshold_tissues(np.array([np.median(inside)], np.float32))[0])]
        lut[value] = TISSUE_ID[tissue]
    claimed = lut[structures]
    keep = claimed != 255
    bowel_gas = (claimed == TISSUE_ID["bowel"]) & (hu < -350)
    tissues[keep & ~bowel_gas] = claimed[keep & ~bowel_gas]
    tissues[bowel_gas] = TISSUE_ID["airway"]
    return tissues


def tissue_means(hu: np.ndarray, tissues: np.ndarray) -> np.ndarray:
    """Mean HU of each tissue in a case (NaN where absent), for re-mapping real intensities."""
    counts = np.bincount(tissues.ravel(), minlength=len(TISSUES)).astype(np.float64)
    sums = np.bincount(tissues.ravel(), weights=hu.ravel().astype(np.float64), minlength=len(TISSUES))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)[: len(TISSUES)]


def draw_scan_means(rng: np.random.Generator, phase: int | None = None) -> tuple[np.ndarray, int]:
    """Per-tissue mean HU of one synthetic scan: a contrast phase, one uptake factor for every enhancing
    tissue, each tissue's own deviation and a calibration offset. Returns (means, phase index)."""
    phase = int(rng.choice(len(PHASES), p=(0.25, 0.3, 0.45))) if phase is None else phase
    uptake = rng.uniform(0.6, 1.3)
    offset = rng.normal(0.0, 6.0)
    means = np.empty(len(TISSUES))
    for index, name in enumerate(TISSUES):
        by_phase, spread, _ = HU_PRIORS[name]
        native, value = by_phase[0], by_phase[phase]
        if name in ENHANCING:
            value = native + uptake * (value - native)
        means[index] = value + rng.normal(0.0, spread) + (offset if name not in ("air",) else 0.0)
    return means, phase


TEXTURE_SD = np.array([HU_PRIORS[name][2] for name in TISSUES], np.float32)
