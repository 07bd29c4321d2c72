"""The CT's DICOM files as Slicer's DICOM database knows them: the application's side of the RTSTRUCT export.

``ctv_core.scene.rtstruct_export`` asks a ``DicomFileSource`` for the file of each of the CT's
SOPInstanceUIDs; in the application that is ``slicer.dicomDatabase`` (a ctkDICOMDatabase), which
the slicer-core wheel and the review station do not have.
"""

from __future__ import annotations

import slicer


class SlicerDicomDatabase:
    """``DicomFileSource`` over ``slicer.dicomDatabase``, looked up at each call (absent outside the
    application, closed until the DICOM module opens it)."""

    def fileForInstance(self, sopInstanceUID: str) -> str:
        """The file of a DICOM instance ('' when the database is absent, closed or does not know it)."""
        database = getattr(slicer, "dicomDatabase", None)
        if database is None or not database.isOpen:
            return ""
        return database.fileForInstance(sopInstanceUID) or ""
