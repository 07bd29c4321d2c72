"""Training sets: from a department's DICOM archive to one HDF5 file, and reading it back.

Owns: :mod:`.archive` (scanning an archive into compact records), :mod:`.pairing` (each
RTSTRUCT paired with its CT, its target chosen and rasterised), :mod:`.roi_selection` (which
ROI is the target, by pattern or by the catalogue's aliases), :mod:`.hdf5_schema` (the file's
layout), :mod:`.hdf5_writer` (``DatasetWriter``), :mod:`.hdf5_reader` (``CTVDataset``),
:mod:`.builder` (``build_dataset``: ``ctv dataset build``).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`.
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
