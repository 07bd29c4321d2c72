"""The CTV training set as one HDF5 file: its schema, written once here for the writer and the reader.

:mod:`.hdf5_writer` writes the file (for ``ctv dataset build`` and for tests); the trainer and
``ctv dataset info`` read it through :class:`.hdf5_reader.CTVDataset` only, so the layout below
can change in one place (bump ``FORMAT_VERSION``).

Schema, format ``"ctv-dataset"`` version 1
------------------------------------------
Arrays are indexed ``[k, j, i]`` (slice, row, column), as ``SimpleITK.GetArrayFromImage``
returns them; geometry is SimpleITK's, in DICOM patient coordinates (LPS, mm), see
:mod:`ctv_core.geometry`. Strings are variable-length UTF-8.

``/`` (root) attributes
    ``format`` = ``"ctv-dataset"``; ``format_version`` = 1; ``created`` (ISO 8601, UTC);
    ``ctv_core_version``; ``target_pattern`` (the ``--roi`` regular expression, ``""`` when
    only aliases were used); ``target_aliases`` (string array); ``extra_rois`` (JSON object
    ``{stored name: regular expression}``); ``deidentified`` (bool); ``case_count``;
    ``axis_order`` = ``"k,j,i"``; ``frame`` = ``"LPS"``; ``source_archive`` (absolute path of
    the archive; absent when de-identified); ``tissue_legend`` (JSON, only when the cases have
    tissue label maps).

``/cases/<case_id>`` (group; ids ``case_00000``, ``case_00001``, … carry no patient data)
    ``ct``: int16 ``[k, j, i]``, Hounsfield units exactly as ``load_ct_series`` gave them
    (values of a CT with non-integral rescale are rounded to whole HU, ``hu_rounded`` says so).
    ``masks/target``: uint8 ``[k, j, i]``, 0/1, the target ROI rasterised on the CT grid.
    ``masks/<name>``: uint8, each extra ROI that was found (``--extra-roi NAME=PATTERN``).
    Each mask dataset has attributes ``roi_name`` (the name in the RTSTRUCT),
    ``voxel_count`` and ``volume_cc``.
    ``tissue_labels`` (optional, ``--tissue-labels``; every case has it or none does): uint8
    ``[k, j, i]``, one tissue label per CT voxel, numbered as the root attribute
    ``tissue_legend`` says (the JSON legend of :mod:`ctv_core.structures.label_maps`, shared
    by every case). Files without it read as before; the format version is unchanged.

    Group attributes, always present:
    ``spacing`` float64[3] (i, j, k) mm; ``origin`` float64[3], LPS mm of the centre of voxel
    (0, 0, 0); ``direction`` float64[9], row-major 3x3 whose columns are the i, j, k axes in
    LPS (``SimpleITK.Image.GetDirection`` order); ``roi_name`` (target's name in the
    RTSTRUCT); ``patient_key`` (PatientID, or a salted hash of it when de-identified: split
    folds by this key); ``patient_position`` (HFS, FFS, …); ``hu_rounded`` (bool);
    ``extra_rois_missing`` (string array of extra ROI names not stored) and
    ``extra_rois_missing_reasons`` (same length); ``dropped_contours`` (JSON object
    ``{ROI name: count}`` of contours passed over as damaged, ``{}`` when none).

    Provenance attributes, absent when de-identified: ``study_instance_uid``,
    ``series_instance_uid``, ``frame_of_reference_uid`` (of the CT),
    ``rtstruct_sop_instance_uid``, ``rtstruct_series_instance_uid``, ``ct_source`` (folder
    the CT was loaded from) and ``rtstruct_source`` (file), both relative to
    ``source_archive``; ``ct_warnings`` (string array, what the loader reported).

    ``approval`` (optional; cases built from approved contours, ``ctv dataset build`` of a case store or
    ``--approved-only``): JSON object, the edit record of the approval the target comes from
    (``ctv-edit-record/1`` of :mod:`ctv_core.evaluation.edits`: ``ai`` the model's name, version and
    SHA-256 and the input series; ``ct`` the CT the approved contour lies on, always this case's;
    ``approved_by``, ``recorded``, ``door``, ``context`` and the edit ``figures``); absent when
    de-identified (it names the approver and UIDs). Read through
    :meth:`.hdf5_reader.CTVDataset.approval`, which refuses a value that is not such a record.
    Files without it read as before; the format version is unchanged.

``/skipped`` (compound table, one row per structure set that gave no case)
    ``source`` (the RTSTRUCT's path relative to the archive, or ``structure_set_NNNN`` when
    de-identified), ``category`` (short reason, for counting: "missing CT", "no ROI matches",
    "ambiguous ROI", …) and ``reason`` (the full message; when de-identified only the
    category and ROI names, never paths or UIDs).

Storage: every array is chunked ``(16, 64, 64)`` (clipped to its shape) and compressed with
gzip level 1 (plus byte shuffle for the int16 CT) and Fletcher-32 checksums. A random patch
then decompresses only the few chunks it overlaps (a 64x128x128 patch touches ~4x3x3 chunks
of 128 kB), gzip is readable by every HDF5 tool without plugins, level 1 decodes about as
fast as higher levels while the shuffle makes int16 HU compress ~3x, and the checksum makes a
damaged chunk fail loudly instead of feeding noise to training.
"""

FORMAT_NAME = "ctv-dataset"
FORMAT_VERSION = 1
#: The mask that is the training target, ``/cases/<case_id>/masks/target``.
TARGET_MASK = "target"
#: The tissue label map of a case, ``/cases/<case_id>/tissue_labels`` (optional).
TISSUE_LABELS = "tissue_labels"
#: The case attribute holding the approval's edit record (JSON), ``/cases/<case_id>`` attrs (optional).
APPROVAL = "approval"
#: Chunk shape ``[k, j, i]`` of every array (clipped to the array's shape).
CHUNK_KJI = (16, 64, 64)
