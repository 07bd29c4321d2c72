"""DICOM unique identifiers (UIDs) from outside: what may be taken as one.

A UID from the network or an upload is checked before it is used for anything (an index key, a
command-line argument, a lookup): digits and dots only, no empty component, at most 64 characters
(PS3.5 9.1). Components with leading zeros, which the standard forbids but some old equipment
writes, are accepted: they cannot do harm, and refusing them would refuse real series. A UID is
never made into a path on disk, valid or not.
"""

from __future__ import annotations

import re

#: The longest UID, characters (PS3.5 9.1).
MAX_UID_LENGTH = 64
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(value: object) -> bool:
    """True when ``value`` is a string that can be a DICOM UID (see the module docstring)."""
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def uid_problem(value: object, what: str) -> str | None:
    """None when ``value`` is a UID, else one sentence saying why not (the value shown shortened and escaped)."""
    if is_uid(value):
        return None
    shown = repr(str(value)[:80]) + ("..." if len(str(value)) > 80 else "")
    if not isinstance(value, str) or not value:
        return f"{what} is missing"
    if len(value) > MAX_UID_LENGTH:
        return f"{what} {shown} is longer than {MAX_UID_LENGTH} characters"
    return f"{what} {shown} is not a DICOM UID (digits and dots only)"
