"""The JSRT chest radiographs with their SCR masks, read in place from the shared data folder.

Research use only: the images are read from ``../shared/data/jsrt256`` (or the folder given)
and never copied; nothing derived from them (images, masks) is written into the repository.

Arrays: images ``[N, 1, H, W]`` float32 normalised per image to zero mean and unit standard
deviation; labels ``[N, 3, H, W]`` bool, the structures in :data:`STRUCTURES` order (rows,
columns of the 256 x 256 PNGs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ctv_core.errors import DatasetError

#: Structure -> the SCR mask folders it unites (left and right counted as one structure, as in the method).
STRUCTURES = {"lungs": ("left_lung", "right_lung"), "heart": ("heart",),
              "clavicles": ("left_clavicle", "right_clavicle")}


@dataclass(frozen=True)
class Jsrt:
    """All cases: ids (file stems, sorted), images ``[N, 1, 256, 256]`` and labels ``[N, 3, 256, 256]``."""

    case_ids: list[str]
    images: np.ndarray
    labels: np.ndarray


def _png(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def load_jsrt(root: Path, limit: int | None = None) -> Jsrt:
    """Every case of ``root`` (``images/*.png``, ``masks/<structure>/*.png``); ``limit`` keeps the first N."""
    root = Path(root)
    names = sorted(p.name for p in (root / "images").glob("*.png"))
    if not names:
        raise DatasetError(f"No JSRT images under '{root / 'images'}'; give the jsrt256 folder of the shared data "
                           "(--data or data.root).")
    names = names[:limit] if limit else names
    images, labels = [], []
    for name in names:
        image = _png(root / "images" / name).astype(np.float32)
        images.append(((image - image.mean()) / max(float(image.std()), 1e-6))[None])
        labels.append(np.stack([np.any([_png(root / "masks" / folder / name) > 0 for folder in folders], axis=0)
                                for folders in STRUCTURES.values()]))
    return Jsrt([n[:-4] for n in names], np.stack(images), np.stack(labels))


def split(case_ids: list[str], train: int, seed: int) -> tuple[list[str], list[str]]:
    """``(train, test)`` case ids: a seeded permutation, the first ``train`` for training (both sorted)."""
    order = np.random.default_rng([int(seed), 0x15A7]).permutation(len(case_ids))
    chosen = {case_ids[i] for i in order[:train]}
    return sorted(chosen), sorted(c for c in case_ids if c not in chosen)


def downsample(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes (labels: then >= 0.5)."""
    if factor == 1:
        return array.astype(np.float32)
    *lead, h, w = array.shape
    blocks = array.astype(np.float32).reshape(*lead, h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(-1, -3))
