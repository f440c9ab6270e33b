"""Safe, strict YAML input with line numbers.

What comes back are plain Python values — :class:`YamlMap` (a ``dict``), :class:`YamlList` (a
``list``), ``str``, ``int``, ``float``, ``bool``, ``None`` — that remember where they were:

* ``YamlMap.lines[key]`` is the 1-based line of ``key`` (for any key, at any depth), and
  ``YamlMap.line`` the line where the mapping itself starts;
* ``YamlList.lines[i]`` is the line of item ``i``, and ``YamlList.line`` that of the list.

``line_of(container, key)`` reads either, and is ``None`` for plain dicts and lists.  So a
validator can report ``FILE:LINE: section.field: expected ..., got ...`` for anything.
Both classes compare equal to plain dicts/lists and serialise as them (``json.dumps``).

Entry points:

* :func:`load_yaml` ``(path) -> data`` and :func:`load_yaml_text` ``(text, name) -> data``;
* :func:`read_yaml` ``(path) -> YamlDocument`` and :func:`read_yaml_text` — the data together
  with the raw text and its sha256, so that callers can embed their inputs in output files;
* :func:`sha256_of` ``(path)``; :func:`suggest` / :func:`did_you_mean` for unknown names.

Rules (each violation is a one-line :class:`~s2teardown.errors.UserError` naming file and line):

* no explicit tags at all (``!!python/object``, ``!foo``, even ``!!str``);
* no anchors or aliases (``&a``/``*a``): write values out — simple, and it rules out
  "billion laughs" expansion;
* no duplicate keys in a mapping (reported at the second one); keys must be scalars, and a
  string key printable (no control characters: keys are echoed in messages);
* at most :data:`MAX_BYTES` (1 MiB) of UTF-8 text (a leading BOM is ignored); binary content
  (a NUL byte) and invalid UTF-8 are errors; the file is read by
  :func:`s2teardown.inputs.files.read_user_file` (regular files only, the cap checked before
  reading, one-line errors for missing, unreadable and over-long paths);
* exactly one document, and it must not be empty;
* integers must fit in 64 bits (``-2**63 .. 2**63-1``): larger ones are refused, not turned
  into overflows downstream;
* scalars follow the YAML 1.2 core schema, not YAML 1.1: only ``true``/``false`` are booleans
  (``yes``, ``no``, ``on``, ``off`` stay strings), ``null``/``~``/empty are null, ``1e-9`` is a
  float, ``0777`` is the string ``'0777'`` (no octal surprises), ``0x1F``/``0o17`` are ints,
  ``_`` may group digits (``1_000``), ``.inf``/``.nan`` are floats (validators reject them
  where a finite number is needed); dates stay strings.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from s2teardown.errors import UserError, describe
from s2teardown.inputs.check import (
    check_name,
    check_schema_version,
    did_you_mean,
    line_of,
    one_line_text,
    suggest,
)
from s2teardown.inputs.files import FileKind, cap_text, read_user_file

__all__ = [
    "check_name",
    "check_schema_version",
    "refuse_binary",
    "one_line_text",
    "MAX_BYTES",
    "YAML_FILE",
    "YamlDocument",
    "YamlList",
    "YamlMap",
    "did_you_mean",
    "line_of",
    "load_yaml",
    "load_yaml_text",
    "read_yaml",
    "read_yaml_text",
    "sha256_of",
    "suggest",
]

#: Largest input accepted, in bytes.
MAX_BYTES = 1 << 20
_MAX_DESC = cap_text(MAX_BYTES)
#: How a YAML file is read (inputs.files: regular files only, capped before reading).
YAML_FILE = FileKind("a YAML file", "an existing file", MAX_BYTES)
#: Deepest nesting accepted (a guard against pathological input).
MAX_DEPTH = 64
#: Integers must fit in 64 bits (signed): every consumer can then turn them into a float or a
#: numpy int64 without overflowing.
MAX_INT = (1 << 63) - 1


class YamlMap(dict[Any, Any]):
    """A mapping from a YAML file; ``lines[key]`` is the line of each key, ``line`` its own."""

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}


class YamlList(list[Any]):
    """A sequence from a YAML file; ``lines[i]`` is the line of item ``i``, ``line`` its own."""

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


@dataclass(frozen=True)
class YamlDocument:
    """One loaded file: the data, the exact text it came from, and the sha256 of its bytes."""

    data: Any
    text: str
    sha256: str
    name: str


# --------------------------------------------------------------------------------------------
# the loader

_INT_RE = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
          |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
          |[-+]?\.(?:inf|Inf|INF)
          |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")

_T_NULL = "tag:yaml.org,2002:null"
_T_BOOL = "tag:yaml.org,2002:bool"
_T_INT = "tag:yaml.org,2002:int"
_T_FLOAT = "tag:yaml.org,2002:float"


def _dotted(path: tuple[Any, ...]) -> str | None:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def _written_tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix) :] if tag.startswith(prefix) else tag


class _StrictLoader(yaml.SafeLoader):
    """Composes a node tree (never constructs objects) and refuses tags, anchors and aliases."""

    # YAML 1.2 core-schema resolvers only (set below), not the YAML 1.1 ones of SafeLoader.
    yaml_implicit_resolvers: dict[Any, Any] = {}

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self._name = name
        self._paths: list[tuple[Any, ...]] = [()]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        path = self._paths[-1]
        if parent is not None and index is not None:
            if isinstance(index, ScalarNode):
                path = (*path, index.value)
            elif isinstance(index, int):
                path = (*path, index)
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if len(path) > MAX_DEPTH:
            raise UserError(
                self._name,
                event.start_mark.line + 1,
                None,
                f"nesting at most {MAX_DEPTH} levels deep",
                "deeper nesting",
            )
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise UserError(
                self._name,
                line,
                _dotted(path),
                "a value written out (YAML anchors and aliases are not supported)",
                f"alias '*{event.anchor}'",
            )
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise UserError(
                self._name,
                line,
                _dotted(path),
                "a value written out (YAML anchors and aliases are not supported)",
                f"anchor '&{event.anchor}'",
            )
        if isinstance(event, ScalarEvent | CollectionStartEvent) and event.tag is not None:
            raise UserError(
                self._name,
                line,
                _dotted(path),
                "a plain value (YAML tags are not supported)",
                f"tag {_written_tag(event.tag)!r}",
            )
        self._paths.append(path)
        try:
            return yaml.composer.Composer.compose_node(self, parent, index)
        finally:
            self._paths.pop()


_StrictLoader.add_implicit_resolver(_T_BOOL, _BOOL_RE, list("tTfF"))
_StrictLoader.add_implicit_resolver(_T_INT, _INT_RE, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_T_FLOAT, _FLOAT_RE, list("-+.0123456789"))
_StrictLoader.add_implicit_resolver(_T_NULL, _NULL_RE, ["~", "n", "N", ""])

_CParser: Any = getattr(getattr(yaml, "_yaml", None), "CParser", None)  # libyaml, when built in

if _CParser is not None:

    class _FastStrictLoader(yaml.composer.Composer, _CParser, yaml.resolver.Resolver):  # type: ignore[misc]
        """`_StrictLoader`'s composer and checks over libyaml's scanner and parser (the pure-Python
        ones are most of the start-up of a command).  Only used on the way to success: a document
        it cannot compose is parsed again by `_StrictLoader`, whose message is the one reported."""

        yaml_implicit_resolvers = _StrictLoader.yaml_implicit_resolvers
        compose_node = _StrictLoader.compose_node

        def __init__(self, text: str, name: str) -> None:
            _CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._name = name
            self._paths: list[tuple[Any, ...]] = [()]


def _fast_compose(text: str, name: str) -> Node | None:
    """The document's node tree by way of libyaml, or None if that is not possible."""
    if _CParser is None:
        return None
    loader = None
    try:
        loader = _FastStrictLoader(text, name)
        node: Node | None = loader.get_single_node()
        return node
    except Exception:  # noqa: BLE001 - any problem: the pure-Python parser reports it
        return None
    finally:
        if loader is not None:
            loader.dispose()


