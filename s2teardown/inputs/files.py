"""The one way a user's file is read: every reader (YAML, measurements CSV, traces, cost tables)
goes through :func:`read_user_file`.

Rules (each a one-line :class:`~s2teardown.errors.UserError`, exit 2, naming the file):

* the path is at most :data:`PATH_MAX` bytes and each of its names at most :data:`NAME_MAX`
  (longer ones are refused before the file system sees them, with their length, not their text);
* only a regular file is read: a directory, a FIFO, a device or a socket is refused.  The file
  is opened with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read, so a FIFO
  never hangs and ``/dev/zero`` is never read;
* its size is capped before reading (``st_size``), and the read itself stops one byte past the
  cap (a file that grows while it is read is refused too), in chunks of :data:`CHUNK` bytes;
* a missing file, a permission problem or any other ``OSError`` is one line too.

The messages are one family, ``FILE: expected WHAT, got ...``::

    m.yaml: expected an existing file, got no such file
    costs.json: expected a cost table file, got a FIFO
    big.csv: expected a file of at most 16 MiB (16777216 bytes), got 8589934592 bytes
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from s2teardown.errors import UserError

__all__ = [
    "CHUNK",
    "NAME_MAX",
    "PATH_MAX",
    "FileKind",
    "cap_text",
    "check_path",
    "is_file",
    "read_user_file",
    "short_text",
]

#: Longest path accepted, in bytes (Linux's PATH_MAX, the terminating NUL included).
PATH_MAX: Final = 4096
#: Longest name of one path component, in bytes (Linux's NAME_MAX).
NAME_MAX: Final = 255
#: Bytes read at a time.
CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class FileKind:
    """What a reader expects: its words in messages and its size cap."""

    what: str  #: "a YAML file": the expected thing when a directory, FIFO or device is given
    existing: str  #: "an existing file": the expected thing when there is no such file
    cap: int  #: the largest size accepted, in bytes


def cap_text(cap: int) -> str:
    """``1 MiB (1048576 bytes)``: a cap as the messages write it."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if cap >= 1 << shift and cap % (1 << shift) == 0:
            return f"{cap >> shift} {unit} ({cap} bytes)"
    return f"{cap} bytes"


def short_text(text: str, limit: int = 256) -> str:
    """A long user string as its head, its tail and its length (messages stay short)."""
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...{text[-32:]} ({len(text)} characters)"


def check_path(path: str | Path, source: str | None = None) -> None:
    """A one-line UserError if ``path`` is longer than PATH_MAX bytes or one of its names longer
    than NAME_MAX bytes; ``source`` (a flag such as ``--machine``) is named as the error's file,
    or else the shortened path itself."""
    text = os.fspath(path)
    raw = os.fsencode(text)
    where = source if source is not None else short_text(text)
    if b"\x00" in raw:
        raise UserError(where, None, None, "a path without NUL characters", "a NUL character")
    if len(raw) >= PATH_MAX:
        raise UserError(where, None, None, f"a path of at most {PATH_MAX - 1} bytes",
                        f"{len(raw)} bytes")
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > NAME_MAX:
        raise UserError(where, None, None,
                        f"a path whose names are at most {NAME_MAX} bytes each",
                        f"a name of {longest} bytes")


def is_file(path: str | Path) -> bool:
    """Whether ``path`` names a regular file (False, never an exception, for a path too long,
    one holding a NUL, or one the file system refuses)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (a named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))


def _read_capped(fh: io.RawIOBase, cap: int) -> bytes:
    """At most ``cap + 1`` bytes, in chunks: one byte more than the cap tells a too-large file."""
    parts: list[bytes] = []
    left = cap + 1
    while left > 0:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _too_big(name: str, kind: FileKind, got: str) -> UserError:
    return UserError(name, None, None, f"a file of at most {cap_text(kind.cap)}", got)


def read_user_file(path: str | Path, kind: FileKind) -> bytes:
    """The bytes of the user's file ``path`` (errors name ``str(path)``), by the rules above."""
    name = str(path)
    check_path(name)
    try:
        # io.open (not os.open alone): tests deny a file by patching io.open
        with io.open(name, "rb", buffering=0, opener=_nonblocking) as fh:  # noqa: UP020
            st = os.fstat(fh.fileno())
            other = _not_regular(st.st_mode)
            if other is not None:
                raise UserError(name, None, None, kind.what, other)
            if st.st_size > kind.cap:
                raise _too_big(name, kind, f"{st.st_size} bytes")
            raw = _read_capped(fh, kind.cap)
    except FileNotFoundError:
        raise UserError(name, None, None, kind.existing, "no such file") from None
    except PermissionError:
        raise UserError(name, None, None, "a readable file", "permission denied") from None
    except IsADirectoryError:
        raise UserError(name, None, None, kind.what, "a directory") from None
    except NotADirectoryError:
        raise UserError(name, None, None, kind.existing,
                        "a path through something that is not a directory") from None
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            raise UserError(short_text(name), None, None,
                            f"a path of at most {PATH_MAX - 1} bytes", "a path too long") from None
        reason = err.strerror or type(err).__name__
        raise UserError(name, None, None, "a readable file", reason.lower()) from None
    if len(raw) > kind.cap:
        raise _too_big(name, kind, f"more than {kind.cap} bytes (the file grew while read)")
    return raw
