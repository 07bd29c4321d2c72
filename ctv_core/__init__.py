"""ctv_core: CTV auto-delineation for cervical cancer radiotherapy, without Slicer.

The public API (kept stable for the Slicer module, the command line and outside scripts):

* ``load_ct_series(folder, series_uid=None)`` -> ``CTSeries`` (image in HU, LPS geometry, and
  the references an RTSTRUCT or SEG needs)
* ``write_rtstruct(ct, {name: mask}, path)`` / ``read_rtstruct(path, ct, roi="CTV")``
* ``write_seg`` / ``read_seg`` (DICOM SEG), ``convert_structures`` (between formats)
* ``ctv_core.phantom.make_phantom(out_dir, seed=...)``: a synthetic pelvic CT with known truth
* the exception types of :mod:`ctv_core.errors`
"""

import logging

from .dicom.ct_series import CTReference, CTSeries, PatientStudy, SliceReference
from .structures.convert import convert_structures
from .dicom.series import load_ct_series
from .structures.rtstruct import read_rtstruct, write_rtstruct
from .structures.seg import read_seg, write_seg
from ._version import __version__
from .errors import CTVError, DicomInputError

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CTReference",
    "CTSeries",
    "CTVError",
    "DicomInputError",
    "PatientStudy",
    "SliceReference",
    "__version__",
    "convert_structures",
    "load_ct_series",
    "read_rtstruct",
    "read_seg",
    "write_rtstruct",
    "write_seg",
]
