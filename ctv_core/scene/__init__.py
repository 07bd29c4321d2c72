"""MRML and ctv_core side by side: what the Slicer module and the review station share.

Owns: :mod:`.patient_frame` (the one RAS <-> LPS conversion: IJK-to-RAS matrices and LPS
grids), :mod:`.lattice` (moving a mask between grids whose voxels coincide, exactly),
:mod:`.conversion` (volume node <-> image, mask -> segment with the structure's colour and
terminology, segment -> mask), :mod:`.rtstruct_export` (a segmentation as an RTSTRUCT on the
CT's own DICOM series), :mod:`.terminology` (the CTV's coded type and its terminology file,
``CTVDelineation.term.json``), :mod:`.review_steps` (the CT slices holding the CTV, stepped by
key or at the thesis' pace), :mod:`.model_description` (a model package's manifest as the user
reads it).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`,
:mod:`ctv_core.model`, and ``slicer`` and ``vtk`` (the Slicer application's, or the slicer-core
wheel's): this folder and the review station are the only places in ctv_core that import them.
Never the Slicer module (``CTVDelineation``, its ``Logic/`` as ``CTVDelineationLib``), which
imports this folder; nothing in :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`,
:mod:`ctv_core.model`, :mod:`ctv_core.inference` or the training side imports it. This
``__init__`` imports nothing, so that ``import ctv_core.scene`` costs no Slicer.
"""
