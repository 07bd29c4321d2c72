"""Structures on a CT: the structure catalogue, contours, RTSTRUCT, DICOM SEG, mask files, conversion.

Owns: :mod:`.catalogue` (the one list of structure names, aliases, RT ROI types, colours and
codes), :mod:`.contours` (mask slices to planar polygons and back), :mod:`.rtstruct`,
:mod:`.seg`, :mod:`.revision` (a structure set replacing an earlier one of the same CT),
:mod:`.mask_files` (NIfTI / NRRD / MetaImage), :mod:`.image_files` (any image on a CT's
grid written as such a file: masks, the uncertainty map), :mod:`.label_maps` (tissue
label maps with their legend, for appearance-randomised training), :mod:`.writer_checks` (what every
writer checks first), :mod:`.convert` (``convert_structures``).

May import: the top level and :mod:`ctv_core.dicom`.
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
