"""What the user is told about a model before running it: the package's manifest, as the widget shows it.

The description and its text are ctv_core's (:class:`ctv_core.model.manifest.ModelDescription`, read by
the one strict reading, ``describe_model_package``: no torch, no weights loaded): a manifest the
prediction process would refuse is refused here, with the same message. Shown: name, version,
description, intended use, training data, validation metrics, the weights' SHA-256. The weights
themselves are checked against that SHA-256 by the prediction process every time it loads them
(``ctv_core.model.package.load_model_package``), and the run's result reports it.
"""

from __future__ import annotations

from pathlib import Path

from ctv_core.model.manifest import ModelDescription, describe_model_package

__all__ = ["ModelDescription", "describeModel"]


def describeModel(folder: str | Path | None = None) -> ModelDescription:
    """The description of the package in ``folder`` (None or "": the bundled model); ``text()`` for the widget.

    Raises
    ------
    ModelPackageError
        The folder is not a usable model package (ctv_core's message: what is wrong, what to do).
    """
    return describe_model_package(Path(folder) if folder else None)
