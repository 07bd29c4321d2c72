"""The node's client connections, read one PDU at a time with two bounds a hostile peer cannot lift.

pynetdicom reads each PDU whole into memory, however long its header says it is, whatever
maximum PDU length was negotiated; and it writes a C-STORE's data set to a file fragment by
fragment until the message ends. :class:`GuardedConnection` sits between the accepted socket and
pynetdicom (:class:`GuardedServer` wraps every connection it accepts) and:

* closes the connection when a PDU declares more than ``max_pdu`` bytes (a protocol violation:
  the node announced its maximum at association), so no PDU ever takes more memory than that;
* passes at most ``max_data_set + 1`` bytes of each message's data set on to pynetdicom and
  drops the rest of its fragments (their headers kept, so the message still ends where the peer
  ends it). The file pynetdicom writes is then never much larger than the limit, and the C-STORE
  handler, finding it over the limit, refuses the instance with a failure status (0xA700) while
  the association goes on.

Everything else passes through unchanged.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

_P_DATA_TF = 0x04


class GuardedConnection:
    """A connected socket whose :meth:`recv` hands pynetdicom checked (and, past the limit, shortened) PDUs."""

    def __init__(self, connection: socket.socket, max_pdu: int, max_data_set: int) -> None:
        self._connection, self.max_pdu, self.max_data_set = connection, max_pdu, max_data_set
        self._pending = bytearray()
        self._data_set_bytes = 0
        #: Data-set bytes dropped so far (for the log).
        self.dropped = 0

    def recv(self, size: int, *flags: Any) -> bytes:
        if not self._pending:
            self._pending = self._next_pdu()
        chunk = bytes(self._pending[:size])
        del self._pending[:size]
        return chunk

    def __getattr__(self, name: str) -> Any:  # send, close, shutdown, fileno, settimeout, ...: the socket's own
        return getattr(self._connection, name)

    def _read_exactly(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self._connection.recv(min(count - len(data), 1 << 16))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def _next_pdu(self) -> bytearray:
        header = self._read_exactly(6)
        if len(header) < 6:
            return bytearray(header)  # the peer closed the connection: pynetdicom sees it
        kind, _, length = struct.unpack(">BBL", header)
        if length > self.max_pdu:
            logger.warning("closing a connection: a PDU of %d bytes, above the %d negotiated", length, self.max_pdu)
            raise ConnectionAbortedError(f"PDU of {length} bytes exceeds the negotiated maximum of {self.max_pdu}")
        body = self._read_exactly(length)
        if kind != _P_DATA_TF or len(body) < length:
            return bytearray(header + body)
        return bytearray(self._shortened(body))

    def _shortened(self, body: bytes) -> bytes:
        """A P-DATA-TF PDU with each data-set fragment cut to what still fits under the limit."""
        items, offset, changed = [], 0, False
        while offset + 6 <= len(body):
            length = struct.unpack(">L", body[offset:offset + 4])[0]
            item = body[offset + 4:offset + 4 + length]  # context id, control header, fragment
            offset += 4 + length
            if len(item) < 2:
                items.append(item)
                continue
            control = item[1]
            if control & 0x01:  # a command fragment: a new message begins
                self._data_set_bytes = 0
            else:
                room = max(self.max_data_set + 1 - self._data_set_bytes, 0)
                fragment = len(item) - 2
                self._data_set_bytes += fragment
                if fragment > room:
                    self.dropped += fragment - room
                    item, changed = item[:2 + room], True
            items.append(item)
        if not changed:
            return struct.pack(">BBL", _P_DATA_TF, 0, len(body)) + body
        payload = b"".join(struct.pack(">L", len(item)) + item for item in items) + body[offset:]
        return struct.pack(">BBL", _P_DATA_TF, 0, len(payload)) + payload


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server, each accepted connection wrapped in a :class:`GuardedConnection`.

    ``max_pdu`` and ``max_data_set`` (bytes) are given as keyword arguments through
    :meth:`pynetdicom.AE.make_server`.
    """

    def __init__(self, *args: Any, max_pdu: int, max_data_set: int, **kwargs: Any) -> None:
        self.max_pdu, self.max_data_set = max_pdu, max_data_set
        super().__init__(*args, **kwargs)

    def get_request(self):
        connection, address = super().get_request()
        return GuardedConnection(connection, self.max_pdu, self.max_data_set), address

    def shutdown(self) -> None:
        """Stop serving and close the listening socket (this server was made with ``AE.make_server``, so the AE
        does not list it among the servers it started)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()