def _short_number(text: str, limit: int = 24) -> str:
    """A long number as its first and last digits and its length (errors stay short)."""
    if len(text) <= limit:
        return text
    return f"{text[:10]}...{text[-6:]} ({len(text)} characters)"


def _scalar(node: ScalarNode, name: str, path: tuple[Any, ...]) -> Any:
    text = node.value
    try:
        if node.tag == _T_NULL:
            return None
        if node.tag == _T_BOOL:
            return text.lower() == "true"
        if node.tag == _T_INT:
            value = int(text.replace("_", ""), 0)
            if not -MAX_INT - 1 <= value <= MAX_INT:
                raise UserError(
                    name,
                    node.start_mark.line + 1,
                    _dotted(path),
                    "an integer that fits in 64 bits (-2**63 .. 2**63-1)",
                    _short_number(text),
                )
            return value
        if node.tag == _T_FLOAT:
            low = text.lower()
            if low.endswith(".nan"):
                return math.nan
            if low.endswith(".inf"):
                return -math.inf if low.startswith("-") else math.inf
            return float(text.replace("_", ""))
    except ValueError:
        raise UserError(
            name,
            node.start_mark.line + 1,
            _dotted(path),
            "a well-formed number",
            describe(text),
        ) from None
    return text


def _convert(node: Node, name: str, path: tuple[Any, ...]) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, ScalarNode):
        return _scalar(node, name, path)
    if isinstance(node, SequenceNode):
        seq = YamlList(line)
        for i, item in enumerate(node.value):
            seq.append(_convert(item, name, (*path, i)))
            seq.lines.append(item.start_mark.line + 1)
        return seq
    if isinstance(node, MappingNode):
        out = YamlMap(line)
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise UserError(
                    name,
                    key_line,
                    _dotted(path),
                    "a plain scalar mapping key",
                    "a mapping" if isinstance(key_node, MappingNode) else "a list",
                )
            key = _scalar(key_node, name, path)
            if isinstance(key, str) and not key.isprintable():
                # (a key is echoed in messages: a newline or an escape sequence would break them)
                raise UserError(
                    name, key_line, _dotted(path), "a key of printable characters", describe(key)
                )
            if key in out:
                raise UserError(
                    name,
                    key_line,
                    _dotted((*path, key)),
                    "each key once",
                    f"a second {key!r} (first on line {out.lines[key]})",
                )
            out[key] = _convert(value_node, name, (*path, key))
            out.lines[key] = key_line
        return out
    raise UserError(name, line, _dotted(path), "a plain value", type(node).__name__)


