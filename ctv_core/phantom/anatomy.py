"""Synthetic female pelvic planning CT ("phantom"): random anatomy, rendering, and truth masks.

The anatomy lives in its own frame: LPS millimetres with the origin midway between the two
femoral head centres (x = 0 midline, +x patient left, +y posterior, +z head). The patient's LPS
point of an anatomy point ``a`` is ``a + anatomy_offset_mm``. Rendering evaluates smooth
implicit shapes at the voxel centres of any grid (oblique and anisotropic grids included),
paints one tissue label per voxel, and derives both the CT numbers and the truth structures
from those labels, so masks and image agree voxel for voxel. The truth CTV follows the
consensus contouring rules for definitive cervical cancer radiotherapy (see ``ctv_rules``).

Modules beside this one: ``layout`` (where things are), ``shapes`` (implicit shapes on grid
sub-boxes), ``body`` (outline, fat, muscles, couch), ``skeleton`` (bones), ``organs`` (vessels,
nodes, viscera), ``ctv_rules`` (the CTV), ``texture`` (texture, noise, artefacts), ``tissues``
(labels and CT numbers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..geometry import Grid
from . import tissues as T
from .body import (Painter, body_extremes, couch_contact, paint_body, paint_couch, paint_muscles, press_body,
                   repaint_skin)
from .compartments import paint_muscle_compartments
from .ctv_rules import build_ctv
from .layout import build_layout
from .organs import paint_nodes, paint_vessels, paint_viscera
from .shapes import Canvas
from .skeleton import build_bones, paint_bones, paint_iliacus, paint_prostheses
from ..noise_fields import coarse_noise, correlated_noise
from .texture import ct_noise, fat_septa, streaks

logger = logging.getLogger(__name__)

PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP")

#: The phantom's version: pixel data, geometry and masks are identical for a given seed and
#: version. 2: wider anatomy (body size and habitus, trunk width with habitus, bladder 25-700 cc,
#: deviated and more strongly ante-/retroverted uteri, rectal distension), irregular bowel loops
#: packed more densely in lean patients, cancellous bone with a denser rim and fatty islands, and
#: a tissue label map written with every phantom.
PHANTOM_VERSION = 2

#: Truth structure names, in a stable order.
STRUCTURE_NAMES = ("CTV", "Bladder", "Rectum", "Bowel", "Femur_Head_L", "Femur_Head_R", "Bones", "Body", "Uterus",
                   "Cervix", "Vagina", "Vessels_Iliac", "Lymph_Nodes")

#: Node sites used in ``AnatomyParams.lymph_nodes``.
NODE_SITES = {0: "common iliac", 1: "external iliac", 2: "internal iliac", 3: "obturator"}


@dataclass(frozen=True)
class AnatomyParams:
    """Every random choice of one phantom anatomy (lengths in mm, volumes in cc, CT numbers in HU).

    Attributes
    ----------
    layout_seed
        Seed of the deterministic sub-choices (surface irregularity, bowel loop paths).
    scale
        Skeletal size factor (about 0.88-1.12, small to tall women) applied to bone and landmark positions.
    habitus
        0 = thin ... 1 = obese; drives the fat thicknesses (about 4-50 mm anteriorly and laterally,
        more anterior abdominal fat when obese), the muscular trunk's width and depth (up to 12 %
        and 7 % more when obese), how densely bowel fills the abdomen, and image noise.
    fat_anterior_mm, fat_lateral_mm, fat_posterior_mm
        Subcutaneous fat thickness at the front, sides and back.
    lean_width_factor, lean_depth_factor
        Left-right and anterior-posterior size factors of the muscular trunk.
    skin_mm
        Skin thickness.
    femoral_head_radius_mm, femoral_head_half_distance_mm
        Femoral head radius and |x| of each head centre.
    bifurcation_z_mm, aorta_radius_mm
        Height of the aortic bifurcation (about L4) and aortic radius.
    bladder_volume_cc, bladder_shift_x_mm, bladder_wall_mm
        Bladder filling (about 25 = empty ... 700 = very full), left-right shift, wall thickness.
    uterus_length_mm, uterus_width_mm, uterus_depth_mm
        Uterine body size (fundus to internal os, left-right, anterior-posterior).
    uterus_version_deg, uterus_lateral_deg, uterus_shift_x_mm
        Sagittal tilt of the uterine body from vertical (> 0 anteverted, < 0 retroverted; a full
        bladder tilts it further back), lateral tilt (> 0 towards the patient's left), and the
        left-right shift of cervix and uterus off the midline (a deviated uterus).
    cervix_length_mm, cervix_radius_mm, cervix_y_mm
        Cervix size and the AP position (y) of its centre.
    rectum_radius_mm, rectum_wall_mm, rectal_gas_cc, sigmoid_shift_mm
        Rectal calibre (about 12 = empty ... 27 = distended), wall, gas volume; left-right shift
        of the sigmoid loop.
    n_bowel_loops, oral_contrast
        Number of small-bowel loops to pack (fewer fit in a small abdomen; more in a lean one,
        where bowel rather than fat fills the upper pelvis); positive oral contrast in some loops.
    vessel_contrast
        Intravenous contrast (arteries and veins enhanced, organs slightly).
    artery_hu, vein_hu, blood_hu
        Enhanced arterial and venous blood, unenhanced blood.
    fat_hu, muscle_hu, uterus_hu, cervix_hu, urine_hu, node_hu, oral_contrast_hu
        Tissue CT numbers.
    lymph_nodes
        One ``(site, side, t, angle_deg, radius_mm)`` per node: site from ``NODE_SITES``, side
        +1 left / -1 right, ``t`` position (0..1) along the vessel, angle around it, radius.
    trabecular_hu, marrow_fat
        CT number of cancellous bone (about 130 = osteoporotic ... 300 = dense; denser under the
        cortex) and the fraction of the pelvic bones' cancellous bone that is fatty marrow (islands).
    noise_sd_hu
        Standard deviation (HU) of the CT noise in soft tissue, about 9-25 (0 renders without noise).
    metal_left, metal_right
        Hip prosthesis on that side (metal head, cup and stem, with streak artefacts).
    """

    layout_seed: int
    scale: float
    habitus: float
    fat_anterior_mm: float
    fat_lateral_mm: float
    fat_posterior_mm: float
    lean_width_factor: float
    lean_depth_factor: float
    skin_mm: float
    femoral_head_radius_mm: float
    femoral_head_half_distance_mm: float
    bifurcation_z_mm: float
    aorta_radius_mm: float
    bladder_volume_cc: float
    bladder_shift_x_mm: float
    bladder_wall_mm: float
    uterus_length_mm: float
    uterus_width_mm: float
    uterus_depth_mm: float
    uterus_version_deg: float
    uterus_lateral_deg: float
    uterus_shift_x_mm: float
    cervix_length_mm: float
    cervix_radius_mm: float
    cervix_y_mm: float
    rectum_radius_mm: float
    rectum_wall_mm: float
    rectal_gas_cc: float
    sigmoid_shift_mm: float
    n_bowel_loops: int
    oral_contrast: bool
    vessel_contrast: bool
    artery_hu: float
    vein_hu: float
    blood_hu: float
    fat_hu: float
    muscle_hu: float
    uterus_hu: float
    cervix_hu: float
    urine_hu: float
    node_hu: float
    oral_contrast_hu: float
    lymph_nodes: tuple[tuple[int, int, float, float, float], ...]
    trabecular_hu: float
    marrow_fat: float
    noise_sd_hu: float
    metal_left: bool
    metal_right: bool

    @property
    def metal(self) -> bool:
        """True when at least one hip prosthesis is present."""
        return self.metal_left or self.metal_right


def sample_anatomy(rng: np.random.Generator, *, metal: bool | None = None,
                   contrast: bool | None = None) -> AnatomyParams:
    """Draw one anatomy.

    Parameters
    ----------
    rng
        Source of every random choice; the same generator state gives the same anatomy.
    metal
        Force hip prostheses on (True) or off (False); None draws them (about 10 %).
    contrast
        Force intravenous contrast on or off; None draws it (about 50 %).
    """
    u = rng.uniform
    scale = float(np.clip(rng.normal(1.0, 0.045), 0.88, 1.12))
    habitus = float(rng.beta(1.6, 2.0))
    fat = 4.0 + 46.0 * habitus ** 1.3  # subcutaneous fat (mm): about 4 (thin) to 50 (obese)
    fill = float(np.exp(u(np.log(25.0), np.log(700.0))))
    anteverted = rng.random() < 0.7
    version = u(10.0, 90.0) if anteverted else u(-60.0, -5.0)
    draw_metal = rng.random() < 0.10
    metal_sides = int(rng.integers(0, 3))  # 0 left, 1 right, 2 both
    draw_contrast = rng.random() < 0.5
    n_nodes = int(rng.integers(2, 8))
    nodes = tuple((int(rng.integers(0, 4)), int(rng.choice([-1, 1])), round(float(u(0.2, 0.8)), 4),
                   round(float(u(0.0, 360.0)), 2), round(float(u(2.5, 5.0)), 3)) for _ in range(n_nodes))
    has_metal = draw_metal if metal is None else bool(metal)
    has_contrast = draw_contrast if contrast is None else bool(contrast)
    return AnatomyParams(
        layout_seed=int(rng.integers(0, 2 ** 31 - 1)),
        scale=scale,
        habitus=habitus,
        fat_anterior_mm=fat * float(u(1.05, 1.2)),
        fat_lateral_mm=fat * float(u(0.9, 1.1)),
        fat_posterior_mm=fat * float(u(0.6, 0.9)),
        lean_width_factor=float(u(0.95, 1.03) + 0.12 * habitus),
        lean_depth_factor=float(u(0.95, 1.04) + 0.07 * habitus),
        skin_mm=float(u(1.5, 2.5)),
        femoral_head_radius_mm=float(u(22.0, 26.0)),
        femoral_head_half_distance_mm=88.0 * scale * float(u(0.97, 1.03)),
        bifurcation_z_mm=float(u(160.0, 180.0)) * scale,
        aorta_radius_mm=float(u(7.5, 10.0)),
        bladder_volume_cc=fill,
        bladder_shift_x_mm=float(u(-6.0, 6.0)),
        bladder_wall_mm=float(2.0 + 3.0 * (1.0 - (fill - 25.0) / 675.0)),
        uterus_length_mm=float(u(68.0, 95.0)),
        uterus_width_mm=float(u(48.0, 64.0)),
        uterus_depth_mm=float(u(34.0, 48.0)),
        uterus_version_deg=float(version),
        uterus_lateral_deg=float(u(-25.0, 25.0)),
        uterus_shift_x_mm=float(u(-14.0, 14.0)),
        cervix_length_mm=float(u(28.0, 40.0)),
        cervix_radius_mm=float(u(14.0, 20.0)),
        cervix_y_mm=float(u(10.0, 20.0)) * scale,
        rectum_radius_mm=float(u(12.0, 27.0)),
        rectum_wall_mm=float(u(2.5, 4.0)),
        rectal_gas_cc=0.0 if rng.random() < 0.3 else float(u(2.0, 80.0)),
        sigmoid_shift_mm=float(u(-8.0, 10.0)),
        n_bowel_loops=int(rng.integers(55, 80) - 20 * habitus),
        oral_contrast=bool(rng.random() < 0.3),
        vessel_contrast=has_contrast,
        artery_hu=float(u(160.0, 250.0)),
        vein_hu=float(u(110.0, 170.0)),
        blood_hu=float(u(35.0, 50.0)),
        fat_hu=float(u(-112.0, -88.0)),
        muscle_hu=float(u(42.0, 58.0)),
        uterus_hu=float(u(42.0, 56.0)),
        cervix_hu=float(u(36.0, 48.0)),
        urine_hu=float(u(0.0, 14.0)),
        node_hu=float(u(30.0, 48.0)),
        oral_contrast_hu=float(u(180.0, 300.0)),
        lymph_nodes=nodes,
        trabecular_hu=float(u(130.0, 300.0)),
        marrow_fat=float(u(0.0, 0.3)),
        noise_sd_hu=float(u(9.0, 15.0) + 10.0 * habitus),  # larger patients are noisier
        metal_left=has_metal and metal_sides in (0, 2),
        metal_right=has_metal and metal_sides in (1, 2),
    )


def pelvis_extent_mm() -> tuple[float, float]:
    """(z_min, z_max) in mm, anatomy frame, of what a pelvic planning CT covers.

    From below the ischial tuberosities and lesser trochanters (upper femora) to above the
    aortic bifurcation (L4), for every anatomy ``sample_anatomy`` can draw.
    """
    return -115.0, 215.0


def body_half_extent_mm(params: AnatomyParams) -> tuple[float, float]:
    """(half LR width, half AP depth) in mm of the body outline over ``pelvis_extent_mm()``.

    Both are measured from the anatomy origin (``max |x|`` and ``max |y|`` of the outline), so a
    field of view centred on the anatomy origin with these half sizes contains the body. The
    couch (up to 75 mm deep with its mattress, directly under the body on its side) is not included.
    """
    lay = build_layout(params)
    half_x, y_front, y_back = body_extremes(lay, params, *pelvis_extent_mm())
    return float(half_x), float(max(abs(y_front), abs(y_back)))


@dataclass
class RenderedPhantom:
    """A rendered phantom on a grid.

    Attributes
    ----------
    hu
        CT numbers in HU, float32 ``[k, j, i]`` on the grid.
    structures
        Truth masks, bool ``[k, j, i]`` on the grid (a voxel belongs to a structure when its
        centre lies inside it): see ``STRUCTURE_NAMES``.
    labels
        The tissue label (``tissues.Tissue``) of every voxel, uint8 ``[k, j, i]``: what the CT
        numbers and the masks were derived from.
    """

    hu: np.ndarray
    structures: dict[str, np.ndarray]
    labels: np.ndarray


def render_phantom(grid: Grid, params: AnatomyParams, *, position: str,
                   anatomy_offset_mm: tuple[float, float, float], rng: np.random.Generator) -> RenderedPhantom:
    """Render one anatomy on a grid.

    Parameters
    ----------
    grid
        Output grid (LPS, any direction and spacing).
    params
        The anatomy, from ``sample_anatomy``.
    position
        DICOM PatientPosition (HFS, FFS, HFP, FFP); decides on which side of the body the couch
        is (posterior for supine, anterior for prone).
    anatomy_offset_mm
        LPS position (mm) of the anatomy origin (midway between the femoral head centres).
    rng
        Source of the texture, noise and artefact randomness (same state, same image).

    Returns
    -------
    RenderedPhantom
        HU image and truth masks on ``grid``, arrays indexed ``[k, j, i]``.
    """
    if position not in PATIENT_POSITIONS:
        raise ValueError(f"position must be one of {PATIENT_POSITIONS}, got {position!r}")
    lay = build_layout(params)
    canvas = Canvas(grid, anatomy_offset_mm)
    painter = Painter(canvas)
    couch = couch_contact(lay, params, position)
    body = paint_body(painter, lay, params, couch)
    paint_muscles(painter, lay, params, canvas)
    paint_muscle_compartments(painter, lay, params, canvas)
    paint_iliacus(painter, lay, canvas)
    paint_vessels(painter, canvas, lay)
    paint_viscera(painter, canvas, lay, params, up=-1.0 if position.endswith("S") else 1.0)
    field, extras = build_bones(canvas, lay, params)
    paint_bones(painter, field, extras, params)
    del field
    paint_prostheses(painter, canvas, lay, params)
    paint_nodes(painter, canvas, lay, params)
    labels = painter.labels
    labels[~body] = T.Tissue.AIR

    z_lo, z_hi = canvas.z_range()
    band = (np.array([-300.0, couch.y - 90.0, z_lo - 1.0]), np.array([300.0, couch.y + 90.0, z_hi + 1.0]))
    win = canvas.window(*band)
    if win is not None:
        # The soft tissue on the couch side is pressed flat onto it (fat only, never organs).
        couch = press_body(painter, win, body[win.sl], couch)
        repaint_skin(painter, win, body[win.sl], couch, params.skin_mm)
        paint_couch(painter, win, body[win.sl], couch)
    del win

    ctv = build_ctv(canvas, labels, lay, params)

    spacing_kji = (grid.spacing[2], grid.spacing[1], grid.spacing[0])
    fine = correlated_noise(rng, grid.shape, spacing_kji, 1.0)
    labels[(labels == T.Tissue.RECTUM_CONTENT) & (fine > 1.5)] = T.Tissue.RECTUM_GAS
    labels[(labels == T.Tissue.BOWEL_FECES) & (fine > 1.2)] = T.Tissue.BOWEL_GAS
    base, amp_fine, amp_coarse = T.hu_tables(params)
    hu = base[labels]
    hu += amp_fine[labels] * fine
    del fine
    coarse = coarse_noise(rng, grid.shape, spacing_kji, 4.0)
    hu += amp_coarse[labels] * coarse
    # Fibrous septa of fat: thin bright lines along the zero level set of the coarse field.
    hu += T.septa_table()[labels] * fat_septa(coarse)
    del coarse

    structures = _structures(labels, body, extras, ctv)
    del extras

    hx, hr = lay.head_x, lay.head_r
    heads = [np.array([hx, 0.0]), np.array([-hx, 0.0])]
    if params.metal:
        sources = [h for h, on in zip(heads, (params.metal_left, params.metal_right)) if on]
        others = [h for h, on in zip(heads, (params.metal_left, params.metal_right)) if not on]
        streaks(canvas, sources, others, rng, body, 450.0, (-hr - 15.0, hr + 15.0), hu)
    else:
        streaks(canvas, [], heads, rng, body, 30.0, (-0.8 * hr, 0.8 * hr), hu)
    if params.noise_sd_hu > 0:
        hu += ct_noise(rng, canvas, spacing_kji, body, params.noise_sd_hu, params.habitus)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return RenderedPhantom(hu=hu, structures=structures, labels=labels)


def _structures(labels: np.ndarray, body: np.ndarray, extras: dict, ctv: np.ndarray) -> dict[str, np.ndarray]:
    def of(tissues):
        return T.lookup(tissues)[labels]

    bones = of(T.BONE)
    return {
        "CTV": ctv,
        "Bladder": of(T.BLADDER),
        "Rectum": of(T.RECTUM),
        "Bowel": of(T.BOWEL),
        "Femur_Head_L": extras["head_L"] & bones,
        "Femur_Head_R": extras["head_R"] & bones,
        "Bones": bones,
        "Body": body.copy(),
        "Uterus": of(T.UTERUS),
        "Cervix": labels == T.Tissue.CERVIX,
        "Vagina": labels == T.Tissue.VAGINA,
        "Vessels_Iliac": of(T.ILIAC_VESSELS),
        "Lymph_Nodes": labels == T.Tissue.NODE,
    }
