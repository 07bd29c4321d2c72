"""Writing one DICOM dataset as a Part 10 file, under pydicom 2.4 (Slicer 5.8 and 5.10 bundle 2.4.4) and 3.x.

pydicom 3 writes a conformant file (preamble, prefix, validated File Meta Information) with
``save_as(path, enforce_file_format=True)``; pydicom 2.4 has no such argument and does the same
with ``write_like_original=False``, taking the encoding from ``is_little_endian`` and
``is_implicit_VR``, which are set here from the File Meta's transfer syntax. The one place that knows.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


def write_dataset(ds: pydicom.Dataset, path: Path | str) -> None:
    """Write ``ds`` (with its ``file_meta``) to ``path`` as a conformant DICOM file."""
    if PYDICOM_3:
        ds.save_as(path, enforce_file_format=True)
        return
    syntax = ds.file_meta.TransferSyntaxUID
    ds.is_little_endian, ds.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    ds.save_as(path, write_like_original=False)
