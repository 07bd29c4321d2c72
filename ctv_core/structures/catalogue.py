"""The structures ctv_core knows: names, the aliases clinics use, RT ROI interpreted types, colours, SEG codes.

The single source of truth for what a structure is called and how it is labelled in DICOM:
the writers label by it, and the training-set builder recognises the target by its aliases.
Names follow TG-263 where it names the structure (Bladder, Rectum, Bowel, Femur_Head_L/R);
the target keeps the clinics' plain "CTV". Aliases are compared by :func:`alias_key` (ignoring
case, spaces, ``_``, ``-`` and ``.``). A structure not in the catalogue is an ORGAN with a
colour from a fixed palette (or a target type when its name starts with CTV/PTV/GTV/ITV).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """A coded concept for DICOM SEG segment descriptions: (scheme designator, value, meaning)."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class Structure:
    """How one structure is written.

    Attributes
    ----------
    name
        ROI name as written (TG-263 style).
    interpreted_type
        RTROIInterpretedType: CTV, ORGAN, EXTERNAL, ...
    colour
        ROIDisplayColor, (R, G, B) in 0-255.
    category, property_type
        SegmentedPropertyCategory and SegmentedPropertyType codes for DICOM SEG.
    aliases
        Other names clinics give the same structure (compared by :func:`alias_key`).
    """

    name: str
    interpreted_type: str
    colour: tuple[int, int, int]
    category: Code
    property_type: Code
    aliases: tuple[str, ...] = ()


RT_TARGET = Code("DCM", "130041", "RT Target")
EXTERNAL_BODY_MODEL = Code("DCM", "130047", "External Body Model")
ANATOMICAL_STRUCTURE = Code("SCT", "91723000", "Anatomical Structure")
TISSUE = Code("SCT", "85756007", "Tissue")
_TARGET_CODES = {
    "CTV": Code("SCT", "228792002", "Clinical target volume"),
    "PTV": Code("SCT", "228793007", "Planning target volume"),
    "GTV": Code("SCT", "228791009", "Gross tumor volume"),
}


#: Names clinics give the whole cervical-cancer CTV (primary + nodal, the 45-50.4 Gy volume).
#: Parts of the target (CTVp, CTV_T, CTVn, CTV_LN) and boosts (CTV_55, CTV_60) are deliberately
#: absent: they are not the volume the network learns.
CTV_ALIASES: tuple[str, ...] = (
    "CTV", "CTV1", "CTV_45", "CTV45", "CTV_4500", "CTV4500", "CTV_45Gy", "CTV45Gy",
    "CTV_50", "CTV50", "CTV_5000", "CTV_50.4", "CTV_5040", "CTV5040",
    "CTVp+n", "CTV_p+n", "CTV_pn", "CTVpn", "CTV_pelvis", "CTV_pelvic", "CTV_total", "CTV_tot", "CTV_all",
)


def alias_key(name: str) -> str:
    """``name`` as aliases are compared: lower case, without spaces, ``_``, ``-`` and ``.`` ("CTV-45" -> "ctv45")."""
    return re.sub(r"[\s_.\-]", "", name.lower())


def _organ(name: str, colour: tuple[int, int, int], value: str, meaning: str) -> Structure:
    return Structure(name, "ORGAN", colour, ANATOMICAL_STRUCTURE, Code("SCT", value, meaning))


CATALOGUE: dict[str, Structure] = {
    s.name.lower(): s
    for s in (
        Structure("CTV", "CTV", (255, 0, 255), RT_TARGET, _TARGET_CODES["CTV"], CTV_ALIASES),
        _organ("Bladder", (255, 255, 0), "89837001", "Urinary bladder"),
        _organ("Rectum", (153, 102, 51), "34402009", "Rectum"),
        _organ("Bowel", (255, 170, 127), "30315005", "Small intestine"),
        _organ("Femur_Head_L", (0, 200, 0), "2812003", "Head of femur"),
        _organ("Femur_Head_R", (0, 150, 255), "2812003", "Head of femur"),
        _organ("Bones", (241, 214, 145), "272673000", "Bone"),
        Structure("Body", "EXTERNAL", (0, 255, 0), EXTERNAL_BODY_MODEL, Code("SCT", "38266002", "Entire body")),
        _organ("Uterus", (230, 120, 140), "35039007", "Uterus"),
        _organ("Cervix", (200, 80, 120), "71252005", "Cervix"),
        _organ("Vagina", (220, 150, 170), "76784001", "Vagina"),
        _organ("Vessels_Iliac", (200, 0, 0), "59820001", "Blood vessel"),
        _organ("Lymph_Nodes", (160, 255, 160), "59441001", "Lymph node"),
    )
}

_BY_ALIAS: dict[str, Structure] = {alias_key(a): s for s in CATALOGUE.values() for a in (s.name, *s.aliases)}

_PALETTE = ((0, 255, 255), (255, 128, 0), (128, 0, 255), (0, 128, 128), (128, 128, 0), (255, 0, 128))

#: RTROIInterpretedType values DICOM defines (C.8.8.8: RT ROI Observations).
INTERPRETED_TYPES = frozenset({
    "EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS", "AVOIDANCE", "ORGAN",
    "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
    "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION", "CONTROL", "DOSE_MEASUREMENT",
})

_TARGET_TYPES = re.compile(r"^(CTV|PTV|GTV|ITV)", re.IGNORECASE)


def structure_for(name: str, index: int = 0) -> Structure:
    """The catalogue entry for ``name`` (its name or one of its aliases), labelled ``name``; else a default.

    Unknown names that start with CTV/PTV/GTV get that target type; others are ORGAN.
    ``index`` picks the palette colour of an unknown structure.
    """
    known = CATALOGUE.get(name.lower()) or _BY_ALIAS.get(alias_key(name))
    if known is not None:
        return Structure(name, known.interpreted_type, known.colour, known.category, known.property_type,
                         known.aliases)
    match = _TARGET_TYPES.match(name)
    kind = match.group(1).upper().replace("ITV", "CTV") if match else "ORGAN"
    category = RT_TARGET if kind in _TARGET_CODES else ANATOMICAL_STRUCTURE
    return Structure(name, kind, _PALETTE[index % len(_PALETTE)], category, _TARGET_CODES.get(kind, TISSUE))
