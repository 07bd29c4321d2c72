"""The ``ctv`` command line: argument parsing, progress bars, one handler per command.

Owns: :mod:`.main` (the parser and ``main``), one module per command or command group
(:mod:`.phantom`, :mod:`.inspect`, :mod:`.convert`, :mod:`.predict`, :mod:`.dataset`,
:mod:`.training`, :mod:`.evaluate`, :mod:`.node`, :mod:`.review`), each with
``add_commands(sub, common)`` and handlers that parse, call the library and print;
:mod:`.progress` (tqdm bars); :mod:`.prestarted` (``ctv`` started before its arguments, for the
services' job workers). The only place that parses arguments, prints or owns a progress bar.
Building the parser imports no library of the field; each handler imports what its command needs.

May import: everything in ctv_core. Never the Slicer module.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
