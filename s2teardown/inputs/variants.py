"""Kernel variants as data: configs/variants.yaml (and a user's own file) -> `Variant` objects.

A variant names its ``base`` and overrides, per invocation kind (``teardown``, ``unmap``,
``clear``), the `Behaviour` fields that changed.  Resolving the chain gives every variant a full
behaviour per kind, and remembers which variant set each field (so a view can say "elided by P5").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from s2teardown.core.behaviour import CHOICES, Behaviour
from s2teardown.core.vocabulary import PASS_KINDS
from s2teardown.errors import UserError, describe
from s2teardown.inputs.bundled import bundled_root
from s2teardown.inputs.check import check_keys, unknown_key
from s2teardown.inputs.files import short_text
from s2teardown.inputs.yamlio import (
    YamlDocument,
    check_name,
    check_schema_version,
    did_you_mean,
    line_of,
    read_yaml,
)

SCHEMA_VERSION = 1
#: What changed in each version (printed when a file's ``schema_version`` does not match).
CHANGES_SINCE: dict[int, str] = {
    1: "first version: a list of variants, each a name, a base and the behaviour fields it "
    "changes per invocation kind",
}
_META = ("name", "base", "title", "kernel", "patch", "provenance", "description", "aliases",
         "backports")
_KEYS = _META + PASS_KINDS
_BEHAVIOUR_FIELDS = tuple(f.name for f in fields(Behaviour))
#: Behaviour fields added after schema 1 was published: a variant without a base may leave them
#: out and gets the `Behaviour` default (v5.5's value), so existing variants files stay valid.
_OPTIONAL_FIELDS = frozenset({"free"})
#: Behaviour values that exist for one invocation kind only.
_ONLY_FOR_KIND = {("free", "rcu"): "block_retry"}


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    base: str | None
    kernel: str | None = None
    patch: str | None = None
    provenance: str = ""
    description: str = ""
    aliases: tuple[str, ...] = ()
    backports: tuple[str, ...] = ()  # stable versions of an older series that carry it too
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, field) -> variant
    source: str = ""  # file it came from
    source_sha256: str = ""  # and that file's sha256


@dataclass(frozen=True)
class VariantSet:
    variants: tuple[Variant, ...]
    documents: tuple[YamlDocument, ...]  # the files read (text + sha256, for provenance)

    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def lookup(self, name: str, flag: str = "--variants") -> Variant:
        for v in self.variants:
            if name == v.name or name in v.aliases:
                return v
        every = self.names() + [a for v in self.variants for a in v.aliases]
        raise UserError(
            flag, None, None, f"a variant name ({', '.join(self.names())})", repr(short_text(name)),
            did_you_mean(name, every),
        )

    def mainline(self) -> list[Variant]:
        """Variants that are a mainline release (they carry ``kernel``), oldest first."""
        vs = [v for v in self.variants if v.kernel is not None]
        return sorted(vs, key=lambda v: parse_version(v.kernel or "0") or (0,))

    def for_kernel(self, version: str, flag: str = "--kernel") -> Variant:
        """The mainline variant in force at ``version`` (e.g. "6.8", "6.6.50", "6.8.0-47-generic");
        `match_kernel` also gives the warnings that go with the choice."""
        return self.match_kernel(version, flag).variant

    def match_kernel(self, version: str, flag: str = "--kernel") -> KernelMatch:
        """The mainline variant in force at ``version``, as a user types it (`parse_kernel`), and
        the warnings a view must show with it (`KernelMatch`).

        A row applies from its ``kernel`` release on, and from each ``backports`` entry on within
        that stable series; of the rows that apply, the newest (by ``kernel``) wins.  A version
        whose stable sublevel is unknown (a distribution ABI name such as ``6.1.0-57-cloud-arm64``)
        is taken as its series' base release, with a warning when a backport inside that series
        would change the answer; a version of a series newer than the newest row's gets that row,
        with a warning naming it.  Older than the oldest row: an input error.
        """
        want = parse_kernel(version)
        if want is None:
            # (the wording is the one the bad-input corpus pins; uname -r strings parse too)
            raise UserError(flag, None, None, "a kernel version such as 6.8 or 6.6.47", repr(version))
        rows = self.mainline()
        if not rows:
            raise UserError(flag, None, None, "a variants file with a mainline row (one with kernel)",
                            "none")
        at = want.release
        best: Variant | None = None
        for v in rows:
            if _release(v.kernel) <= at:
                best = v
            for b in v.backports:
                rel = _release(b)
                if rel[:2] == at[:2] and rel <= at:
                    best = v  # rows are oldest first: a later row's backport wins
        if best is None:
            raise UserError(flag, None, None, f"a kernel version from {rows[0].kernel} on (the oldest modelled)",
                            repr(version))
        warnings: list[str] = []
        if not want.sublevel_known:
            # the stable sublevel is not in the string: name what a backport in the series would do
            later = sorted(
                ((_release(b), v) for v in rows for b in v.backports
                 if _release(b)[:2] == at[:2] and _release(b) > at),
                key=lambda rv: rv[0],
            )
            if later:
                rel, v = later[0]
                warnings.append(
                    f"kernel {want.text}: a distribution ABI name without the stable sublevel, taken as "
                    f"{at[0]}.{at[1]}.0 ({best.name}); from {'.'.join(map(str, rel))} on the series "
                    f"carries {v.name} ({v.title})"
                )
        newer = self.newer_than_modelled(want)
        if newer is not None:
            warnings.append(newer)
        return KernelMatch(best, want, tuple(warnings))

    def newer_than_modelled(self, version: str | KernelVersion) -> str | None:
        """A warning if ``version`` is of a newer series than the newest mainline row (whose
        behaviour is then assumed unchanged), else None (also for a version that does not parse)."""
        want = parse_kernel(version) if isinstance(version, str) else version
        rows = self.mainline()
        if want is None or not rows:
            return None
        newest = rows[-1]
        if want.release[:2] <= _release(newest.kernel)[:2]:
            return None
        return (
            f"kernel {want.text} is newer than the newest modelled behaviour, {newest.name} "
            f"({newest.title}): its behaviour is assumed unchanged since Linux {newest.kernel}"
        )

    def select(self, names: Sequence[str] | None, flag: str = "--variants") -> list[Variant]:
        """The named variants in the order given (``all``, or no names: every variant)."""
        if not names:
            return list(self.variants)
        out: list[Variant] = []
        for n in names:
            if n == "all":
                out.extend(v for v in self.variants if v not in out)
                continue
            v = self.lookup(n, flag)
            if v not in out:
                out.append(v)
        return out


def parse_version(text: str) -> tuple[int, ...] | None:
    """"6.6.47" -> (6, 6, 47); "6.8" -> (6, 8); None if not a version.  The strict form of a
    variants file's ``kernel`` and ``backports``; what users type goes through `parse_kernel`."""
    parts = str(text).strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _release(text: str | None) -> tuple[int, int, int]:
    """A variants file's strict version as (major, minor, sublevel): "6.6" is 6.6.0."""
    parts = parse_version(text or "") or (0, 0)
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else 0)


