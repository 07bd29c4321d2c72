"""Where everything is: landmarks, profiles and vessel/organ paths derived from ``AnatomyParams``.

All numbers are in the anatomy frame (LPS mm, origin midway between the femoral head centres,
+x patient left, +y posterior, +z head). Nothing here touches a grid; the painters in
``organs.py`` and ``skeleton.py`` and the CTV rules read these plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .shapes import catmull_rom, rotation_x

#: z knots (mm) of the trunk profiles, before skeletal scaling.
PROFILE_Z = np.array([-130, -90, -60, -30, 0, 30, 60, 90, 120, 150, 180, 220, 320], dtype=float)
#: Half left-right width (mm) of the lean (under-fat) trunk at PROFILE_Z.
LEAN_HALF_WIDTH = np.array([112, 126, 138, 146, 150, 146, 142, 140, 138, 132, 126, 124, 124], dtype=float)
#: Half anterior-posterior depth (mm) of the lean trunk at PROFILE_Z.
LEAN_HALF_DEPTH = np.array([76, 80, 83, 85, 86, 87, 89, 90, 91, 91, 91, 91, 91], dtype=float)
#: y (mm) of the flat lean back surface (muscle under the posterior fat).
LEAN_BACK_Y = 100.0
#: Lowest z of the trunk (perineum), before scaling.
TRUNK_BOTTOM_Z = -100.0

#: Inner x (mm) of the bony pelvic sidewall versus z, before scaling.
SIDEWALL_Z = np.array([-70, -20, 10, 40, 70, 110], dtype=float)
SIDEWALL_X = np.array([44, 52, 56, 60, 66, 70], dtype=float)

#: Sacral centreline (mid-body) control points (x, y, z), half width and half depth (mm), S1..coccyx.
SACRUM_PTS = np.array([[0, 50, 110], [0, 70, 84], [0, 85, 58], [0, 93, 36], [0, 93, 17], [0, 80, -10]], float)
SACRUM_HALF_WIDTH = np.array([47, 40, 31, 22, 14, 7], float)
SACRUM_HALF_DEPTH = np.array([19, 15, 12, 9, 7, 5], float)


@dataclass
class Vessel:
    """A vessel branch: dense polyline points (N, 3), radii (N,), tissue kind and CTV role."""

    name: str
    pts: np.ndarray
    radii: np.ndarray
    artery: bool
    iliac: bool
    nodal: str = ""           # "common" | "external" | "internal" | "" (not a nodal landmark)


@dataclass
class Layout:
    """Derived geometry of one anatomy (plain numbers and small arrays, anatomy frame, mm)."""

    s: float
    width_factor: float       # left-right size of the muscular trunk relative to the average (habitus)
    head_x: float
    head_r: float
    body_z_table: np.ndarray = field(repr=False)
    lean_a: np.ndarray = field(repr=False)
    lean_b: np.ndarray = field(repr=False)
    back_y: float = 0.0
    fat_ant: float = 0.0
    fat_lat: float = 0.0
    fat_post: float = 0.0
    trunk_bottom_z: float = 0.0
    pannus: float = 0.0       # extra anterior abdominal fat (fraction of fat_ant) when obese
    vessels: list[Vessel] = field(default_factory=list)
    bladder_centre: np.ndarray = None
    bladder_radii: np.ndarray = None
    cervix_centre: np.ndarray = None
    cervix_axis: np.ndarray = None
    uterus_centre: np.ndarray = None
    uterus_axis: np.ndarray = None
    uterus_radii: np.ndarray = None
    vagina_pts: np.ndarray = None
    vagina_mid_z: float = 0.0
    rectum_pts: np.ndarray = None
    rectum_radii: np.ndarray = None
    sigmoid_pts: np.ndarray = None
    sigmoid_radii: np.ndarray = None
    rectosigmoid_z: float = 0.0
    bifurcation_z: float = 0.0
    sacrum_pts: np.ndarray = None
    sacrum_half_width: np.ndarray = None
    sacrum_half_depth: np.ndarray = None

    def sidewall_x(self, z):
        """Inner |x| (mm) of the bony pelvic sidewall at anatomy height ``z``."""
        return np.interp(z, SIDEWALL_Z * self.s, SIDEWALL_X * self.s).astype(np.float32)

    def sacrum_at(self, z):
        """Sacral centreline y, half width and half axial depth (mm) at height ``z`` (arrays)."""
        zz = self.sacrum_pts[::-1, 2]
        y = np.interp(z, zz, self.sacrum_pts[::-1, 1])
        w = np.interp(z, zz, self.sacrum_half_width[::-1])
        d = np.interp(z, zz, self.sacrum_axial_depth[::-1])
        return y.astype(np.float32), w.astype(np.float32), d.astype(np.float32)

    @property
    def sacrum_axial_depth(self) -> np.ndarray:
        # An axial cut through a tilted plate is longer than its thickness by 1/cos(tilt).
        p = self.sacrum_pts
        tang = np.gradient(p, axis=0)
        cos = np.abs(tang[:, 2]) / np.linalg.norm(tang, axis=1)
        return self.sacrum_half_depth / np.clip(cos, 0.45, 1.0)


def _mirror(points, side: int) -> np.ndarray:
    p = np.array(points, dtype=float)
    p[:, 0] *= side
    return p


def build_layout(params) -> Layout:
    """Derive the geometry of one anatomy from its ``AnatomyParams``."""
    s = params.scale
    lay = Layout(
        s=s,
        width_factor=params.lean_width_factor,
        head_x=params.femoral_head_half_distance_mm,
        head_r=params.femoral_head_radius_mm,
        body_z_table=PROFILE_Z * s,
        lean_a=LEAN_HALF_WIDTH * s * params.lean_width_factor,
        lean_b=LEAN_HALF_DEPTH * s * params.lean_depth_factor,
        back_y=LEAN_BACK_Y * s,
        fat_ant=params.fat_anterior_mm,
        fat_lat=params.fat_lateral_mm,
        fat_post=params.fat_posterior_mm,
        trunk_bottom_z=TRUNK_BOTTOM_Z * s,
        pannus=0.6 * params.habitus ** 2,
    )
    lay.sacrum_pts = SACRUM_PTS * s
    lay.sacrum_half_width = SACRUM_HALF_WIDTH * s
    lay.sacrum_half_depth = SACRUM_HALF_DEPTH * s
    lay.bifurcation_z = params.bifurcation_z_mm
    _vessels(lay, params)
    _pelvic_organs(lay, params)
    return lay


def _vessels(lay: Layout, params) -> None:
    s, bz = lay.s, lay.bifurcation_z
    ra = params.aorta_radius_mm
    dense = []

    def add(name, pts, radii, artery, iliac, nodal=""):
        p, r = catmull_rom(np.asarray(pts, float), radii, step_mm=4.0)
        dense.append(Vessel(name, p, r, artery, iliac, nodal))

    add("aorta", [[10, 8, 340], [10, 8, 250], [9, 9, bz]], [ra, ra, ra * 0.95], True, False)
    add("ivc", [[-20, 12, 340], [-20, 13, 250], [-14, 20, bz - 20]], [11, 11, 10], False, False)
    ci_z = bz - 58 * s
    for side, tag in ((1, "L"), (-1, "R")):
        m = lambda pts: _mirror(np.asarray(pts, float) * [1, s, 1], side)  # noqa: E731
        add(f"cia_{tag}", np.vstack([[9, 9, bz], m([[24, 12, bz - 28], [38 * s, 14, ci_z]])]),
            [ra * 0.6, 5.2, 4.8], True, True, "common")
        add(f"eia_{tag}", m([[38 * s, 14, ci_z], [50, 2, 90 * s], [62, -17, 60 * s], [66, -40, 35 * s],
                             [70, -51, 15 * s]]), [4.5, 4.2, 4.0, 4.0, 4.0], True, True, "external")
        add(f"iia_{tag}", m([[38 * s, 14, ci_z], [45, 30, 95 * s], [50, 42, 75 * s], [52, 46, 50 * s]]),
            [4.2, 3.8, 3.2, 2.5], True, True, "internal")
        add(f"fa_{tag}", m([[70, -51, 15 * s], [72, -50, -30 * s], [78, -42, -140 * s], [82, -30, -300]]),
            [4.0, 4.0, 3.8, 3.5], True, False)
        add(f"eiv_{tag}", m([[40 * s, 24, ci_z - 4], [46, 12, 90 * s], [54, -8, 60 * s], [57, -33, 35 * s],
                             [60, -45, 15 * s]]), [6.0, 5.5, 5.5, 5.5, 5.5], False, True, "external")
        add(f"iiv_{tag}", m([[40 * s, 24, ci_z - 4], [44, 38, 95 * s], [48, 50, 75 * s], [50, 54, 50 * s]]),
            [5.5, 5.0, 4.5, 3.5], False, True, "internal")
        add(f"fv_{tag}", m([[60, -45, 15 * s], [62, -44, -30 * s], [68, -38, -140 * s], [72, -28, -300]]),
            [5.5, 5.5, 5.0, 4.5], False, False)
    # Common iliac veins join the IVC at L5, lower than and to the right of the arterial bifurcation.
    add("civ_R", [[-14, 20, bz - 20], [-30, 23, bz - 42], [-40 * s, 24, ci_z - 4]], [8, 7, 6.5], False, True,
        "common")
    add("civ_L", [[-14, 20, bz - 20], [6, 24, bz - 32], [26, 25, bz - 46], [40 * s, 24, ci_z - 4]],
        [8, 7, 6.5, 6.5], False, True, "common")
    lay.vessels = dense


def _pelvic_organs(lay: Layout, params) -> None:
    s = lay.s
    # Bladder: base fixed behind the symphysis at the bladder neck; filling grows it up and out.
    v = params.bladder_volume_cc * 1000.0
    fill = np.clip((params.bladder_volume_cc - 25.0) / 675.0, 0.0, 1.0)
    ratios = np.array([1.0, 0.42 + 0.1 * fill, 0.55 + 0.5 * fill])  # LR : AP : SI
    k = (v / (4.0 / 3.0 * np.pi * np.prod(ratios))) ** (1.0 / 3.0)
    radii = ratios * k
    base_z = -6.0 * s
    front_y = -50.0 * s
    lay.bladder_radii = radii
    lay.bladder_centre = np.array([params.bladder_shift_x_mm, front_y + radii[1], base_z + radii[2]])

    # Cervix: axis points from the external os (inferior-posterior) up and forward.
    cl, cr = params.cervix_length_mm, params.cervix_radius_mm
    cervix_tilt = 25.0  # degrees from +z towards anterior
    axis = rotation_x(cervix_tilt).T @ np.array([0.0, 0.0, 1.0])
    axis = np.array([0.0, -abs(axis[1]), abs(axis[2])])
    centre = np.array([params.uterus_shift_x_mm, params.cervix_y_mm, 18.0 * s])
    # Keep the cervix behind the bladder base.
    bc, br = lay.bladder_centre, lay.bladder_radii
    for _ in range(40):
        front = centre + np.array([0.0, -cr - 3.0, 0.0])
        if np.sum(((front - bc) / br) ** 2) > 1.0:
            break
        centre = centre + np.array([0.0, 1.0, 0.0])
    lay.cervix_centre, lay.cervix_axis = centre, axis
    internal_os = centre + axis * cl / 2

    # Uterus body: pear-shaped ellipsoid hinged at the internal os, ante- or retroverted; a full
    # bladder rotates it backwards (more upright) until it no longer lies inside the bladder.
    half_len = params.uterus_length_mm / 2
    uradii = np.array([params.uterus_width_mm / 2, params.uterus_depth_mm / 2, half_len])
    version = params.uterus_version_deg
    rng = np.random.default_rng(params.layout_seed + 7)
    surf = rng.normal(size=(200, 3))
    surf /= np.linalg.norm(surf, axis=1, keepdims=True)
    for _ in range(40):
        ax = _uterus_axis(version, params.uterus_lateral_deg)
        uc = internal_os + ax * (half_len * 0.92)
        frame = _frame(ax)
        pts = uc + (surf * uradii) @ frame
        inside = np.sum(((pts - bc) / (br + 2.0)) ** 2, axis=1) < 1.0
        if inside.mean() < 0.04 or version < -40:
            break
        version -= 5.0
    lay.uterus_axis, lay.uterus_centre, lay.uterus_radii = ax, uc, uradii

    # Vagina: from the fornices around the external os down behind the bladder base and urethra.
    os_ = centre - axis * cl / 2
    # The vaginal vault follows a deviated cervix; the lower vagina stays in the midline.
    lay.vagina_pts = np.array([os_ + [0, 2, 6], os_ + [0, 1, -4], [0.4 * os_[0], os_[1] - 12, -25 * s],
                               [0, -6, -48 * s], [0, -16 * s, -75 * s]])
    lay.vagina_mid_z = float(0.5 * (lay.vagina_pts[0, 2] + lay.vagina_pts[-1, 2]))

    # Rectum (anal canal to the rectosigmoid at S3) and the sigmoid looping up and to the left.
    rr = params.rectum_radius_mm
    lay.rectum_pts = np.array([[0, 28, -82], [0, 36, -50], [0, 48, -18], [0, 56, 14], [2, 56, 42], [5, 44, 72]],
                              float) * [1, s, s]
    lay.rectum_radii = np.array([7, 12, rr * 0.9, rr, rr * 0.95, rr * 0.85])
    lay.rectosigmoid_z = float(lay.rectum_pts[-1, 2])
    sx = params.sigmoid_shift_mm
    lay.sigmoid_pts = np.array([[5, 44, 72], [22, 30, 88], [38 + sx, 8, 92], [40 + sx, -12, 108],
                                [20 + sx, 0, 122], [35, 25, 140], [62, 40, 170], [75, 42, 220], [80, 45, 340]],
                               float) * [1, s, s]
    lay.sigmoid_radii = np.array([rr * 0.85, 15, 15, 15, 16, 17, 19, 20, 20])


def _uterus_axis(version_deg: float, lateral_deg: float) -> np.ndarray:
    # version > 0 tips the fundus anteriorly (-y), < 0 posteriorly; lateral tilts towards +x.
    t, l_ = np.deg2rad(version_deg), np.deg2rad(lateral_deg)
    ax = np.array([np.sin(l_), -np.sin(t) * np.cos(l_), np.cos(t) * np.cos(l_)])
    return ax / np.linalg.norm(ax)


def _frame(axis) -> np.ndarray:
    from .shapes import frame_from_axis

    return frame_from_axis(axis)


def psoas_paths(lay: Layout) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centre lines and radii (mm) of both psoas muscles (painted in ``body.paint_muscles``)."""
    s = lay.s
    out = []
    for side in (1, -1):
        pts = np.array([[30, 45, 340], [38, 48, 175], [45, 46, 140], [55, 37, 115], [68, 22, 90], [78, 2, 60],
                        [84, -24, 35], [88, -37, 18], [86, -32, -20], [100, 2, -60]], float) * s * [side, 1, 1]
        out.append((pts, np.array([13, 16, 18, 19, 20, 19, 17, 16, 15, 9]) * s))
    return out
