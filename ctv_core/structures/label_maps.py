"""Tissue label maps: one uint8 tissue label per CT voxel, with a legend saying what each label is.

A label map is what appearance-randomised training synthesises images from (SynthSeg's idea:
segmentation networks trained on images drawn from label maps with random intensities learn
shape, not one scanner's look). ``ctv phantom`` writes one beside its CT; ``ctv dataset build
--tissue-labels`` stores it with the case.

Files (both written together, read together)::

    tissue_labels.nii.gz   uint8 [k, j, i] on the CT grid (SimpleITK geometry, LPS)
    tissue_labels.json     the legend

Legend (JSON object)::

    {"format": "ctv-tissue-labels", "format_version": 1, "source": "ctv_core phantom 2",
     "labels": [{"value": 0, "name": "AIR", "class": "air"}, ...]}

Each label names the *tissue class* it belongs to, from :data:`TISSUE_CLASSES`, the shared
vocabulary between whoever paints label maps (the phantom) and whoever synthesises images from
them (training), so neither needs the other's label numbering. Fat and the fat around the
rectum are two labels of class ``fat``; a synthesiser draws one CT number per class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import StructureSetError
from ..geometry import Grid
from .writer_checks import check_mask_on_grid

FORMAT = "ctv-tissue-labels"
FORMAT_VERSION = 1
LABELS_FILE = "tissue_labels.nii.gz"
LEGEND_FILE = "tissue_labels.json"

#: Tissue classes, in a fixed order (a synthesiser's arrays follow it). CT numbers vary
#: independently between classes from scan to scan (contrast phase, calibration, patient).
TISSUE_CLASSES = (
    "air",              # outside air and gas in the gut
    "foam",             # couch core, mattress
    "couch_shell",      # carbon-fibre skins of the tabletop
    "fat",
    "muscle",
    "soft_tissue",      # skin, organ walls, nodes, vagina, cartilage and discs, other soft tissue
    "uterus",
    "cervix",
    "urine",
    "artery",
    "vein",
    "bowel_content",    # fluid and faeces
    "oral_contrast",
    "cortical_bone",
    "trabecular_bone",
    "marrow",           # fatty marrow
    "csf",              # thecal sac and sacral canal
    "metal",
)


@dataclass(frozen=True)
class TissueLabel:
    """One entry of a legend: the label value (0-255), the tissue's name and its class."""

    value: int
    name: str
    tissue_class: str


@dataclass(frozen=True)
class TissueLegend:
    """What the values of a tissue label map mean.

    Attributes
    ----------
    labels
        One entry per label value in use, by increasing value.
    source
        Who painted the map (e.g. ``"ctv_core phantom 2"``).
    """

    labels: tuple[TissueLabel, ...]
    source: str = ""

    def __post_init__(self) -> None:
        values = [t.value for t in self.labels]
        if not values or len(set(values)) != len(values) or any(not 0 <= v <= 255 for v in values):
            raise ValueError(f"a tissue legend needs distinct label values within 0..255, not {values}")
        unknown = sorted({t.tissue_class for t in self.labels} - set(TISSUE_CLASSES))
        if unknown:
            raise ValueError(f"unknown tissue class(es) {', '.join(unknown)}; known: {', '.join(TISSUE_CLASSES)}")

    @property
    def classes(self) -> tuple[str, ...]:
        """The tissue classes the legend uses, in :data:`TISSUE_CLASSES` order."""
        used = {t.tissue_class for t in self.labels}
        return tuple(c for c in TISSUE_CLASSES if c in used)

    def class_table(self) -> np.ndarray:
        """int16 lookup table over label values 0..255: index into :attr:`classes`, -1 for unused values."""
        table = np.full(256, -1, dtype=np.int16)
        order = {c: n for n, c in enumerate(self.classes)}
        for t in self.labels:
            table[t.value] = order[t.tissue_class]
        return table

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "source": self.source,
                "labels": [{"value": t.value, "name": t.name, "class": t.tissue_class} for t in self.labels]}

    def to_json(self) -> str:
        """Canonical JSON (what the files and the training set store)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> TissueLegend:
        """The legend from its JSON object; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} legend")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"legend version {data.get('format_version')!r}; this ctv_core reads {FORMAT_VERSION}")
        try:
            labels = tuple(TissueLabel(int(e["value"]), str(e["name"]), str(e["class"])) for e in data["labels"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a legend entry lacks value, name or class ({exc})") from exc
        return cls(labels=tuple(sorted(labels, key=lambda t: t.value)), source=str(data.get("source", "")))

    @classmethod
    def from_json(cls, text: str) -> TissueLegend:
        return cls.from_dict(json.loads(text))


def write_tissue_labels(labels: sitk.Image, legend: TissueLegend, folder: str | Path) -> tuple[Path, Path]:
    """Write ``labels`` (uint8, values in the legend) and its legend into ``folder``; returns both paths.

    The caller writes into a folder that appears whole (``ctv phantom`` stages its output).
    """
    folder = Path(folder)
    _check_values(sitk.GetArrayViewFromImage(labels), legend, str(folder / LABELS_FILE))
    sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(folder / LABELS_FILE), useCompression=True)
    (folder / LEGEND_FILE).write_text(json.dumps(legend.to_dict(), indent=1) + "\n", encoding="utf-8")
    return folder / LABELS_FILE, folder / LEGEND_FILE


def find_tissue_labels(folder: str | Path) -> Path | None:
    """``folder/tissue_labels.nii.gz`` when it exists (with its legend), else None."""
    path = Path(folder) / LABELS_FILE
    return path if path.is_file() and (Path(folder) / LEGEND_FILE).is_file() else None


def read_tissue_labels(path: str | Path, grid: Grid) -> tuple[np.ndarray, TissueLegend]:
    """A label map and its legend (the ``.json`` beside it): uint8 ``[k, j, i]`` checked to lie on ``grid``.

    Raises
    ------
    StructureSetError
        The files cannot be read, the legend is not one, or a value is not in it.
    GridMismatchError
        The map is not on ``grid``.
    """
    path = Path(path)
    legend_path = path.parent / LEGEND_FILE
    try:
        legend = TissueLegend.from_json(legend_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StructureSetError(f"The legend '{legend_path}' of the tissue label map cannot be read ({exc}).") from exc
    except ValueError as exc:
        raise StructureSetError(f"'{legend_path}' is not a usable tissue legend: {exc}.") from exc
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise StructureSetError(f"'{path}' cannot be read as an image ({exc}).") from exc
    check_mask_on_grid(path.name, image, grid)
    array = sitk.GetArrayFromImage(image)
    if array.dtype != np.uint8:
        raise StructureSetError(f"'{path}' holds {array.dtype} values; a tissue label map is uint8.")
    _check_values(array, legend, str(path))
    return array, legend


def _check_values(array: np.ndarray, legend: TissueLegend, where: str) -> None:
    present = np.flatnonzero(np.bincount(np.asarray(array, dtype=np.uint8).ravel(), minlength=256))
    missing = sorted(set(int(v) for v in present) - {t.value for t in legend.labels})
    if missing:
        raise StructureSetError(f"'{where}' holds label value(s) {missing} that its legend does not name.")


def legend_from_names(entries: Sequence[tuple[int, str, str]], source: str) -> TissueLegend:
    """A legend from ``(value, name, class)`` triples."""
    return TissueLegend(labels=tuple(TissueLabel(int(v), str(n), str(c)) for v, n, c in sorted(entries)),
                        source=source)
