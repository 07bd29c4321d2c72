"""The CTV's coded meaning in Slicer: ctv_core's terminology file and the segment's terminology entry.

``CTVDelineation.term.json`` (beside this module) holds one category and type, taken from
ctv_core's structure catalogue (DCM "RT Target" / SCT 228792002 "Clinical target volume",
magenta): the slicer-core wheel and older Slicer installations do not ship a terminology with it,
so ctv_core brings what it uses, for the Slicer module and the review station alike. Segments
carry the entry as Slicer serialises it (``context~category~type~modifier~anatomic
context~region~region modifier``); the export recognises a CTV by this code whatever the
clinician renamed it to.
"""

from __future__ import annotations

from pathlib import Path

import slicer
import vtk

from ..errors import InstallationError
from ..structures.catalogue import structure_for

#: The terminology file, beside this module wherever ctv_core is (a source checkout, a wheel, the extension).
TERMINOLOGY_FILE = Path(__file__).resolve().parent / "CTVDelineation.term.json"
#: The type's ``3dSlicerLabel`` in the terminology file.
CTV_LABEL = "CTV"


def segmentTerminology(segment) -> str:
    """The serialised terminology entry of a vtkSegment ('' when it has none)."""
    if hasattr(segment, "GetTerminology"):  # Slicer >= 5.7
        return segment.GetTerminology() or ""
    value = vtk.reference("")
    return str(value) if segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value) else ""


def setSegmentTerminology(segment, entry: str) -> None:
    """Give a vtkSegment a serialised terminology entry (the tag on Slicer < 5.7)."""
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(entry)
    else:
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)


class CTVTerminology:
    """The CTV's terminology entry, from ctv_core's terminology file (:data:`TERMINOLOGY_FILE`).

    Parameters
    ----------
    terminologyLogic
        Slicer's terminologies logic (``slicer.modules.terminologies.logic()`` in the
        application); None creates one of its own (tests, the review station).
    """

    def __init__(self, terminologyLogic=None):
        self.logic = terminologyLogic if terminologyLogic is not None else slicer.vtkSlicerTerminologiesModuleLogic()
        self.contextName = self.logic.LoadTerminologyFromFile(str(TERMINOLOGY_FILE))
        entry = slicer.vtkSlicerTerminologyEntry()
        if not self.contextName or not self.logic.FindTypeInTerminologyBy3dSlicerLabel(
                self.contextName, CTV_LABEL, entry):
            raise InstallationError(f"The terminology file {TERMINOLOGY_FILE} is missing or damaged; reinstall the "
                                    "CTVDelineation extension (or ctv_core).")
        self.entry = self.logic.SerializeTerminologyEntry(entry)
        ctv = structure_for("CTV")
        self.code = (ctv.property_type.scheme, ctv.property_type.value)

    def describes(self, name: str) -> bool:
        """True when a structure of this name is the CTV (its name or an alias clinics use, e.g. CTV_45)."""
        kind = structure_for(name).property_type
        return (kind.scheme, kind.value) == self.code

    def isCTV(self, segment) -> bool:
        """True when the segment's terminology type is the CTV's code (SCT 228792002)."""
        text = segmentTerminology(segment)
        if not text:
            return False
        entry = slicer.vtkSlicerTerminologyEntry()
        if not self.logic.DeserializeTerminologyEntry(text, entry) or entry.GetTypeObject() is None:
            return False
        kind = entry.GetTypeObject()
        return (kind.GetCodingSchemeDesignator(), kind.GetCodeValue()) == self.code
