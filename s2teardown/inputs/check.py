"""One toolkit for checking a user's input: unknown keys, schema versions, names, one-line text,
and "did you mean" suggestions.  Every reader (machine, variants, scenario, plan fleet, table
spec, trace) reports through these, so a mistake reads the same whichever file it is in:
``FILE:LINE: where: expected …, got unknown key 'x' (did you mean 'y'?)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from s2teardown.errors import UserError, describe

__all__ = [
    "MAX_NAME",
    "NAME_RULE",
    "check_keys",
    "check_name",
    "check_schema_version",
    "did_you_mean",
    "line_of",
    "one_line_text",
    "suggest",
    "unknown_key",
]

def line_of(container: Any, key: Any, default: int | None = None) -> int | None:
    """Line of ``key`` in a YAML mapping (or of item ``key`` in a YAML list), read from the
    ``lines`` the YAML reader attaches (yamlio.YamlMap / YamlList); ``default`` for plain values."""
    lines = getattr(container, "lines", None)
    if isinstance(lines, dict):
        found = lines.get(key, default)
        return found if found is None or isinstance(found, int) else default
    if isinstance(lines, list) and isinstance(key, int) and 0 <= key < len(lines):
        item = lines[key]
        return item if isinstance(item, int) else default
    return default


#: Up to this many known keys are listed in the message; more are summarised as "a <what> field".
_LIST_AT_MOST = 10




def suggest(word: object, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (difflib, case-insensitive), or None if none is close."""
    cands = list(candidates)
    if not cands:
        return None
    import difflib  # only on the way to an error message

    text = str(word).lower()
    lowered: dict[str, str] = {}
    for c in cands:
        lowered.setdefault(c.lower(), c)
    match = difflib.get_close_matches(text, list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def did_you_mean(word: object, candidates: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest candidate, or None."""
    best = suggest(word, candidates)
    return None if best is None else f"did you mean {best!r}?"


def unknown_key(
    file: str | None, line: int | None, where: str | None, key: Any, known: Sequence[str],
    what: str = "known",
) -> UserError:
    """The one message for a key the format does not have."""
    expected = (
        "one of " + ", ".join(known) if len(known) <= _LIST_AT_MOST else f"a {what} field"
    )
    hint = did_you_mean(key, known)
    if hint is None and isinstance(key, str) and f"{key}_bytes" in known:
        hint = f"did you mean '{key}_bytes'?"
    return UserError(file, line, where, expected, f"unknown key {key!r}", hint)


def check_keys(
    file: str | None, container: Mapping[Any, Any], where: str, known: Sequence[str],
    line: int | None = None, what: str = "known",
) -> None:
    """Every key of ``container`` must be in ``known``; the first that is not is reported at its
    own line (YAML maps remember lines; see yamlio.line_of)."""
    for k in container:
        if k not in known:
            field = f"{where}.{k}" if where else str(k)
            raise unknown_key(file, line_of(container, k, line), field, k, known, what)


#: Longest name (of a machine, variant, scenario, memslot) accepted.
MAX_NAME = 64
#: What a name must be: names become table cells, CSV fields, markdown and parts of one-line
#: messages, where a newline, a control character or a '|' would break the line or the table.
NAME_RULE = f"a name of at most {MAX_NAME} printable characters, without '|'"


def check_name(value: str, file: str | None, line: int | None, field: str | None) -> str:
    """``value`` if it is a good name (:data:`NAME_RULE`), else a one-line UserError."""
    if len(value) > MAX_NAME or not value.isprintable() or "|" in value:
        raise UserError(file, line, field, NAME_RULE, describe(value))
    return value


def one_line_text(value: str, file: str | None, line: int | None, field: str | None) -> str:
    """A description as one line: runs of whitespace (newlines of a YAML block scalar
    included) become one space; another control character is a one-line UserError."""
    text = " ".join(value.split())
    if not text.isprintable():
        raise UserError(file, line, field, "printable text", describe(value))
    return text


def check_schema_version(
    data: Any, file: str, version: int, changes_since: dict[int, str]
) -> None:
    """The file's ``schema_version`` must be ``version``; otherwise one line saying what changed.

    ``changes_since[n]`` describes what version ``n`` changed (shown for older files; a newer
    file is told which version this tool reads).
    """
    if "schema_version" not in data:
        raise UserError(
            file, 1, "schema_version", f"schema_version: {version} (required)", "no schema_version"
        )
    v = data["schema_version"]
    line = line_of(data, "schema_version", 1)
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(file, line, "schema_version", f"the integer {version}", describe(v))
    if v == version:
        return
    if v > version:
        hint = (
            f"the file is for a newer s2teardown; this one reads version {version}"
            f" ({changes_since[version]})"
        )
    else:
        changes = [
            f"v{n}: {changes_since[n]}" for n in range(max(v, 0) + 1, version + 1) if n in changes_since
        ]
        hint = f"changed since version {v}: " + "; ".join(changes)
    raise UserError(file, line, "schema_version", str(version), str(v), hint)