@dataclass(frozen=True)
class KernelVersion:
    """A kernel version as a user typed it, understood (`parse_kernel`).

    ``release`` is (major, minor, sublevel); ``sublevel_known`` is False for a distribution ABI
    name, ``X.Y.0-N...``, whose 0 is not the stable sublevel (Debian's ``6.1.0-57-cloud-arm64``
    runs a 6.1.y stable kernel, Ubuntu's ``5.15.0-1050-aws`` a 5.15.y): the release is then
    the series' base, ``X.Y.0``.
    """

    text: str
    release: tuple[int, int, int]
    sublevel_known: bool = True


@dataclass(frozen=True)
class KernelMatch:
    """`VariantSet.match_kernel`: the variant in force, the version as understood, and the
    warnings (unknown stable sublevel, newer than modelled) every view must show with it."""

    variant: Variant
    version: KernelVersion
    warnings: tuple[str, ...] = ()


#: ``uname -r`` and the other ways a kernel version is written: an optional v, X.Y, an optional
#: .Z, then an optional suffix that starts with - + ~ or _ (local version, distribution release).
_KERNEL_RE = re.compile(r"^[vV]?(\d{1,3})\.(\d{1,3})(?:\.(\d{1,4}))?(?:([-+~_]).*)?$")
#: A distribution ABI suffix right after X.Y.0: "-" and digits ("-57-cloud-arm64", "-1050-aws",
#: "-47-generic", "-427.13.1.el9_4.aarch64"); "-rc3" is a mainline release candidate, not one.
_ABI_RE = re.compile(r"^-\d+(?:$|[-.+~_])")


