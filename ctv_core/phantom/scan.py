"""The phantom's virtual scan: choosing the CT grid, rendering the anatomy on it, writing the files.

``make_phantom`` is what ``ctv phantom`` runs. The anatomy (what the patient looks like) lives
in :mod:`ctv_core.phantom.anatomy`; this module decides how the patient is scanned: patient
position, field of view and matrix, pixel spacing, slice thickness and count, an optional
oblique slice orientation, and where the patient lies relative to the scanner's origin.

Every choice is drawn from ``numpy.random.default_rng(seed)`` unless given, so pixel data,
geometry and masks are identical for a given seed and version. UIDs and dates are fresh on
every run (two phantoms must never collide in a PACS or a Slicer DICOM database).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..atomic_files import atomic_folder
from ..dicom.ct_series import PatientStudy
from ..dicom.ct_writer import SeriesIdentity, write_ct_series
from ..dicom.series import load_ct_series
from ..errors import PhantomError
from ..geometry import PATIENT_POSITION_IOP, Grid
from ..structures.label_maps import write_tissue_labels
from ..structures.mask_files import write_mask
from ..structures.rtstruct import write_rtstruct
from .anatomy import PHANTOM_VERSION, AnatomyParams, body_half_extent_mm, pelvis_extent_mm, sample_anatomy
from .appearance import THICK_MM, check_appearance, render_appearance
from .tissues import tissue_legend

SLICE_THICKNESSES_MM = (1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
MATRICES = (256, 512)


@dataclass(frozen=True)
class ScanSettings:
    """How the phantom is scanned. ``None`` fields are drawn from the seed.

    Attributes
    ----------
    matrix
        Rows and columns of each slice (256 or 512).
    slices
        Number of slices; default covers the pelvic planning CT range.
    position
        DICOM PatientPosition: HFS, FFS, HFP or FFP.
    slice_thickness_mm
        Slice spacing = thickness, mm (1.25 to 5).
    pixel_spacing_mm
        (row spacing, column spacing) in mm, DICOM PixelSpacing order; default: the field of
        view (drawn to hold the body) divided by the matrix, the same for rows and columns.
    oblique_deg
        Rotation of the slice plane about the patient's left-right axis, degrees.
    metal, contrast
        Hip prosthesis streaks, contrast-enhanced vessels; None = drawn from the seed.
    appearance
        ``"realistic"``, or a shift of the image unlike any realistic phantom (kernel, noise,
        contrast, HU offset, thick slices, field of view: :mod:`ctv_core.phantom.appearance`);
        ``thick_5mm`` scans 5 mm slices.
    """

    matrix: int = 512
    slices: int | None = None
    position: str = "HFS"
    slice_thickness_mm: float | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    oblique_deg: float = 0.0
    metal: bool | None = None
    contrast: bool | None = None
    appearance: str = "realistic"

    def validate(self) -> None:
        if self.matrix not in MATRICES:
            raise PhantomError(f"--matrix must be 256 or 512, not {self.matrix}.")
        if self.position not in PATIENT_POSITION_IOP:
            raise PhantomError(
                f"Unknown patient position '{self.position}'; use one of {', '.join(PATIENT_POSITION_IOP)}."
            )
        if self.slices is not None and not 1 <= self.slices <= 2000:
            raise PhantomError(f"--slices must be between 1 and 2000, not {self.slices}.")
        if self.slice_thickness_mm is not None and not 0.5 <= self.slice_thickness_mm <= 10:
            raise PhantomError(f"Slice thickness must be 0.5 to 10 mm, not {self.slice_thickness_mm}.")
        if self.pixel_spacing_mm is not None and not all(0.2 <= s <= 5 for s in self.pixel_spacing_mm):
            raise PhantomError(f"Pixel spacing must be 0.2 to 5 mm, not {self.pixel_spacing_mm}.")
        if not -45 <= self.oblique_deg <= 45:
            raise PhantomError(f"Oblique angle must be within +-45 degrees, not {self.oblique_deg}.")
        try:
            check_appearance(self.appearance)
        except ValueError as exc:
            raise PhantomError(f"--appearance: {exc}.") from exc
        if self.appearance == "thick_5mm" and self.slice_thickness_mm not in (None, THICK_MM):
            raise PhantomError(f"--appearance thick_5mm makes {THICK_MM:g} mm slices; leave out --slice-thickness.")


@dataclass(frozen=True)
class Phantom:
    """What ``make_phantom`` wrote.

    Attributes
    ----------
    ct_dir
        Folder of the CT series (``OUT_DIR/ct``).
    masks
        Structure name -> NIfTI path (``OUT_DIR/masks/<name>.nii.gz``), on the CT grid.
    truth_rtstruct
        ``OUT_DIR/truth.dcm``: every structure as an RTSTRUCT on the CT.
    tissue_labels
        ``OUT_DIR/tissue_labels.nii.gz`` (uint8 tissue label per CT voxel) with its legend
        ``tissue_labels.json`` beside it (:mod:`ctv_core.structures.label_maps`).
    grid
        The CT grid (LPS).
    anatomy
        The drawn anatomy parameters.
    """

    ct_dir: Path
    masks: dict[str, Path]
    truth_rtstruct: Path
    tissue_labels: Path
    grid: Grid
    anatomy: AnatomyParams


def plan_scan(seed: int, settings: ScanSettings) -> tuple[Grid, AnatomyParams, tuple[float, float, float],
                                                          np.random.Generator]:
    """Draw the anatomy and the scan geometry for ``seed``.

    Returns the CT grid, the anatomy, the anatomy's offset in patient coordinates (LPS mm) and
    the random generator positioned for rendering.
    """
    settings.validate()
    rng = np.random.default_rng(seed)
    anatomy = sample_anatomy(rng, metal=settings.metal, contrast=settings.contrast)
    half_lr, half_ap = body_half_extent_mm(anatomy)

    if settings.pixel_spacing_mm is None:
        fov = float(np.clip(rng.uniform(2 * half_lr + 60, 650), 360, 666))
        pixel_spacing = (fov / settings.matrix, fov / settings.matrix)
    else:
        pixel_spacing = tuple(float(s) for s in settings.pixel_spacing_mm)
    thickness = settings.slice_thickness_mm or float(rng.choice(SLICE_THICKNESSES_MM))
    if settings.appearance == "thick_5mm":
        thickness = THICK_MM  # drawn all the same, so the anatomy and the couch are the realistic phantom's
    z_lo, z_hi = pelvis_extent_mm()
    n_slices = settings.slices or int(math.ceil((z_hi - z_lo) / thickness)) + 1

    # Couch and table: the patient's offset from the scanner origin (table height, lateral shift,
    # couch longitudinal position as real scanners report it).
    offset = (float(rng.normal(0, 8)), float(rng.uniform(-25, 15)), float(rng.uniform(-900, 300)))
    centre = np.array([offset[0], offset[1], offset[2] + 0.5 * (z_lo + z_hi)])

    iop = PATIENT_POSITION_IOP[settings.position]
    a = math.radians(settings.oblique_deg)
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    row, col = rot @ np.asarray(iop[:3]), rot @ np.asarray(iop[3:])
    direction = np.column_stack([row, col, np.cross(row, col)])
    spacing = (pixel_spacing[1], pixel_spacing[0], thickness)  # (i, j, k): columns, rows, slices
    size = (settings.matrix, settings.matrix, n_slices)
    half = direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    grid = Grid(size=size, spacing=spacing, origin=tuple(float(v) for v in centre - half),
                direction=tuple(float(v) for v in direction.flatten()))
    return grid, anatomy, offset, rng


def make_phantom(
    out_dir: str | Path,
    seed: int = 0,
    settings: ScanSettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Phantom:
    """Render a synthetic pelvic CT for ``seed`` and write it to ``out_dir``.

    Writes ``OUT_DIR/ct/*.dcm`` (one CT Image Storage series), ``OUT_DIR/truth.dcm`` (an
    RTSTRUCT of every structure, referencing that CT), ``OUT_DIR/masks/<ROI>.nii.gz`` (uint8
    masks on the CT grid) and ``OUT_DIR/tissue_labels.nii.gz`` with ``tissue_labels.json`` (the
    tissue label map the CT was rendered from, for appearance-randomised training). The folder is assembled under a temporary name and renamed,
    so an interrupted run leaves nothing half-written. ``out_dir`` must not exist or be empty.
    """
    settings = settings or ScanSettings()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PhantomError(f"'{out_dir}' exists and is not empty; choose a new folder for the phantom.")
    grid, anatomy, offset, rng = plan_scan(seed, settings)
    rendered = render_appearance(grid, anatomy, settings.appearance, position=settings.position,
                                 anatomy_offset_mm=offset, rng=rng)

    with atomic_folder(out_dir) as staging:
        identity = SeriesIdentity(
            patient=PatientStudy(patient_name=f"PHANTOM^CTV^{seed}", patient_id=f"CTVPH{seed:06d}", patient_sex="F",
                                 study_id="1", study_description="Synthetic pelvic CT"),
            patient_position=settings.position,
            contrast_agent="Iodinated contrast (synthetic)" if anatomy.vessel_contrast else None,
        )
        write_ct_series(grid.image(rendered.hu), staging / "ct", identity, progress=progress)
        (staging / "masks").mkdir()
        truth = {name: grid.image(mask.astype(np.uint8)) for name, mask in rendered.structures.items()}
        for name, mask in truth.items():
            write_mask(mask, staging / "masks" / f"{name}.nii.gz")
        source = f"ctv_core {__version__} phantom {PHANTOM_VERSION}"
        labels_path, _ = write_tissue_labels(grid.image(rendered.labels), tissue_legend(source), staging)
        ct = load_ct_series(staging / "ct")
        write_rtstruct(ct, truth, staging / "truth.dcm", algorithm=f"{source} (truth)",
                       label="TRUTH", series_description=f"Phantom truth structures, seed {seed}"
                       + ("" if settings.appearance == "realistic" else f", appearance {settings.appearance}"))
    masks = {name: out_dir / "masks" / f"{name}.nii.gz" for name in rendered.structures}
    return Phantom(ct_dir=out_dir / "ct", masks=masks, truth_rtstruct=out_dir / "truth.dcm",
                   tissue_labels=out_dir / labels_path.name, grid=grid, anatomy=anatomy)
