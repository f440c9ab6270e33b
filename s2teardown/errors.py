"""User-facing errors: one line, ``FILE:LINE: field: expected EXPECTED, got GOT (hint)``.

Every problem with what the user gave us (a machine file, a scenario file, a CLI flag) is a
:class:`UserError`.  The CLI prints ``str(err)`` and exits with ``err.exit_code`` (2, or 3 for
:class:`NothingComparable`).  Parts that are ``None`` are left out::

    d05.yaml:12: topology.sokets: expected a topology field, got unknown key 'sokets' (did you mean 'sockets'?)
    --vm: expected a size such as 64G, got 'lots'
    d05.yaml: expected a file of at most 1 MiB, got 2097152 bytes

For a command-line flag the "file" is the flag's name (``--vm``).  The message never spans
more than one line: newlines inside any part are shown as ``\\n``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = ["NothingComparable", "UserError", "describe"]


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class UserError(Exception):
    """Bad input or usage.  Exit code 2."""

    exit_code: ClassVar[int] = 2

    def __init__(
        self,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str = "",
        got: str = "",
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.expected = expected
        self.got = got
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        """The one-line message (also ``str(self)``)."""
        parts: list[str] = []
        if self.file is not None:
            loc = self.file if self.line is None else f"{self.file}:{self.line}"
            parts.append(f"{loc}: ")
        if self.field is not None:
            parts.append(f"{self.field}: ")
        body = f"expected {self.expected}" if self.expected else ""
        if self.got:
            body = f"{body}, got {self.got}" if body else f"got {self.got}"
        parts.append(body)
        if self.hint:
            parts.append(f" ({self.hint})")
        return _one_line("".join(parts))

    def __str__(self) -> str:
        return self.render()

    def replace(self, **changes: Any) -> UserError:
        """A copy of this error (same class) with some parts changed, e.g. ``file=``."""
        parts: dict[str, Any] = {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "expected": self.expected,
            "got": self.got,
            "hint": self.hint,
        }
        parts.update(changes)
        return type(self)(**parts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.file, self.line, self.field, self.expected, self.got, self.hint),
        )


class NothingComparable(UserError):
    """Two inputs cannot be compared (another format, model or input set).  Exit code 3."""

    exit_code: ClassVar[int] = 3


def describe(value: Any, limit: int = 60) -> str:
    """A short, one-line description of a user-supplied value for the ``got`` part."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 3] + "..."
        return f"string {text!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