def parse_kernel(text: str) -> KernelVersion | None:
    """A kernel version as users type it, or None: ``6.1``, ``6.1.192``, ``v6.6``, and
    ``uname -r`` strings (``6.8.0-47-generic``, ``6.1.0-57-cloud-arm64``,
    ``6.12.117+deb13-cloud-arm64``, ``5.15.0-1050-aws``).  The one parser of ``--kernel`` and of
    the measurements CSV's ``kernel`` column.

    Choices (docs/model.md §13): ``X.Y`` is the release X.Y.0; ``X.Y.Z`` and ``X.Y.Z`` with any
    suffix are X.Y.Z (Debian from 13 and Amazon Linux put the real sublevel there:
    ``6.12.117+deb13-...``, ``6.1.112-122...``); ``X.Y.0-N...`` is a distribution ABI name whose
    stable sublevel is not in the string: X.Y.0, sublevel unknown (the series' base release, the
    conservative reading: a backport is not assumed); ``X.Y-rcN`` / ``X.Y.0-rcN`` is X.Y.0.
    """
    raw = str(text).strip()
    m = _KERNEL_RE.match(raw)
    if m is None:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    sub = m.group(3)
    if sub is None:
        return KernelVersion(raw, (major, minor, 0))
    if int(sub) == 0 and _ABI_RE.match(raw[m.end(3):]):
        return KernelVersion(raw, (major, minor, 0), sublevel_known=False)
    return KernelVersion(raw, (major, minor, int(sub)))


def default_path() -> Path:
    return bundled_root() / "variants.yaml"


def load_variants(extra: str | Path | None = None) -> VariantSet:
    """The bundled variants, plus those of ``extra`` (a user's file, whose bases may be bundled)."""
    docs = [read_yaml(default_path())]
    if extra is not None:
        docs.append(read_yaml(extra))
    raw: list[tuple[dict[str, Any], str, Any]] = []
    for doc in docs:
        raw.extend(_entries(doc))
    digest = {d.name: d.sha256 for d in docs}
    return VariantSet(tuple(replace(v, source_sha256=digest.get(v.source, "")) for v in _resolve(raw)),
                      tuple(docs))


def _err(doc: YamlDocument, container: Any, key: Any, fld: str, expected: str, got: str,
         hint: str | None = None) -> UserError:
    line = line_of(container, key) or getattr(container, "line", None)
    return UserError(doc.name, line, fld, expected, got, hint)


def _entries(doc: YamlDocument) -> list[tuple[dict[str, Any], str, Any]]:
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(doc.name, 1, None, "a mapping with schema_version and variants", describe(data))
    check_keys(doc.name, data, "", ("schema_version", "variants"), line=1)
    check_schema_version(data, doc.name, SCHEMA_VERSION, CHANGES_SINCE)
    items = data.get("variants")
    if not isinstance(items, list) or not items:
        raise _err(doc, data, "variants", "variants", "a non-empty list of variants", describe(items))
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _err(doc, items, i, f"variants[{i}]", "a mapping", describe(item))
        out.append((_check_entry(doc, item, i), doc.name, item))
    return out


def _check_entry(doc: YamlDocument, item: dict[str, Any], i: int) -> dict[str, Any]:
    name = item.get("name")
    where = f"variants[{i}]"
    if not isinstance(name, str) or not name.strip():
        raise _err(doc, item, "name", f"{where}.name", "a non-empty string", describe(name))
    # a name is a table column, a CSV field and part of messages (check_name's rule)
    check_name(name, doc.name, line_of(item, "name") or getattr(item, "line", None), f"{where}.name")
    where = f"variants[{name}]"
    check_keys(doc.name, item, where, _KEYS, getattr(item, "line", None), "variant")
    for key in ("base", "title", "kernel", "patch", "provenance", "description"):
        v = item.get(key)
        if v is not None and not isinstance(v, str):
            raise _err(doc, item, key, f"{where}.{key}", "a string", describe(v))
    if item.get("base") is None and not item.get("title"):
        raise _err(doc, item, "name", f"{where}.title", "a title", "none")
    for key in ("aliases", "backports"):
        names = item.get(key, [])
        if not isinstance(names, list) or not all(isinstance(a, str) for a in names):
            raise _err(doc, item, key, f"{where}.{key}", "a list of strings", describe(names))
    for j, alias in enumerate(item.get("aliases", [])):
        check_name(alias, doc.name, line_of(item["aliases"], j) or line_of(item, "aliases"),
                   f"{where}.aliases[{j}]")
    for key in ("kernel", *range(len(item.get("backports", [])))):
        text = item.get("kernel") if key == "kernel" else item["backports"][key]
        if text is not None and parse_version(text) is None:
            container = item if key == "kernel" else item["backports"]
            raise _err(doc, container, key, f"{where}.{'kernel' if key == 'kernel' else 'backports'}",
                       "a kernel version such as 6.6 or 6.6.47", describe(text))
    for kind in PASS_KINDS:
        block = item.get(kind)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise _err(doc, item, kind, f"{where}.{kind}", "a mapping of behaviour fields", describe(block))
        for fk, fv in block.items():
            if fk not in CHOICES:
                raise unknown_key(doc.name, line_of(block, fk) or getattr(block, "line", None),
                                  f"{where}.{kind}.{fk}", fk, list(CHOICES), "behaviour")
            if fv not in CHOICES[fk]:
                raise _err(doc, block, fk, f"{where}.{kind}.{fk}", "one of " + ", ".join(CHOICES[fk]),
                           describe(fv), did_you_mean(fv, CHOICES[fk]) if isinstance(fv, str) else None)
            only = _ONLY_FOR_KIND.get((fk, fv))
            if only is not None and kind != only:
                raise _err(doc, block, fk, f"{where}.{kind}.{fk}",
                           f"{fk}: {fv} only under {only} (the fault path's table->block retry)",
                           f"{fk}: {fv} under {kind}")
    if item.get("base") is None:
        for kind in PASS_KINDS:
            block = item.get(kind) or {}
            missing = [f for f in _BEHAVIOUR_FIELDS if f not in block and f not in _OPTIONAL_FIELDS]
            if missing:
                raise _err(doc, item, kind if kind in item else "name", f"{where}.{kind}",
                           "every behaviour field in a variant without a base",
                           "missing " + ", ".join(missing))
    return item


