"""DICOM in and out for CT: finding and grouping files, slice geometry, ``load_ct_series``, ``CTSeries``, the CT writer.

Owns: :mod:`.files` (finding DICOM files, a cheap look before any parse, header reading, grouping
them into series), :mod:`.slice_geometry`
(slice order, spacing rules, tilt and uneven-spacing resampling), :mod:`.series`
(``load_ct_series``), :mod:`.ct_series` (``CTSeries``, ``CTReference``: what a writer needs to
reference the CT), :mod:`.ct_writer` (writing a CT Image Storage series, the phantom's scanner),
:mod:`.instances` (stamping new DICOM instances), :mod:`.values` (decimal strings), :mod:`.uids`
(what may be taken as a UID from outside), :mod:`.completeness` (whether received slices are the
whole series).

May import: the top level of ctv_core (errors, geometry, atomic files, version) and libraries.
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
