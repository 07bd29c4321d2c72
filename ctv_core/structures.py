"""The structures ctv_core knows: names, RT ROI interpreted types, display colours.

The single source of truth for what a structure is called and how it is labelled in DICOM.
Names follow TG-263 where it names the structure (Bladder, Rectum, Bowel, Femur_Head_L/R);
the target keeps the clinics' plain "CTV". A structure not in the catalogue is an ORGAN with
a colour from a fixed palette.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


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
    """

    name: str
    interpreted_type: str
    colour: tuple[int, int, int]


CATALOGUE: dict[str, Structure] = {
    s.name.lower(): s
    for s in (
        Structure("CTV", "CTV", (255, 0, 255)),
        Structure("Bladder", "ORGAN", (255, 255, 0)),
        Structure("Rectum", "ORGAN", (153, 102, 51)),
        Structure("Bowel", "ORGAN", (255, 170, 127)),
        Structure("Femur_Head_L", "ORGAN", (0, 200, 0)),
        Structure("Femur_Head_R", "ORGAN", (0, 150, 255)),
        Structure("Bones", "ORGAN", (241, 214, 145)),
        Structure("Body", "EXTERNAL", (0, 255, 0)),
        Structure("Uterus", "ORGAN", (230, 120, 140)),
        Structure("Cervix", "ORGAN", (200, 80, 120)),
        Structure("Vagina", "ORGAN", (220, 150, 170)),
        Structure("Vessels_Iliac", "ORGAN", (200, 0, 0)),
        Structure("Lymph_Nodes", "ORGAN", (160, 255, 160)),
    )
}

_PALETTE = ((0, 255, 255), (255, 128, 0), (128, 0, 255), (0, 128, 128), (128, 128, 0), (255, 0, 128))

#: RTROIInterpretedType values DICOM defines (C.8.8.8: RT ROI Observations).
INTERPRETED_TYPES = frozenset({
    "EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS", "AVOIDANCE", "ORGAN",
    "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
    "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION", "CONTROL", "DOSE_MEASUREMENT",
})

_TARGET_TYPES = re.compile(r"^(CTV|PTV|GTV|ITV)", re.IGNORECASE)


def structure_for(name: str, index: int = 0) -> Structure:
    """The catalogue entry for ``name`` (case-insensitive), or a default for an unknown name.

    Unknown names that start with CTV/PTV/GTV get that target type; others are ORGAN.
    ``index`` picks the palette colour of an unknown structure.
    """
    known = CATALOGUE.get(name.lower())
    if known is not None:
        return Structure(name, known.interpreted_type, known.colour)
    match = _TARGET_TYPES.match(name)
    kind = match.group(1).upper().replace("ITV", "CTV") if match else "ORGAN"
    return Structure(name, kind, _PALETTE[index % len(_PALETTE)])