def _resolve(raw: list[tuple[dict[str, Any], str, Any]]) -> tuple[Variant, ...]:
    by_name: dict[str, tuple[dict[str, Any], str, Any]] = {}
    for item, src, node in raw:
        name = item["name"]
        taken = set(by_name) | {a for it, _, _ in by_name.values() for a in it.get("aliases", [])}
        for n in [name, *item.get("aliases", [])]:
            if n in taken:
                raise UserError(src, line_of(node, "name"), f"variants[{name}].name",
                                "a name not used by another variant", repr(n))
        by_name[name] = (item, src, node)
    done: dict[str, Variant] = {}

    def build(name: str, stack: tuple[str, ...]) -> Variant:
        if name in done:
            return done[name]
        item, src, node = by_name[name]
        base = item.get("base")
        if base is None:
            behaviours = {k: Behaviour(**item[k]) for k in PASS_KINDS}
            origin = {(k, f): name for k in PASS_KINDS for f in _BEHAVIOUR_FIELDS}
        else:
            if base not in by_name:
                raise UserError(src, line_of(node, "base"), f"variants[{name}].base",
                                "the name of a variant defined in this or the bundled file",
                                repr(base), did_you_mean(base, by_name))
            if base in stack:
                raise UserError(src, line_of(node, "base"), f"variants[{name}].base",
                                "a chain of bases without a cycle", " -> ".join((*stack, name, base)))
            parent = build(base, (*stack, name))
            behaviours = dict(parent.behaviours)
            origin = dict(parent.origin)
            for k in PASS_KINDS:
                block = item.get(k) or {}
                if block:
                    behaviours[k] = replace(behaviours[k], **block)
                    for f in block:
                        if getattr(parent.behaviours[k], f) != block[f]:
                            origin[(k, f)] = name
        v = Variant(
            name=name,
            title=item.get("title") or (by_name[base][0].get("title", "") if base else ""),
            base=base,
            kernel=item.get("kernel"),
            patch=item.get("patch"),
            provenance=item.get("provenance", ""),
            description=" ".join(str(item.get("description", "")).split()),
            aliases=tuple(item.get("aliases", [])),
            backports=tuple(item.get("backports", [])),
            behaviours=behaviours,
            origin=origin,
            source=src,
        )
        done[name] = v
        return v

    return tuple(build(name, ()) for name in by_name)


def variants_schema() -> dict[str, Any]:
    """JSON Schema of a variants file (generated from the Behaviour choices)."""
    behaviour = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f: {"enum": list(c)} for f, c in CHOICES.items()},
    }
    props: dict[str, Any] = {k: {"type": "string"} for k in _META if k not in ("aliases", "backports")}
    props["aliases"] = {"type": "array", "items": {"type": "string"}}
    props["backports"] = {"type": "array", "items": {"type": "string"}}  # stable versions, "6.6.47"
    for k in PASS_KINDS:
        props[k] = behaviour
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "s2teardown variants file",
        "type": "object",
        "additionalProperties": False,
        "required": ["schema_version", "variants"],
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "variants": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": False, "required": ["name"],
                          "properties": props},
            },
        },
    }
