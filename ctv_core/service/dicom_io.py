"""The node's DICOM network side (pynetdicom): a Storage SCP that files CT instances, and a C-STORE sender.

Receiving: associations from peers outside the allow list are rejected at negotiation ("calling
AE title not recognised"); every storage SOP class is negotiated so that a non-CT object can be
refused with its proper C-STORE status (0x0122, SOP class not supported) and a reason in the
audit log, rather than with a bare negotiation failure. A CT instance is written and indexed
(:meth:`CaseStore.add_instance`) before the success status is returned; a second copy of an
instance (same SOPInstanceUID) is acknowledged and not stored twice. The handlers only file and
index: nothing slow runs inside an association.

Sending: one association per file, proposing RT Structure Set and Segmentation Storage.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless,
                         JPEGLSNearLossless, RLELossless, UID)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, RTStructureSetStorage, SegmentationStorage, Verification

from .audit import AuditLog
from .peers import AllowedPeer, Destination, admitted
from .store import CaseStore

logger = logging.getLogger(__name__)

#: Transfer syntaxes the CT loader decodes (pydicom with the pylibjpeg decoders).
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     ExplicitVRBigEndian, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless,
                     JPEG2000, RLELossless]
#: C-STORE statuses (PS3.4 Annex B).
SUCCESS, SOP_CLASS_NOT_SUPPORTED, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0x0122, 0xA700, 0xC000


class StorageSCP:
    """The receiving side: ``start(host, port)`` serves in background threads until ``stop()``."""

    def __init__(self, ae_title: str, store: CaseStore, audit: AuditLog, allowed: tuple[AllowedPeer, ...] = ()):
        self.store, self.audit, self.allowed = store, audit, allowed
        self.ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.ae.maximum_associations = 16
        self._server = None

    def start(self, host: str, port: int) -> None:
        handlers = [(evt.EVT_REQUESTED, self._on_request), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_C_ECHO, self._on_echo), (evt.EVT_RELEASED, self._on_end), (evt.EVT_ABORTED, self._on_end)]
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @staticmethod
    def _peer(event) -> tuple[str, str]:
        """Calling AE title and address (from the A-ASSOCIATE request itself: at EVT_REQUESTED nothing else is set)."""
        requestor = event.assoc.requestor
        primitive = getattr(requestor, "primitive", None)
        title = getattr(primitive, "calling_ae_title", None) or requestor.ae_title
        if isinstance(title, bytes):
            title = title.decode("ascii", "replace")
        return str(title).strip(), str(requestor.address)

    def _on_request(self, event) -> None:
        title, address = self._peer(event)
        if not admitted(self.allowed, title, address):
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected permanent: calling AE title not recognised
            self.audit("association-rejected", f"{title}@{address}: not in the allow list")
            return
        event.assoc.ctv_stored = 0
        self.audit("association", f"{title}@{address} accepted")

    def _on_end(self, event) -> None:
        title, address = self._peer(event)
        stored = getattr(event.assoc, "ctv_stored", None)
        if stored is not None:
            self.audit("association-end", f"{title}@{address}: {stored} instance(s) stored")

    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> int:
        title, address = self._peer(event)
        sop_class = UID(str(event.request.AffectedSOPClassUID))
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        if sop_class != CTImageStorage:
            kind = sop_class.name or str(sop_class)
            self.audit("refused", f"{sop_uid} from {title}@{address}: {kind} is not CT Image Storage; the node "
                                  "delineates CT series only")
            return SOP_CLASS_NOT_SUPPORTED
        try:
            dataset = event.dataset
            series_uid, study_uid = str(dataset.SeriesInstanceUID), str(dataset.StudyInstanceUID)
        except Exception as exc:  # noqa: BLE001 - a peer's undecodable dataset is its problem, reported back
            self.audit("refused", f"{sop_uid} from {title}@{address}: cannot be read ({exc})")
            return CANNOT_UNDERSTAND
        try:
            stored = self.store.inbox.add_instance(sop_uid, series_uid, study_uid, str(sop_class),
                                                   event.encoded_dataset(), title, address)
        except OSError as exc:
            self.audit("refused", f"{sop_uid} from {title}@{address}: cannot be stored ({exc.strerror or exc})")
            return OUT_OF_RESOURCES
        if stored:
            event.assoc.ctv_stored = getattr(event.assoc, "ctv_stored", 0) + 1
        return SUCCESS


def send_file(path: Path, destination: Destination, ae_title: str, timeout_s: float = 30.0) -> None:
    """C-STORE ``path`` to ``destination``; raises ``OSError`` saying why when it is not stored."""
    from pydicom import dcmread

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in (RTStructureSetStorage, SegmentationStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    dataset = dcmread(path)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise OSError(f"no association with {destination} (refused, rejected or unreachable)")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise OSError(f"{destination} did not answer the C-STORE (connection lost or timed out)")
    if code != SUCCESS and not 0xB000 <= code <= 0xBFFF:  # warnings are stored too
        raise OSError(f"{destination} refused the file with status 0x{code:04X}")
