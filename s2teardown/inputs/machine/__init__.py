"""Machine descriptions (docs/machine-format.md): the field table (`fields`), reading and
checking a file (`load`), and the format as documents (`reference`)."""

from __future__ import annotations

from s2teardown.inputs.machine.fields import (
    CHANGES_SINCE,
    FIELDS,
    GROUPS,
    ONE_TO_ONE,
    OP_DERIVATION,
    SCHEMA_VERSION,
    SOURCE_KINDS,
    THETA_FIELDS,
    Field,
)
from s2teardown.inputs.machine.load import (
    Machine,
    Param,
    apply_sets,
    load_machine,
    machine_from_text,
)
from s2teardown.inputs.machine.reference import json_schema, machine_format_markdown

__all__ = [
    "CHANGES_SINCE",
    "FIELDS",
    "GROUPS",
    "ONE_TO_ONE",
    "OP_DERIVATION",
    "SCHEMA_VERSION",
    "SOURCE_KINDS",
    "THETA_FIELDS",
    "Field",
    "Machine",
    "Param",
    "apply_sets",
    "json_schema",
    "load_machine",
    "machine_format_markdown",
    "machine_from_text",
]