def _parse(text: str, name: str) -> Any:
    if text.startswith("\ufeff"):
        text = text[1:]
    fast = _fast_compose(text, name)
    if fast is not None:
        return _check_document(fast, name)
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text, name)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or "invalid syntax"
        if err.context and err.context.startswith("expected"):
            problem = f"{err.context}, {problem}"
        elif err.context:
            problem = f"{problem} ({err.context})"
        raise UserError(
            name,
            None if mark is None else mark.line + 1,
            None,
            "valid YAML",
            f"a syntax error: {problem}",
        ) from None
    except ReaderError as err:
        line = text.count("\n", 0, max(0, err.position)) + 1
        char = err.character
        got = f"character U+{char:04X}" if isinstance(char, int) else f"{char!r}"
        raise UserError(name, line, None, "printable text", got) from None
    except yaml.YAMLError as err:
        raise UserError(name, None, None, "valid YAML", str(err).replace("\n", " ")) from None
    except RecursionError:
        raise UserError(
            name, None, None, f"nesting at most {MAX_DEPTH} levels deep", "deeper nesting"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return _check_document(node, name)


def _check_document(node: Node | None, name: str) -> Any:
    if node is None or (isinstance(node, ScalarNode) and node.tag == _T_NULL and not node.value):
        raise UserError(name, 1, None, "a YAML document", "an empty file")
    return _convert(node, name, ())


# --------------------------------------------------------------------------------------------
# files


def _decode(raw: bytes, name: str) -> str:
    if len(raw) > MAX_BYTES:
        raise UserError(name, None, None, f"a file of at most {_MAX_DESC}", f"{len(raw)} bytes")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise UserError(
            name,
            raw.count(b"\n", 0, nul) + 1,
            None,
            "a UTF-8 text file",
            f"binary data (NUL byte at offset {nul})",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            name,
            raw.count(b"\n", 0, err.start) + 1,
            None,
            "UTF-8 text",
            f"invalid byte 0x{raw[err.start]:02x} at offset {err.start}",
        ) from None


def _read_bytes(path: Path, name: str) -> bytes:
    return read_user_file(path, YAML_FILE)


def refuse_binary(text: str, name: str, expected: str) -> None:
    """A one-line UserError (file, line, offset) if ``text`` holds a NUL byte: binary data."""
    nul = text.find("\x00")
    if nul >= 0:
        raise UserError(
            name, text.count("\n", 0, nul) + 1, None, expected, f"binary data (NUL byte at offset {nul})"
        )


def read_yaml_text(text: str, name: str = "<string>") -> YamlDocument:
    """Parse ``text`` (errors are reported against ``name``) into a :class:`YamlDocument`."""
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_BYTES:
        raise UserError(name, None, None, f"a file of at most {_MAX_DESC}", f"{len(raw)} bytes")
    refuse_binary(text, name, "a UTF-8 text file")
    data = _parse(text, name)
    return YamlDocument(data, text, hashlib.sha256(raw).hexdigest(), name)


def read_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; ``name`` (used in errors) is ``str(path)``."""
    p = Path(path)
    name = str(path)
    raw = _read_bytes(p, name)
    text = _decode(raw, name)
    data = _parse(text, name)
    return YamlDocument(data, text, hashlib.sha256(raw).hexdigest(), name)


def load_yaml(path: str | Path) -> Any:
    """The data of a YAML file (see :func:`read_yaml` for text and sha256 too)."""
    return read_yaml(path).data


def load_yaml_text(text: str, name: str = "<string>") -> Any:
    """The data of YAML ``text``; errors name ``name`` as the file."""
    return read_yaml_text(text, name).data


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the same digest :func:`read_yaml` reports)."""
    name = str(path)
    return hashlib.sha256(_read_bytes(Path(path), name)).hexdigest()
