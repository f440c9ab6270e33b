"""Further CLI commands, one module per idea, discovered at start-up.

Each module here defines click commands and lists them in ``COMMANDS``; `cli.py` adds them to
the top-level group.  A module must import nothing heavy at its top level (numpy, the model):
``s2teardown --help`` imports every module here.  Shared option sets and the estimate builder
live in `s2teardown.cli` (``input_options``, ``build_estimate``, ``_emit``, ``_console``).
"""

from __future__ import annotations

import importlib
import pkgutil

import click


def discover() -> list[click.Command]:
    out: list[click.Command] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        out.extend(getattr(module, "COMMANDS", []))
    return out
