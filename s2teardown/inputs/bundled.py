"""Bundled configuration files (machines, scenarios, variants) and name-or-path resolution.

The wheel force-includes the repository's top-level ``configs/`` as ``s2teardown/configs``;
an editable or source checkout has only the top-level ``configs/``.  :func:`bundled_root` finds
whichever exists, the installed copy first.
"""

from __future__ import annotations

import os
from pathlib import Path

from s2teardown.errors import UserError
from s2teardown.inputs.files import check_path, is_file, short_text
from s2teardown.inputs.yamlio import did_you_mean

__all__ = ["bundled_dir", "bundled_names", "bundled_root", "resolve_config"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the s2teardown package


def bundled_root() -> Path:
    """The directory holding the bundled ``configs`` (installed copy first, then the repo's)."""
    installed = _PACKAGE_DIR / "configs"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / "configs"


def bundled_dir(kind: str) -> Path:
    """``configs/<kind>`` of the installation, e.g. ``bundled_dir("machines")``."""
    if not kind or "/" in kind or "\\" in kind or kind in {".", ".."}:
        raise ValueError(f"kind must be a plain directory name, got {kind!r}")
    installed = _PACKAGE_DIR / "configs" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / "configs" / kind


def bundled_names(kind: str, suffix: str = ".yaml") -> list[str]:
    """Sorted names (file stems) of the bundled ``kind`` files; empty if there are none."""
    directory = bundled_dir(kind)
    if not directory.is_dir():
        return []
    return sorted(
        p.name[: -len(suffix)]
        for p in directory.iterdir()
        if p.name.endswith(suffix) and p.is_file() and not p.name.startswith(".")
    )


def resolve_config(
    name_or_path: str | Path, kind: str, suffix: str = ".yaml", *, flag: str | None = None
) -> Path:
    """Find a config file: an existing path is taken as is; else a bundled name (``d05`` or
    ``d05.yaml``) resolves to ``bundled_dir(kind)/d05.yaml``.

    Anything else is a :class:`UserError` listing the bundled names, with a "did you mean";
    ``flag`` (e.g. ``"--machine"``) is named as the error's source.
    """
    text = str(name_or_path)
    check_path(text, flag)
    path = Path(name_or_path)
    if is_file(path):
        return path
    names = bundled_names(kind, suffix)
    stem = text[: -len(suffix)] if text.endswith(suffix) else text
    if stem and "/" not in stem and "\\" not in stem and stem in names:
        return bundled_dir(kind) / f"{stem}{suffix}"
    if os.path.lexists(path):  # a directory or something else: let the reader say what is wrong
        return path
    listed = ", ".join(names) if names else "none"
    hint = did_you_mean(Path(stem).name, names)
    raise UserError(
        flag,
        None,
        None,
        f"an existing file or a bundled {kind[:-1] if kind.endswith('s') else kind} "
        f"name ({listed})",
        f"{short_text(text)!r}, which is neither",
        hint,
    )
