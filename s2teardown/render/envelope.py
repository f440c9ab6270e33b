"""The one envelope of every JSON document the tool prints or writes (docs/cli.md "JSON").

Every document starts with the same keys: ``format_version`` (of the JSON layout), ``tool``,
``tool_version``, ``model_version`` (core.model.MODEL_VERSION, docs/model.md changelog),
``command``, ``warnings``; the command's own body follows.  `to_json` is the one serialiser:
NaN and infinity are refused, never written as the non-JSON ``NaN``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from s2teardown import __version__
from s2teardown.core.model import MODEL_VERSION

#: The version of the JSON layout (bumped when a key is renamed or removed).
FORMAT_VERSION = 1


def envelope(command: str, *, warnings: Iterable[str] = (), **body: Any) -> dict[str, Any]:
    """The common header, then ``body`` (whose keys may not shadow the header's)."""
    head: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tool": "s2teardown",
        "tool_version": __version__,
        "model_version": MODEL_VERSION,
        "command": command,
        "warnings": list(warnings),
    }
    clash = sorted(set(head) & set(body))
    if clash:
        raise ValueError(f"envelope: body repeats header keys {clash}")
    return {**head, **body}


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
