"""Tissue labels of the phantom and their CT numbers.

The renderer paints a uint8 tissue label per voxel; the image before noise is the label's base
Hounsfield value plus a low-contrast texture whose amplitude depends on the tissue, and every
truth structure is a set of labels. So masks and image agree voxel by voxel by construction.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from ..structures.label_maps import TissueLegend, legend_from_names


class Tissue(IntEnum):
    """Tissue label values (uint8)."""

    AIR = 0
    MATTRESS = 1
    COUCH_SHELL = 2
    COUCH_CORE = 3
    FAT = 4
    SKIN = 5
    MUSCLE = 6
    SOFT = 7            # urethra, ovaries, joint capsule: soft tissue in no truth structure
    CORTICAL = 8
    TRABECULAR = 9
    MARROW = 10         # fatty marrow of the femoral shaft
    DISC = 11
    CANAL = 12          # thecal sac / sacral canal contents
    METAL = 13
    ARTERY = 14
    VEIN = 15
    ILIAC_ARTERY = 16
    ILIAC_VEIN = 17
    NODE = 18
    BLADDER_WALL = 19
    URINE = 20
    RECTUM_WALL = 21
    RECTUM_CONTENT = 22
    RECTUM_GAS = 23
    BOWEL_WALL = 24
    BOWEL_FLUID = 25
    BOWEL_GAS = 26
    BOWEL_CONTRAST = 27
    BOWEL_FECES = 28
    UTERUS = 29
    ENDOMETRIUM = 30
    CERVIX = 31
    VAGINA = 32
    MESORECTAL_FAT = 33
    VISCERAL_FAT = 34   # mesenteric fat between bowel loops
    TRABECULAR_DENSE = 35  # denser cancellous bone under the cortex (subchondral, cortical rims)


N_TISSUES = max(int(t) for t in Tissue) + 1

BONE = (Tissue.CORTICAL, Tissue.TRABECULAR, Tissue.TRABECULAR_DENSE, Tissue.MARROW, Tissue.METAL)
BLADDER = (Tissue.BLADDER_WALL, Tissue.URINE)
RECTUM = (Tissue.RECTUM_WALL, Tissue.RECTUM_CONTENT, Tissue.RECTUM_GAS)
BOWEL = (Tissue.BOWEL_WALL, Tissue.BOWEL_FLUID, Tissue.BOWEL_GAS, Tissue.BOWEL_CONTRAST, Tissue.BOWEL_FECES)
UTERUS = (Tissue.UTERUS, Tissue.ENDOMETRIUM)
ILIAC_VESSELS = (Tissue.ILIAC_ARTERY, Tissue.ILIAC_VEIN)
OUTSIDE = (Tissue.AIR, Tissue.MATTRESS, Tissue.COUCH_SHELL, Tissue.COUCH_CORE)
#: Tissues a CTV may never contain (besides outside-body labels).
CTV_EXCLUDED = BONE + BLADDER + RECTUM + BOWEL + (Tissue.MUSCLE, Tissue.DISC, Tissue.CANAL, Tissue.SKIN) + OUTSIDE


#: The tissue class (:data:`ctv_core.structures.label_maps.TISSUE_CLASSES`) of every label: what
#: an appearance-randomising synthesiser draws one CT number for.
TISSUE_CLASS = {
    Tissue.AIR: "air", Tissue.RECTUM_GAS: "air", Tissue.BOWEL_GAS: "air",
    Tissue.MATTRESS: "foam", Tissue.COUCH_CORE: "foam", Tissue.COUCH_SHELL: "couch_shell",
    Tissue.FAT: "fat", Tissue.MESORECTAL_FAT: "fat", Tissue.VISCERAL_FAT: "fat",
    Tissue.MUSCLE: "muscle",
    Tissue.SKIN: "soft_tissue", Tissue.SOFT: "soft_tissue", Tissue.DISC: "soft_tissue", Tissue.NODE: "soft_tissue",
    Tissue.BLADDER_WALL: "soft_tissue", Tissue.RECTUM_WALL: "soft_tissue", Tissue.BOWEL_WALL: "soft_tissue",
    Tissue.VAGINA: "soft_tissue",
    Tissue.UTERUS: "uterus", Tissue.ENDOMETRIUM: "uterus", Tissue.CERVIX: "cervix", Tissue.URINE: "urine",
    Tissue.ARTERY: "artery", Tissue.ILIAC_ARTERY: "artery", Tissue.VEIN: "vein", Tissue.ILIAC_VEIN: "vein",
    Tissue.RECTUM_CONTENT: "bowel_content", Tissue.BOWEL_FLUID: "bowel_content", Tissue.BOWEL_FECES: "bowel_content",
    Tissue.BOWEL_CONTRAST: "oral_contrast",
    Tissue.CORTICAL: "cortical_bone", Tissue.TRABECULAR: "trabecular_bone", Tissue.TRABECULAR_DENSE: "trabecular_bone",
    Tissue.MARROW: "marrow", Tissue.CANAL: "csf", Tissue.METAL: "metal",
}


def tissue_legend(source: str) -> TissueLegend:
    """The legend of the phantom's label maps: every label with its name and tissue class."""
    return legend_from_names([(int(t), t.name, TISSUE_CLASS[t]) for t in Tissue], source)


