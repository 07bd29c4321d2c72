"""The node's DICOM network side (pynetdicom): a Storage SCP that files CT instances, and a C-STORE sender.

Receiving, with the limits of :class:`ReceiveLimits`:

* associations are rejected at negotiation with a proper A-ASSOCIATE-RJ: callers outside the
  allow list ("calling AE title not recognised", permanent), and callers past the bounds on
  associations at once, in total and from one address ("local limit exceeded", transient);
* every connection is read through :mod:`.pdu_guard` (no PDU above 1 MiB; each data set capped
  at the instance limit as it arrives) and each C-STORE's data set is written to a file as it
  arrives (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``), never held in memory;
* each instance is checked (:mod:`.instance_check`: storage class, UIDs, request against data
  set, size, truncation) and refused with its C-STORE status and a line in the audit log, or
  filed and indexed (:meth:`Inbox.file_instance`) before the success status is returned; a second
  copy of an instance (same SOPInstanceUID) is acknowledged and not stored twice;
* how each association ended is recorded for the series it sent (:meth:`CaseStore.transfer_ended`:
  released, or aborted / connection lost / an instance refused), for judging whether a series is
  whole. The handlers only check, file and index: nothing slow runs inside an association.

Every storage SOP class is negotiated so that a non-CT object is refused with its proper C-STORE
status (0x0122, SOP class not supported) and a reason in the audit log, rather than with a bare
negotiation failure.

Sending: one association per file, proposing RT Structure Set and Segmentation Storage.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless,
                         JPEGLSNearLossless, RLELossless)
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import RTStructureSetStorage, SegmentationStorage, Verification

from ..errors import CTVError
from .audit import AuditLog
from .instance_check import OUT_OF_RESOURCES, SUCCESS, InstanceRefused, check_received, check_request
from .pdu_guard import GuardedServer
from .peers import AllowedPeer, Destination, admitted
from .store import CaseStore

logger = logging.getLogger(__name__)

#: Transfer syntaxes the CT loader decodes (pydicom with the pylibjpeg decoders).
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     ExplicitVRBigEndian, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless,
                     JPEG2000, RLELossless]
#: The largest PDU a connection may send (bytes): far above what the node announces (pynetdicom's 16 kB).
MAX_PDU_BYTES = 1 << 20
#: A-ASSOCIATE-RJ (result, source, reason): calling AE title not recognised; local limit exceeded.
REJECT_NOT_ALLOWED = (0x01, 0x01, 0x03)
REJECT_LIMIT = (0x02, 0x03, 0x02)
MB = 1 << 20
#: Connections at once, per association allowed at once (bare connections wait for their A-ASSOCIATE-RQ).
CONNECTIONS_PER_ASSOCIATION = 4
#: A connection that has not asked for an association within this time is closed, seconds.
ACSE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ReceiveLimits:
    """What one peer, or all of them, may make the node hold at once.

    Attributes
    ----------
    max_instance_bytes
        The largest instance file (data set and file meta) stored; larger ones are refused (0xA700).
    max_associations
        Associations at once, from all peers.
    max_associations_per_peer
        Associations at once from one address.
    network_timeout_s
        An association silent this long is aborted.
    """

    max_instance_bytes: int = 64 * MB
    max_associations: int = 16
    max_associations_per_peer: int = 4
    network_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_instance_bytes < 1 or self.max_associations < 1 or self.max_associations_per_peer < 1 \
                or self.network_timeout_s <= 0:
            raise CTVError("--max-instance-mb, --max-associations and --max-associations-per-peer must be positive.")


class StorageSCP:
    """The receiving side: ``start(host, port)`` serves in background threads until ``stop()``."""

    def __init__(self, ae_title: str, store: CaseStore, audit: AuditLog, allowed: tuple[AllowedPeer, ...] = (),
                 limits: ReceiveLimits = ReceiveLimits()):
        self.store, self.audit, self.allowed, self.limits = store, audit, allowed, limits
        _config.STORE_RECV_CHUNKED_DATASET = True  # data sets go to a file as they arrive, never to memory
        self.ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        # The bounds on associations are ours (_on_request, with their audit); pynetdicom's, which also counts
        # connections that have not asked for an association yet (closed after the ACSE timeout), is only a
        # ceiling on the threads a flood of bare connections can hold.
        self.ae.maximum_associations = CONNECTIONS_PER_ASSOCIATION * limits.max_associations
        self.ae.acse_timeout = ACSE_TIMEOUT_S
        self.ae.network_timeout = limits.network_timeout_s
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> None:
        handlers = [(evt.EVT_REQUESTED, self._on_request), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_C_ECHO, self._on_echo), (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_ABORTED, self._on_aborted)]
        self._server = self.ae.make_server((host, port), evt_handlers=handlers, server_class=GuardedServer,
                                           max_pdu=MAX_PDU_BYTES, max_data_set=self.limits.max_instance_bytes)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ctv-node-scp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

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
            self._reject(event, REJECT_NOT_ALLOWED, f"{title}@{address}: not in the allow list")
            return
        # associations this handler accepted (a connection that never asked for one holds no place)
        others = [a for a in self.ae.active_associations
                  if a.is_acceptor and a is not event.assoc and getattr(a, "ctv_stored", None) is not None]
        if len(others) >= self.limits.max_associations:
            self._reject(event, REJECT_LIMIT, f"{title}@{address}: {len(others)} association(s) at once already, the "
                                              "limit (--max-associations)")
            return
        same_peer = [a for a in others if str(a.requestor.address) == address]
        if len(same_peer) >= self.limits.max_associations_per_peer:
            self._reject(event, REJECT_LIMIT, f"{title}@{address}: {len(same_peer)} association(s) from this address "
                                              f"already, the limit (--max-associations-per-peer)")
            return
        event.assoc.ctv_stored = 0
        event.assoc.ctv_series = set()
        event.assoc.ctv_refused = set()
        self.audit("association", f"{title}@{address} accepted")

    def _reject(self, event, reason: tuple[int, int, int], why: str) -> None:
        """A-ASSOCIATE-RJ, then wait until it is sent (as pynetdicom's own rejections do): never an abort."""
        event.assoc.acse.send_reject(*reason)
        self.audit("association-rejected", why)
        event.assoc.kill()

    def _on_released(self, event) -> None:
        self._ended(event, released=True)

    def _on_aborted(self, event) -> None:
        self._ended(event, released=False)

    def _ended(self, event, released: bool) -> None:
        stored = getattr(event.assoc, "ctv_stored", None)
        if stored is None:  # rejected at negotiation
            return
        title, address = self._peer(event)
        sent, refused = event.assoc.ctv_series, event.assoc.ctv_refused
        if sent - refused:
            self.store.transfer_ended(sorted(sent - refused), interrupted=not released)
        if refused:
            self.store.transfer_ended(sorted(refused), interrupted=True)
        how = "released" if released else "aborted or lost"
        self.audit("association-end", f"{title}@{address} {how}: {stored} instance(s) stored"
                                      + (f", instance(s) of {len(refused)} series refused" if refused else ""))

    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> int:
        title, address = self._peer(event)
        sop_class = str(event.request.AffectedSOPClassUID or "")
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            check_request(sop_class, sop_uid)
            instance = check_received(event.dataset_path, sop_class, sop_uid, self.limits.max_instance_bytes)
        except InstanceRefused as refused:
            if refused.series_uid:
                event.assoc.ctv_refused.add(refused.series_uid)
            self.audit("refused", f"{sop_uid[:80]!r} from {title}@{address}: {refused.reason} "
                                  f"(status 0x{refused.status:04X})")
            return refused.status
        try:
            stored = self.store.inbox.file_instance(Path(event.dataset_path), instance.sop_uid, instance.series_uid,
                                                    instance.study_uid, instance.sop_class, title, address)
        except (OSError, CTVError) as exc:
            self.audit("refused", f"{sop_uid} from {title}@{address}: cannot be stored "
                                  f"({getattr(exc, 'strerror', None) or exc}) (status 0x{OUT_OF_RESOURCES:04X})")
            return OUT_OF_RESOURCES
        event.assoc.ctv_series.add(instance.series_uid)
        if stored:
            event.assoc.ctv_stored += 1
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
