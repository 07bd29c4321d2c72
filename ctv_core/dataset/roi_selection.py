"""Which ROI of a structure set is the training target, and which extra ROIs are stored beside it.

The target is matched by a regular expression (through
:func:`ctv_core.structures.rtstruct_reader.select_rois`: exact name, else case-insensitive name, else
case-insensitive full match) or by the aliases of the structure catalogue
(:data:`ctv_core.structures.catalogue.CTV_ALIASES`, compared by
:func:`~ctv_core.structures.catalogue.alias_key`). Exactly one ROI must match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import DatasetError
from ..structures.catalogue import CTV_ALIASES
from .hdf5_schema import TARGET_MASK

#: The target names accepted when none are given: the catalogue's CTV aliases.
DEFAULT_TARGET_ALIASES: tuple[str, ...] = CTV_ALIASES

_EXTRA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


@dataclass(frozen=True)
class RoiSelection:
    """Which ROI is the target, and which extra ROIs to store beside it.

    Attributes
    ----------
    pattern
        Regular expression for the target's name (case-insensitive, full match), or None.
    aliases
        Target names accepted as they are (ignoring case, spaces, ``_``, ``-``, ``.``).
    extras
        Stored name -> regular expression for extra ROIs (e.g. ``{"Bladder": "bladder|blase"}``).
    """

    pattern: str | None = None
    aliases: tuple[str, ...] = DEFAULT_TARGET_ALIASES
    extras: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls,
        pattern: str | None = None,
        aliases: Sequence[str] | None = None,
        default_aliases: bool = False,
        extra_rois: Sequence[str] = (),
    ) -> RoiSelection:
        """The selection the command line describes.

        With neither ``pattern`` nor ``aliases`` the default aliases are used; with either,
        only what was given, plus the default aliases when ``default_aliases`` is set.
        ``extra_rois`` are ``NAME=PATTERN`` strings.
        """
        chosen = list(aliases or ())
        if default_aliases or (pattern is None and not chosen):
            chosen = list(DEFAULT_TARGET_ALIASES) + chosen
        extras: dict[str, str] = {}
        for spec in extra_rois:
            name, regex = parse_extra_roi(spec)
            if name.lower() in (n.lower() for n in extras):
                raise DatasetError(f"Extra ROI '{name}' is given twice; give each --extra-roi NAME once.")
            extras[name] = regex
        selection = cls(pattern=pattern, aliases=tuple(dict.fromkeys(chosen)), extras=extras)
        selection.validate()
        return selection

    def validate(self) -> None:
        """Raise ``DatasetError`` naming the problem when the selection cannot be used."""
        if self.pattern is not None:
            _compile(self.pattern, "--roi")
        if not self.pattern and not self.aliases:
            raise DatasetError("No target ROI given: give --roi PATTERN (a regular expression) or --alias NAME.")
        for name, regex in self.extras.items():
            if not _EXTRA_NAME.fullmatch(name) or name.lower() == TARGET_MASK:
                raise DatasetError(
                    f"'{name}' cannot name an extra ROI: use letters, digits and _ . + - (not 'target'), "
                    "e.g. --extra-roi Bladder=bladder|blase."
                )
            _compile(regex, f"--extra-roi {name}")

    def describe(self) -> str:
        parts = [f"pattern '{self.pattern}'"] if self.pattern else []
        if self.aliases:
            parts.append(f"aliases {', '.join(self.aliases)}")
        return " or ".join(parts)


def _compile(regex: str, what: str) -> re.Pattern:
    try:
        return re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        raise DatasetError(f"{what} '{regex}' is not a valid regular expression ({exc}); fix or quote it.") from exc


def parse_extra_roi(spec: str) -> tuple[str, str]:
    """Split ``NAME=PATTERN`` (e.g. ``Bladder=bladder|blase``) into name and pattern."""
    name, sep, regex = spec.partition("=")
    if not sep or not name.strip() or not regex.strip():
        raise DatasetError(
            f"--extra-roi '{spec}' is not NAME=PATTERN; write e.g. --extra-roi 'Bladder=bladder|blase'."
        )
    return name.strip(), regex.strip()