def lookup(tissues) -> np.ndarray:
    """Boolean lookup table over label values, True for the given tissues."""
    table = np.zeros(N_TISSUES, dtype=bool)
    table[list(int(t) for t in tissues)] = True
    return table


def septa_table() -> np.ndarray:
    """Peak HU added by fibrous septa (see ``texture.fat_septa``) per label: fat only."""
    table = np.zeros(N_TISSUES, dtype=np.float32)
    table[Tissue.FAT] = 40.0
    table[Tissue.MESORECTAL_FAT] = 25.0
    table[Tissue.VISCERAL_FAT] = 45.0
    return table


def hu_tables(params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base HU and fine / coarse texture amplitudes (HU per unit noise) per label.

    Parameters
    ----------
    params
        An ``AnatomyParams`` (contrast, urine and organ CT numbers are drawn per anatomy).
    """
    base = np.zeros(N_TISSUES, dtype=np.float32)
    fine = np.zeros(N_TISSUES, dtype=np.float32)
    coarse = np.zeros(N_TISSUES, dtype=np.float32)

    def put(t, hu, f=0.0, c=0.0):
        base[t], fine[t], coarse[t] = hu, f, c

    artery = params.artery_hu if params.vessel_contrast else params.blood_hu
    vein = params.vein_hu if params.vessel_contrast else params.blood_hu
    boost = 15.0 if params.vessel_contrast else 0.0
    put(Tissue.AIR, -1000.0)
    put(Tissue.MATTRESS, -800.0, 12.0, 8.0)
    put(Tissue.COUCH_SHELL, 250.0, 40.0, 20.0)
    put(Tissue.COUCH_CORE, -890.0, 5.0, 5.0)
    put(Tissue.FAT, params.fat_hu, 7.0, 5.0)
    put(Tissue.MESORECTAL_FAT, params.fat_hu + 12.0, 8.0, 5.0)
    put(Tissue.VISCERAL_FAT, params.fat_hu + 8.0, 9.0, 8.0)
    put(Tissue.SKIN, 45.0, 4.0, 3.0)
    put(Tissue.MUSCLE, params.muscle_hu, 3.0, 4.0)
    put(Tissue.SOFT, 38.0, 3.0, 3.0)
    put(Tissue.CORTICAL, 950.0, 60.0, 60.0)
    put(Tissue.TRABECULAR, params.trabecular_hu, 45.0, 40.0)
    put(Tissue.TRABECULAR_DENSE, params.trabecular_hu + 170.0, 50.0, 40.0)
    put(Tissue.MARROW, 10.0, 10.0, 15.0)
    put(Tissue.DISC, 85.0, 5.0, 5.0)
    put(Tissue.CANAL, 15.0, 3.0, 3.0)
    put(Tissue.METAL, 3000.0)
    put(Tissue.ARTERY, artery, 2.0, 2.0)
    put(Tissue.VEIN, vein, 2.0, 2.0)
    put(Tissue.ILIAC_ARTERY, artery, 2.0, 2.0)
    put(Tissue.ILIAC_VEIN, vein, 2.0, 2.0)
    put(Tissue.NODE, params.node_hu, 3.0, 2.0)
    put(Tissue.BLADDER_WALL, 38.0 + boost * 0.5, 3.0, 2.0)
    put(Tissue.URINE, params.urine_hu, 1.0, 1.0)
    put(Tissue.RECTUM_WALL, 40.0 + boost * 0.5, 3.0, 3.0)
    put(Tissue.RECTUM_CONTENT, 5.0, 45.0, 35.0)
    put(Tissue.RECTUM_GAS, -950.0, 30.0, 20.0)
    put(Tissue.BOWEL_WALL, 40.0 + boost, 3.0, 3.0)
    put(Tissue.BOWEL_FLUID, 15.0, 3.0, 3.0)
    put(Tissue.BOWEL_GAS, -950.0, 20.0, 20.0)
    put(Tissue.BOWEL_CONTRAST, params.oral_contrast_hu, 20.0, 25.0)
    put(Tissue.BOWEL_FECES, -10.0, 50.0, 40.0)
    put(Tissue.UTERUS, params.uterus_hu + boost, 3.0, 4.0)
    put(Tissue.ENDOMETRIUM, params.uterus_hu + boost * 0.6 - 12.0, 3.0, 3.0)
    put(Tissue.CERVIX, params.cervix_hu + boost * 0.7, 3.0, 4.0)
    put(Tissue.VAGINA, 38.0 + boost * 0.5, 3.0, 3.0)
    return base, fine, coarse
