"""Command line: ``napari-semimoe summary | train | predict | evaluate | suggest | bench | gui``.

A thin layer over :mod:`napari_semimoe.core`; user mistakes end in one line on stderr and
exit status 2, never a traceback. :mod:`.app` holds ``main`` (one line per failure),
:mod:`.parser` the options of every command, :mod:`.options` the checks they share, and
:mod:`.train`, :mod:`.predict` (predict, evaluate, suggest) and :mod:`.info` (summary,
bench, gui) the commands.
"""

from __future__ import annotations

from .app import main
from .options import (
    MAX_CLI_TILE,
    MAX_CLI_WIDTH,
    checked_int,
    float_option,
    int_option,
    out_file,
    out_folder,
)
from .parser import build_parser
from .predict import output_name
from .train import RUN_OPTIONS, run_defaults

__all__ = [
    "MAX_CLI_TILE",
    "MAX_CLI_WIDTH",
    "RUN_OPTIONS",
    "build_parser",
    "checked_int",
    "float_option",
    "int_option",
    "main",
    "out_file",
    "out_folder",
    "output_name",
    "run_defaults",
]
