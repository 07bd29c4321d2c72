"""The errors the Slicer module raises itself, beside ctv_core's (every one a ``ctv_core.CTVError``).

The widget shows the message of any ``CTVError`` as it is: each says what was wrong and what to
do. ctv_core's own types are reused where they fit (``SceneInputError`` for a node that cannot be
used, ``GridMismatchError`` for a segmentation on another CT, ``StructureSetError`` for an export
that cannot reference the CT, ``InstallationError`` for a damaged installation,
``PredictionCancelled``).
"""

from __future__ import annotations

from ctv_core.errors import CTVError


class PredictionProcessError(CTVError):
    """The prediction process reported an error, or stopped without a result."""


class BusyError(CTVError):
    """A prediction is already running; cancel it or wait for it."""


def userMessage(error: BaseException) -> str:
    """What the user reads for an error: a ``CTVError``'s own message; for anything else (a bug) its
    type and text and where the details are, never a traceback."""
    if isinstance(error, CTVError):
        return str(error)
    return (f"Unexpected error ({type(error).__name__}: {error}). The details are in the log (Help > Report a bug); "
            "please report it.")
