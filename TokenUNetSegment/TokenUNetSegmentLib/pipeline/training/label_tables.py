"""Label tables of public CT datasets (value -> structure name) and the name matching that lets a model's
labels find theirs: words in any order, underscores or spaces, a few synonyms.

Sources: TotalSegmentator v2 ``total`` task (``totalsegmentator/map_to_binary.py``, class_map["total"], in the
2.18.0 source distribution); BTCV (Synapse multi-organ, 13 labels); AMOS 2022 (15 labels, its dataset.json).
"""

from __future__ import annotations

import re

_VERTEBRAE = ["S1", *[f"L{i}" for i in range(5, 0, -1)], *[f"T{i}" for i in range(12, 0, -1)]]
_VERTEBRAE += [f"C{i}" for i in range(7, 0, -1)]
_TOTAL = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
    "kidney_cyst_right", "sacrum", *[f"vertebrae_{v}" for v in _VERTEBRAE], "heart", "aorta",
    "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
    "common_carotid_artery_right", "common_carotid_artery_left", "brachiocephalic_vein_left",
    "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava", "inferior_vena_cava",
    "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right", "iliac_vena_left",
    "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
    "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord",
    "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
    "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right", "iliopsoas_left",
    "iliopsoas_right", "brain", "skull", *[f"rib_left_{i}" for i in range(1, 13)],
    *[f"rib_right_{i}" for i in range(1, 13)], "sternum", "costal_cartilages",
]  # fmt: skip
TOTALSEGMENTATOR_V2: dict[int, str] = dict(enumerate(_TOTAL, start=1))
BTCV: dict[int, str] = dict(
    enumerate(
        [
            "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
            "inferior vena cava", "portal vein and splenic vein", "pancreas", "right adrenal gland",
            "left adrenal gland",
        ],
        start=1,
    )
)  # fmt: skip
AMOS: dict[int, str] = dict(
    enumerate(
        [
            "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
            "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
            "prostate/uterus",
        ],
        start=1,
    )
)  # fmt: skip
NAMED_TABLES = {"totalsegmentator": TOTALSEGMENTATOR_V2, "btcv": BTCV, "amos": AMOS}

SYNONYMS = {
    "postcava": "inferior vena cava",
    "ivc": "inferior vena cava",
    "gall bladder": "gallbladder",
    "urinary bladder": "bladder",
    "spleen splenic": "spleen",
    "portal splenic vein": "portal vein and splenic vein",
    "portal vein splenic vein": "portal vein and splenic vein",
    "esophagus oesophagus": "esophagus",
    "oesophagus": "esophagus",
}


def name_key(name: str) -> str:
    """A comparison key for structure names: lower case, words sorted, separators and synonyms unified
    ("kidney_right" == "Right kidney", "postcava" == "inferior vena cava")."""
    words = re.sub(r"[\s_\-/]+", " ", name.strip().lower()).strip()
    words = SYNONYMS.get(words, words)
    return " ".join(sorted(words.split()))


def named_table(value) -> dict[int, str] | None:
    """A name table from a datalist: a {value: name} mapping, or the name of a known dataset's table."""
    if value is None:
        return None
    if isinstance(value, str):
        table = NAMED_TABLES.get(value.strip().lower())
        if table is None:
            raise KeyError(value)
        return dict(table)
    return {int(k): str(v) for k, v in value.items()}
