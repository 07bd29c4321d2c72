"""Synthetic pelvic CT with known truth: the project's test, demo and benchmark patient.

``make_phantom`` (in :mod:`.scan`) scans the anatomy of :mod:`.anatomy` and writes a CT series,
truth masks and the tissue label map they were derived from; :mod:`.appearance` renders the same
anatomy with appearance shifts (kernel, noise, contrast, slice thickness, HU offset, field of
view); ``ctv phantom`` is their command line.

May import: the top level, :mod:`ctv_core.dicom` (the CT writer and loader) and
:mod:`ctv_core.structures` (the truth as RTSTRUCT and masks).
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""

from .scan import Phantom, ScanSettings, make_phantom, plan_scan

__all__ = ["Phantom", "ScanSettings", "make_phantom", "plan_scan"]
