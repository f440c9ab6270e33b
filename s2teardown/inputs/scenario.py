"""Scenario files: an explicit Stage-2 layout and the event that tears (part of) it down.

A scenario file (``configs/scenarios/*.yaml``, or any path given to ``--scenario``) says what
the guest's Stage-2 page table holds — memslots at given guest-physical addresses, and in each
one which ranges are mapped with which leaf size (pages, PMD or PUD blocks, device pages) — and
which notifier calls run against it (process exit, one or several munmaps, or an explicit list
of invocations).  docs/scenario-format.md is the reference; in short::

    schema_version: 1
    name: small
    geometry: {granule_bytes: 4096, ipa_bits: auto}
    memslots:
      - name: ram
        gpa_bytes: 0x40000000
        size_bytes: 0x40000000
        regions:                                   # in address order; gaps are unmapped
          - {size_bytes: 2097152, leaf_bytes: 4096}            # offset_bytes defaults to
          - {size_bytes: 1071644672, leaf_bytes: 2097152}      # where the previous one ended
      - name: flash
        gpa_bytes: 0
        ...
        mapping: [{leaf_bytes: 4096, percent: 100}]          # or this shorthand
    event: exit                 # or {munmap: {gpa_bytes, size_bytes}}, {unmaps: [...]},
                                # {invocations: [{kind, gpa_bytes, size_bytes, blockable}]}

Every problem is one :class:`~s2teardown.errors.UserError` line
``FILE:LINE: dotted.field: expected ..., got ...`` (exit code 2), with a "did you mean" for
unknown keys.  What comes back is a :class:`Scenario` whose ``layout`` satisfies
:meth:`Layout.validate` and whose ``event`` the counts (``counts.batch_from_layout``) and the
walker (``walker.walk``) accept as is.

Public API: :func:`load_scenario`, :func:`scenario_from_text`, :class:`Scenario`,
:class:`Step`, :func:`scenario_schema`, :data:`SCHEMA_VERSION`, :data:`CHANGES_SINCE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from s2teardown.core.geometry import GRANULES, MAX_IPA_BITS, MIN_IPA_BITS, Geometry, auto_ipa_bits
from s2teardown.core.host import EXIT_MMAP, MUNMAP, HostOp
from s2teardown.core.layout import (
    CLEAR,
    TEARDOWN,
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    munmap_event,
)
from s2teardown.errors import UserError, describe
from s2teardown.inputs.bundled import resolve_config
from s2teardown.inputs.check import check_keys, unknown_key
from s2teardown.inputs.units import format_size, parse_size
from s2teardown.inputs.yamlio import (
    YamlDocument,
    check_name,
    check_schema_version,
    did_you_mean,
    line_of,
    one_line_text,
    read_yaml,
    read_yaml_text,
)

__all__ = [
    "CHANGES_SINCE",
    "EVENT_FORMS",
    "MAX_MEMSLOTS",
    "SCHEMA_VERSION",
    "Scenario",
    "Step",
    "load_scenario",
    "scenario_from_text",
    "scenario_schema",
]

#: The version of the file format this code reads.
SCHEMA_VERSION: Final = 1
#: What changed in each version (printed when a file's ``schema_version`` does not match).
CHANGES_SINCE: Final[dict[int, str]] = {
    1: "first version: geometry, memslots with regions or a mapping shorthand, and an event "
    "(exit, munmap, unmaps or invocations)",
}

#: ``KVM_USER_MEM_SLOTS`` on arm64 in v5.5 (arch/arm64/include/asm/kvm_host.h).
MAX_MEMSLOTS: Final = 512

TOP_KEYS: Final = ("schema_version", "name", "description", "geometry", "memslots", "event")
GEOMETRY_KEYS: Final = ("granule_bytes", "ipa_bits")
MEMSLOT_KEYS: Final = ("name", "gpa_bytes", "size_bytes", "regions", "mapping")
REGION_KEYS: Final = ("offset_bytes", "size_bytes", "leaf_bytes", "hole", "device")
MAPPING_KEYS: Final = ("leaf_bytes", "hole", "device", "percent")
#: The forms of ``event``: the string ``exit`` or a mapping with exactly one of the others.
EVENT_FORMS: Final = ("exit", "munmap", "unmaps", "invocations")
RANGE_KEYS: Final = ("gpa_bytes", "size_bytes")
UNMAP_KEYS: Final = ("name", "gpa_bytes", "size_bytes")
INVOCATION_KEYS: Final = ("kind", "gpa_bytes", "size_bytes", "blockable")
INVOCATION_KINDS: Final = (UNMAP, CLEAR, TEARDOWN)

PERCENT_TOLERANCE: Final = 1e-9


# ---------------------------------------------------------------------------------------------
# the validated result


@dataclass(frozen=True)
class Step:
    """A named part of the event: the invocations one user-visible action raises."""

    name: str
    invocations: tuple[Invocation, ...]


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the layout, and the event as the notifier calls it raises.

    ``event`` is the concatenation of ``steps`` (one step for ``exit`` or ``munmap``, one per
    named unmap, one per explicit invocation).  ``path`` is None for text; ``sha256`` is that of
    the file's bytes (or of the text's UTF-8).
    """

    name: str
    description: str
    layout: Layout
    event: tuple[Invocation, ...]
    path: str | None = None
    sha256: str | None = None
    text: str | None = None
    steps: tuple[Step, ...] = ()
    event_form: str = ""  # one of EVENT_FORMS

    @property
    def geometry(self) -> Geometry:
        return self.layout.geometry

    @property
    def host(self) -> tuple[HostOp, ...]:
        """The host mm's own operations on guest RAM after the notifiers (core/host.py):
        ``exit`` runs exit_mmap, one ``munmap`` (or a one-item ``unmaps``) unmap_region over its
        range.  Several unmaps and explicit invocations leave the host side out (the host model
        takes one range operation, then an exit)."""
        if self.event_form == "exit":
            return (HostOp(EXIT_MMAP),)
        if self.event_form in ("munmap", "unmaps") and len(self.steps) == 1:
            unmap = self.steps[0].invocations[-1]
            return (HostOp(MUNMAP, unmap.lo, unmap.hi),)
        return ()

    @property
    def source_name(self) -> str:
        """What errors name as the file."""
        return self.path if self.path is not None else self.name

    def mapped_by_leaf(self) -> dict[int, int]:
        """Mapped bytes per leaf size (device pages included), smallest leaf first."""
        out: dict[int, int] = {}
        for e in self.layout.extents:
            out[e.leaf] = out.get(e.leaf, 0) + (e.hi - e.lo)
        return dict(sorted(out.items()))

    @property
    def device_bytes(self) -> int:
        return sum(e.hi - e.lo for e in self.layout.extents if e.device)

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready description (for embedding in output files)."""
        lay = self.layout
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
            "geometry": {"granule_bytes": lay.geometry.granule, "ipa_bits": lay.geometry.ipa_bits},
            "memslots": [
                {"name": s.name, "gpa_bytes": s.lo, "size_bytes": s.hi - s.lo}
                for s in lay.memslots
            ],
            "extents": [
                {
                    "memslot": lay.memslots[e.slot].name,
                    "gpa_bytes": e.lo,
                    "size_bytes": e.hi - e.lo,
                    "leaf_bytes": e.leaf,
                    "device": e.device,
                }
                for e in lay.extents
            ],
            "event_form": self.event_form,
            "steps": [
                {"name": st.name, "invocations": [_inv_dict(i) for i in st.invocations]}
                for st in self.steps
            ],
            "path": self.path,
            "sha256": self.sha256,
        }


def _inv_dict(inv: Invocation) -> dict[str, Any]:
    return {
        "kind": inv.kind,
        "gpa_bytes": inv.lo,
        "size_bytes": inv.hi - inv.lo,
        "blockable": inv.blockable,
    }


# ---------------------------------------------------------------------------------------------
# helpers


def _line(container: Any, key: Any, fallback: int | None) -> int | None:
    """Line of ``key`` in ``container``, else the container's own line, else ``fallback``."""
    line = line_of(container, key)
    if line is None:
        line = getattr(container, "line", None) or fallback
    return line


def _human(n: int) -> str:
    """``1073741824`` -> ``0x40000000 (1 GiB)``; small or odd numbers stay decimal."""
    if n < 4096:
        return str(n)
    return f"{n:#x} ({format_size(n)})"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _mapping(file: str, raw: Any, where: str, line: int | None, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise UserError(file, line, where, what, describe(raw))
    return raw


def _list(file: str, raw: Any, where: str, line: int | None, what: str) -> list[Any]:
    if not isinstance(raw, list):
        raise UserError(file, line, where, what, describe(raw))
    return raw


def _item_line(seq: Any, i: int, fallback: int | None) -> int | None:
    line = line_of(seq, i)
    return fallback if line is None else line


def _int(
    file: str,
    raw: Any,
    where: str,
    line: int | None,
    expected: str,
    *,
    minimum: int = 0,
) -> int:
    """``raw`` as an integer >= ``minimum``; byte keys get a hint for size strings."""
    hint: str | None = None
    if isinstance(raw, bool) or not isinstance(raw, int):
        if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
            hint = f"write {int(raw)} without a decimal point"
        elif isinstance(raw, str) and where.endswith("_bytes"):
            try:
                hint = f"write plain bytes, {parse_size(raw)}; no size strings"
            except ValueError:
                hint = "write plain bytes such as 2097152 or 0x200000; no size strings"
        raise UserError(file, line, where, expected, describe(raw), hint)
    if raw < minimum:
        raise UserError(file, line, where, expected, describe(raw))
    return raw


def _bool(file: str, raw: Any, where: str, line: int | None) -> bool:
    if raw is True or raw is False:
        return raw
    hint = did_you_mean(raw, ["true", "false"]) if isinstance(raw, str) else None
    if isinstance(raw, str) and raw.lower() in ("yes", "no", "on", "off", "y", "n"):
        hint = f"{raw!r} is a string here (YAML 1.2); write true or false"
    raise UserError(file, line, where, "true or false", describe(raw), hint)


def _required(
    file: str, container: Mapping[str, Any], key: str, where: str, line: int | None, what: str
) -> Any:
    if key not in container:
        raise UserError(file, line, _join(where, key), f"{what} (required)", f"no {key!r}")
    return container[key]


# ---------------------------------------------------------------------------------------------
# top level


def _check_version(data: Mapping[str, Any], file: str) -> None:
    check_schema_version(data, file, SCHEMA_VERSION, CHANGES_SINCE)


def _string(data: Mapping[str, Any], key: str, file: str, where: str, required: bool,
            line: int | None) -> str:
    if key not in data:
        if required:
            raise UserError(file, line, where, "a non-empty string (required)", f"no {key!r}")
        return ""
    v = data[key]
    vline = _line(data, key, line)
    if not isinstance(v, str) or (required and not v.strip()):
        raise UserError(
            file,
            vline,
            where,
            "a non-empty string" if required else "a string",
            describe(v),
        )
    # the required strings are names (table cells, parts of messages); the other, a description
    return check_name(v, file, vline, where) if required else one_line_text(v, file, vline, where)


# ---------------------------------------------------------------------------------------------
# memslots


@dataclass
class _Slot:
    index: int
    name: str
    lo: int
    hi: int
    raw: Mapping[str, Any]
    line: int | None
    where: str


def _memslots(data: Mapping[str, Any], file: str, granule: int) -> list[_Slot]:
    raw = _required(file, data, "memslots", "", 1, "a list of memslots")
    top_line = line_of(data, "memslots", 1)
    seq = _list(file, raw, "memslots", top_line, "a list of memslots")
    if not seq:
        raise UserError(file, top_line, "memslots", "at least one memslot", "an empty list")
    if len(seq) > MAX_MEMSLOTS:
        raise UserError(
            file,
            top_line,
            "memslots",
            f"at most {MAX_MEMSLOTS} memslots (KVM_USER_MEM_SLOTS on arm64)",
            f"{len(seq)}",
        )
    slots: list[_Slot] = []
    names: dict[str, int] = {}
    for i, item in enumerate(seq):
        where = f"memslots[{i}]"
        iline = _item_line(seq, i, top_line)
        m = _mapping(file, item, where, iline, "a memslot mapping {name, gpa_bytes, size_bytes, ...}")
        check_keys(file, m, where, MEMSLOT_KEYS, iline)
        name = _string(m, "name", file, f"{where}.name", True, iline)
        if name in names:
            raise UserError(
                file,
                _line(m, "name", iline),
                f"{where}.name",
                "a name no other memslot has",
                f"{name!r} again (memslots[{names[name]}] has it)",
            )
        names[name] = i
        gpa_raw = _required(file, m, "gpa_bytes", where, iline, "a guest-physical base address")
        gline = _line(m, "gpa_bytes", iline)
        lo = _int(file, gpa_raw, f"{where}.gpa_bytes", gline,
                  "a guest-physical address in bytes (an integer >= 0)")
        size_raw = _required(file, m, "size_bytes", where, iline, "a size in bytes")
        sline = _line(m, "size_bytes", iline)
        size = _int(file, size_raw, f"{where}.size_bytes", sline,
                    "a size in bytes (an integer > 0)", minimum=1)
        if lo % granule:
            raise UserError(file, gline, f"{where}.gpa_bytes",
                            f"a multiple of the {granule}-byte granule", _human(lo))
        if size % granule:
            raise UserError(file, sline, f"{where}.size_bytes",
                            f"a multiple of the {granule}-byte granule", _human(size))
        if slots and lo < slots[-1].hi:
            prev = slots[-1]
            expected = (
                f"a base at or above {_human(prev.hi)}, where memslots[{prev.index}] "
                f"{prev.name!r} ends (memslots are listed by address and may not overlap)"
            )
            raise UserError(file, gline, f"{where}.gpa_bytes", expected, _human(lo))
        has_regions, has_mapping = "regions" in m, "mapping" in m
        if has_regions == has_mapping:
            raise UserError(
                file,
                iline,
                where,
                "exactly one of regions (explicit) or mapping (shorthand)",
                "both" if has_regions else "neither",
                None if has_regions else "write regions: [] for a memslot with nothing mapped",
            )
        slots.append(_Slot(i, name, lo, lo + size, m, iline, where))
    return slots


def _geometry(data: Mapping[str, Any], file: str) -> tuple[int, Any, Mapping[str, Any], int | None]:
    raw = _required(file, data, "geometry", "", 1, "a geometry: {granule_bytes, ipa_bits} section")
    gline = line_of(data, "geometry", 1)
    g = _mapping(file, raw, "geometry", gline, "a mapping {granule_bytes, ipa_bits}")
    check_keys(file, g, "geometry", GEOMETRY_KEYS, gline)
    granule_raw = _required(file, g, "granule_bytes", "geometry", gline,
                            "the granule: 4096, 16384 or 65536")
    line = _line(g, "granule_bytes", gline)
    choices = ", ".join(str(x) for x in GRANULES)
    granule = _int(file, granule_raw, "geometry.granule_bytes", line, f"one of {choices}")
    if granule not in GRANULES:
        raise UserError(file, line, "geometry.granule_bytes", f"one of {choices}", str(granule))
    ipa_raw = g.get("ipa_bits", "auto")
    return granule, ipa_raw, g, gline


def _resolve_ipa(
    file: str, ipa_raw: Any, g: Mapping[str, Any], gline: int | None, slots: list[_Slot]
) -> int:
    top = slots[-1].hi
    last = slots[-1]
    expected = f"'auto' or an integer in [{MIN_IPA_BITS}, {MAX_IPA_BITS}]"
    line = _line(g, "ipa_bits", gline)
    if ipa_raw == "auto":
        bits = auto_ipa_bits(top + 1)  # a memslot may not reach the top (see below)
        if bits > MAX_IPA_BITS:
            raise UserError(
                file,
                _line(last.raw, "size_bytes", last.line),
                f"{last.where}.size_bytes",
                f"a memslot ending below {_human(1 << MAX_IPA_BITS)}, the largest "
                f"({MAX_IPA_BITS}-bit) IPA space",
                f"an end at {_human(top)}",
            )
        return bits
    if isinstance(ipa_raw, str):
        raise UserError(file, line, "geometry.ipa_bits", expected, describe(ipa_raw),
                        did_you_mean(ipa_raw, ["auto"]))
    bits = _int(file, ipa_raw, "geometry.ipa_bits", line, expected)
    if not MIN_IPA_BITS <= bits <= MAX_IPA_BITS:
        raise UserError(file, line, "geometry.ipa_bits", expected, str(bits))
    size = 1 << bits
    for s in slots:
        if s.hi >= size:
            # kvm_arch_prepare_memory_region (virt/kvm/arm/mmu.c, v5.5) refuses a memslot with
            # base_gfn + npages >= kvm_phys_size >> PAGE_SHIFT: it must end below the top.
            key = "gpa_bytes" if s.lo >= size else "size_bytes"
            raise UserError(
                file,
                _line(s.raw, key, s.line),
                f"{s.where}.{key}",
                f"a memslot ending below {_human(size)}, the top of the {bits}-bit IPA space "
                "(v5.5 refuses one that reaches it)",
                f"{s.name!r} spanning [{s.lo:#x}, {s.hi:#x})",
                f"raise geometry.ipa_bits (line {line}) or write ipa_bits: auto",
            )
    return bits


def _leaf(
    file: str, m: Mapping[str, Any], where: str, line: int | None, g: Geometry
) -> tuple[int | None, bool]:
    """``(leaf, device)`` of a region or mapping entry; leaf None for a hole."""
    sizes = ", ".join(str(s) for s in g.leaf_sizes)
    hole = False
    if "hole" in m:
        hole = _bool(file, m["hole"], f"{where}.hole", _line(m, "hole", line))
    device = False
    if "device" in m:
        device = _bool(file, m["device"], f"{where}.device", _line(m, "device", line))
    if hole:
        if "leaf_bytes" in m:
            raise UserError(file, _line(m, "leaf_bytes", line), f"{where}.leaf_bytes",
                            "no leaf size in a hole (hole: true is unmapped)",
                            describe(m["leaf_bytes"]))
        if device:
            raise UserError(file, _line(m, "device", line), f"{where}.device",
                            "no device flag in a hole (hole: true is unmapped)", "true")
        return None, False
    if "leaf_bytes" not in m:
        raise UserError(file, line, f"{where}.leaf_bytes",
                        f"a leaf size ({sizes}) or hole: true", "neither")
    lline = _line(m, "leaf_bytes", line)
    leaf = _int(file, m["leaf_bytes"], f"{where}.leaf_bytes", lline,
                f"a leaf size of this geometry ({sizes})")
    if leaf not in g.leaf_sizes:
        hint = None
        if leaf == 1 << 30 and g.granule == 4096:
            hint = f"no 1 GiB blocks with {g.levels} levels ({g.ipa_bits}-bit IPA)"
        elif leaf > g.granule and leaf & (leaf - 1) == 0:
            hint = f"the {format_size(g.granule)} granule has blocks of {format_size(g.leaf_sizes[1])}"
        raise UserError(file, lline, f"{where}.leaf_bytes",
                        f"a leaf size of this geometry ({sizes})", str(leaf), hint)
    if device and leaf != g.granule:
        raise UserError(file, _line(m, "device", line), f"{where}.device",
                        f"device mappings only on {g.granule}-byte pages (leaf_bytes: {g.granule})",
                        f"device: true with leaf_bytes {leaf}")
    return leaf, device


def _regions(file: str, s: _Slot, g: Geometry) -> list[Extent]:
    where = f"{s.where}.regions"
    rline = _line(s.raw, "regions", s.line)
    seq = _list(file, s.raw["regions"], where, rline, "a list of regions")
    size = s.hi - s.lo
    out: list[Extent] = []
    cursor = 0
    for j, item in enumerate(seq):
        w = f"{where}[{j}]"
        iline = _item_line(seq, j, rline)
        r = _mapping(file, item, w, iline,
                     "a region mapping {offset_bytes, size_bytes, leaf_bytes or hole, device}")
        check_keys(file, r, w, REGION_KEYS, iline)
        leaf, device = _leaf(file, r, w, iline, g)
        align = g.granule if leaf is None else leaf
        if "offset_bytes" in r:
            oline = _line(r, "offset_bytes", iline)
            offset = _int(file, r["offset_bytes"], f"{w}.offset_bytes", oline,
                          "an offset in bytes within the memslot (an integer >= 0)")
            implicit = ""
        else:
            oline, offset = iline, cursor
            implicit = "" if j == 0 else f"; without offset_bytes it starts where regions[{j - 1}] ends"
        if offset < cursor:
            raise UserError(
                file, oline, f"{w}.offset_bytes",
                f"an offset >= {cursor}, where regions[{j - 1}] ends (regions are listed in "
                "address order and may not overlap)",
                str(offset),
            )
        sz_raw = _required(file, r, "size_bytes", w, iline, "a size in bytes")
        zline = _line(r, "size_bytes", iline)
        sz = _int(file, sz_raw, f"{w}.size_bytes", zline, "a size in bytes (an integer > 0)",
                  minimum=1)
        lo = s.lo + offset
        if lo % align:
            what = "granule" if leaf is None or leaf == g.granule else "leaf size"
            raise UserError(
                file, oline, f"{w}.offset_bytes",
                f"a start aligned to the {align}-byte {what} (gpa_bytes + offset_bytes a "
                f"multiple of {align})",
                f"GPA {lo:#x} (offset {offset}){implicit}",
            )
        if sz % align:
            what = "granule" if leaf is None or leaf == g.granule else "leaf size"
            raise UserError(file, zline, f"{w}.size_bytes",
                            f"a multiple of the {align}-byte {what}", _human(sz))
        end = offset + sz
        if end > size:
            hint = None
            if leaf is not None and leaf > g.granule:
                hint = "a block may not straddle a memslot edge"
            raise UserError(
                file, zline, f"{w}.size_bytes",
                f"a region inside memslot {s.name!r} (offset + size <= {size})",
                f"offset {offset} + size {sz} = {end}",
                hint,
            )
        if leaf is not None:
            out.append(Extent(lo, s.lo + end, leaf, s.index, device))
        cursor = end
    return out


def _fraction(x: int | float) -> Fraction:
    return Fraction(x) if isinstance(x, int) else Fraction(repr(x))


def _fill(lo: int, hi: int, leaf: int, sizes: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """``[lo, hi)`` mapped with ``leaf`` where aligned; the unaligned head and tail fall back to
    the next smaller leaf sizes (as the fault path does when a block does not fit)."""
    if lo >= hi:
        return []
    smaller = [s for s in sizes if s < leaf]
    if not smaller:
        return [(lo, hi, leaf)]
    a = -(-lo // leaf) * leaf
    b = hi // leaf * leaf
    if a >= b:
        return _fill(lo, hi, smaller[-1], sizes)
    nxt = smaller[-1]
    return [*_fill(lo, a, nxt, sizes), (a, b, leaf), *_fill(b, hi, nxt, sizes)]


def _shorthand(file: str, s: _Slot, g: Geometry) -> list[Extent]:
    where = f"{s.where}.mapping"
    mline = _line(s.raw, "mapping", s.line)
    seq = _list(file, s.raw["mapping"], where, mline,
                "a list of {leaf_bytes or hole, percent} entries")
    if not seq:
        raise UserError(file, mline, where, "at least one {leaf_bytes, percent} entry",
                        "an empty list", "write regions: [] for a memslot with nothing mapped")
    pieces: list[tuple[int | None, bool, Fraction]] = []
    for j, item in enumerate(seq):
        w = f"{where}[{j}]"
        iline = _item_line(seq, j, mline)
        m = _mapping(file, item, w, iline, "a mapping {leaf_bytes or hole, percent, device}")
        check_keys(file, m, w, MAPPING_KEYS, iline)
        leaf, device = _leaf(file, m, w, iline, g)
        p_raw = _required(file, m, "percent", w, iline, "a percentage of the memslot")
        pline = _line(m, "percent", iline)
        expected = "a percentage of the memslot in (0, 100]"
        if isinstance(p_raw, bool) or not isinstance(p_raw, int | float):
            raise UserError(file, pline, f"{w}.percent", expected, describe(p_raw))
        if not math.isfinite(p_raw) or not 0 < p_raw <= 100:
            raise UserError(file, pline, f"{w}.percent", expected, describe(p_raw))
        pieces.append((leaf, device, _fraction(p_raw)))
    total = sum((p for _, _, p in pieces), Fraction(0))
    if abs(total - 100) > PERCENT_TOLERANCE:
        terms = " + ".join(f"{float(p):g}" for _, _, p in pieces)
        raise UserError(file, mline, where, "percentages summing to 100",
                        f"{terms} = {float(total):.12g}")
    size = s.hi - s.lo
    out: list[Extent] = []
    cum = Fraction(0)
    start = s.lo
    for k, (leaf, device, p) in enumerate(pieces):
        cum += p
        if k == len(pieces) - 1:
            end = s.hi
        else:
            end = s.lo + math.floor(size * cum / 100 / g.granule) * g.granule
        if leaf is not None:
            for lo, hi, lf in _fill(start, end, leaf, g.leaf_sizes):
                out.append(Extent(lo, hi, lf, s.index, device))
        start = max(start, end)
    return out


# ---------------------------------------------------------------------------------------------
# the event


def _range(
    file: str, m: Mapping[str, Any], where: str, line: int | None, g: Geometry
) -> tuple[int, int]:
    gpa_raw = _required(file, m, "gpa_bytes", where, line, "a guest-physical start address")
    gline = _line(m, "gpa_bytes", line)
    lo = _int(file, gpa_raw, f"{where}.gpa_bytes", gline,
              "a guest-physical address in bytes (an integer >= 0)")
    size_raw = _required(file, m, "size_bytes", where, line, "a size in bytes")
    sline = _line(m, "size_bytes", line)
    size = _int(file, size_raw, f"{where}.size_bytes", sline, "a size in bytes (an integer > 0)",
                minimum=1)
    if lo % g.granule:
        raise UserError(file, gline, f"{where}.gpa_bytes",
                        f"a multiple of the {g.granule}-byte granule", _human(lo))
    if size % g.granule:
        raise UserError(file, sline, f"{where}.size_bytes",
                        f"a multiple of the {g.granule}-byte granule", _human(size))
    if lo >= g.ipa_size:
        raise UserError(file, gline, f"{where}.gpa_bytes",
                        f"an address inside the {g.ipa_bits}-bit IPA space (below "
                        f"{_human(g.ipa_size)})", _human(lo))
    if lo + size > g.ipa_size:
        raise UserError(file, sline, f"{where}.size_bytes",
                        f"a range ending inside the {g.ipa_bits}-bit IPA space (at most "
                        f"{_human(g.ipa_size)} - gpa_bytes = {g.ipa_size - lo})", str(size))
    return lo, lo + size


def _label(kind: str, lo: int, hi: int) -> str:
    return f"{kind} [{lo:#x}, {hi:#x})"


def _event(
    data: Mapping[str, Any], file: str, layout: Layout
) -> tuple[str, tuple[Step, ...]]:
    g = layout.geometry
    forms = ", ".join(repr(f) for f in EVENT_FORMS)
    raw = _required(file, data, "event", "", 1,
                    "an event: exit, {munmap: ...}, {unmaps: [...]} or {invocations: [...]}")
    eline = line_of(data, "event", 1)
    if isinstance(raw, str):
        if raw == "exit":
            return "exit", (Step("exit", (Invocation(TEARDOWN, 0, g.ipa_size),)),)
        hint = did_you_mean(raw, ["exit"])
        if raw in EVENT_FORMS:
            hint = {
                "munmap": "write event: {munmap: {gpa_bytes: ..., size_bytes: ...}}",
                "unmaps": "write event: {unmaps: [{name: ..., gpa_bytes: ..., size_bytes: ...}]}",
                "invocations": "write event: {invocations: [{kind: ..., gpa_bytes: ..., "
                "size_bytes: ...}]}",
            }[raw]
        raise UserError(file, eline, "event", "'exit' or a mapping with one of munmap, unmaps, "
                        "invocations", describe(raw), hint)
    ev = _mapping(file, raw, "event", eline,
                  "'exit' or a mapping with one of munmap, unmaps, invocations")
    check_keys(file, ev, "event", EVENT_FORMS[1:], eline)
    if len(ev) != 1:
        raise UserError(file, eline, "event", "exactly one of munmap, unmaps, invocations",
                        " and ".join(str(k) for k in ev) if ev else "an empty mapping",
                        None if ev else f"the forms are {forms}")
    form = next(iter(ev))
    fline = _line(ev, form, eline)
    if form == "munmap":
        m = _mapping(file, ev["munmap"], "event.munmap", fline, "a range {gpa_bytes, size_bytes}")
        check_keys(file, m, "event.munmap", RANGE_KEYS, fline)
        lo, hi = _range(file, m, "event.munmap", fline, g)
        return "munmap", (Step(_label("munmap", lo, hi), munmap_event(layout, lo, hi)),)
    if form == "unmaps":
        return "unmaps", _unmaps(file, ev["unmaps"], fline, layout)
    return "invocations", _invocations(file, ev["invocations"], fline, g)


def _unmaps(file: str, raw: Any, line: int | None, layout: Layout) -> tuple[Step, ...]:
    where = "event.unmaps"
    seq = _list(file, raw, where, line, "a list of named ranges {name, gpa_bytes, size_bytes}")
    if not seq:
        raise UserError(file, line, where, "at least one unmap", "an empty list")
    steps: list[Step] = []
    done: list[tuple[int, int]] = []
    names: dict[str, int] = {}
    for k, item in enumerate(seq):
        w = f"{where}[{k}]"
        iline = _item_line(seq, k, line)
        m = _mapping(file, item, w, iline, "a named range {name, gpa_bytes, size_bytes}")
        check_keys(file, m, w, UNMAP_KEYS, iline)
        name = _string(m, "name", file, f"{w}.name", True, iline)
        if name in names:
            raise UserError(file, _line(m, "name", iline), f"{w}.name",
                            "a name no other unmap has",
                            f"{name!r} again (event.unmaps[{names[name]}] has it)")
        names[name] = k
        lo, hi = _range(file, m, w, iline, layout.geometry)
        # After an earlier munmap the VMA has a hole there: a block that overlaps an earlier
        # range no longer lies inside one VMA, so vma_adjust_trans_huge does not hand it to
        # __split_huge_pmd (range_in_vma) and raises no CLEAR for it (docs/model.md §3).
        calls = tuple(
            inv
            for inv in munmap_event(layout, lo, hi)
            if inv.kind != CLEAR or not any(a < inv.hi and inv.lo < b for a, b in done)
        )
        done.append((lo, hi))
        steps.append(Step(name, calls))
    return tuple(steps)


def _invocations(file: str, raw: Any, line: int | None, g: Geometry) -> tuple[Step, ...]:
    where = "event.invocations"
    seq = _list(file, raw, where, line,
                "a list of invocations {kind, gpa_bytes, size_bytes, blockable}")
    if not seq:
        raise UserError(file, line, where, "at least one invocation", "an empty list")
    steps: list[Step] = []
    kinds = ", ".join(INVOCATION_KINDS)
    for k, item in enumerate(seq):
        w = f"{where}[{k}]"
        iline = _item_line(seq, k, line)
        m = _mapping(file, item, w, iline, "an invocation {kind, gpa_bytes, size_bytes, blockable}")
        check_keys(file, m, w, INVOCATION_KEYS, iline)
        kind = _required(file, m, "kind", w, iline, f"one of {kinds}")
        kline = _line(m, "kind", iline)
        if kind not in INVOCATION_KINDS:
            raise UserError(file, kline, f"{w}.kind", f"one of {kinds}", describe(kind),
                            did_you_mean(kind, INVOCATION_KINDS) if isinstance(kind, str) else None)
        blockable = True
        if "blockable" in m:
            blockable = _bool(file, m["blockable"], f"{w}.blockable", _line(m, "blockable", iline))
        if kind == TEARDOWN:
            for key in RANGE_KEYS:
                if key in m:
                    raise UserError(
                        file, _line(m, key, iline), f"{w}.{key}",
                        "no range on a teardown (it always covers the whole IPA space)",
                        describe(m[key]),
                    )
            if k != len(seq) - 1:
                raise UserError(
                    file, kline, f"{w}.kind",
                    "a teardown only as the last invocation (the release callback is the "
                    "notifier's last)",
                    f"teardown followed by {len(seq) - 1 - k} more",
                )
            inv = Invocation(TEARDOWN, 0, g.ipa_size, blockable)
            steps.append(Step("teardown", (inv,)))
            continue
        lo, hi = _range(file, m, w, iline, g)
        steps.append(Step(_label(kind, lo, hi), (Invocation(kind, lo, hi, blockable),)))
    return tuple(steps)


# ---------------------------------------------------------------------------------------------
# entry points


def _build(doc: YamlDocument, path: str | None) -> Scenario:
    file = doc.name
    data = doc.data
    if not isinstance(data, dict):
        raise UserError(file, 1, None, "a mapping of scenario fields", describe(data))
    _check_version(data, file)
    for k in data:
        if k not in TOP_KEYS:
            raise unknown_key(file, line_of(data, k, 1), str(k), k, TOP_KEYS)
    name = _string(data, "name", file, "name", True, 1)
    description = _string(data, "description", file, "description", False, 1)
    granule, ipa_raw, graw, gline = _geometry(data, file)
    slots = _memslots(data, file, granule)
    g = Geometry(granule, _resolve_ipa(file, ipa_raw, graw, gline, slots))
    extents: list[Extent] = []
    for s in slots:
        extents.extend(_regions(file, s, g) if "regions" in s.raw else _shorthand(file, s, g))
    layout = Layout(g, tuple(Memslot(s.lo, s.hi, s.name) for s in slots), tuple(extents))
    layout.validate()  # a ValueError here is a bug of this module, not bad input
    form, steps = _event(data, file, layout)
    event = tuple(inv for st in steps for inv in st.invocations)
    return Scenario(
        name=name,
        description=description,
        layout=layout,
        event=event,
        path=path,
        sha256=doc.sha256,
        text=doc.text,
        steps=steps,
        event_form=form,
    )


def load_scenario(name_or_path: str | Path, *, flag: str | None = None) -> Scenario:
    """Load and validate a scenario file, or a bundled scenario by name (``qemu-virt``)."""
    path = resolve_config(name_or_path, "scenarios", flag=flag)
    return _build(read_yaml(path), str(path))


def scenario_from_text(text: str, name: str = "<string>") -> Scenario:
    """Validate scenario YAML ``text``; errors name ``name`` as the file."""
    return _build(read_yaml_text(text, name), None)


# ---------------------------------------------------------------------------------------------
# JSON Schema


def scenario_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the scenario file format.

    It checks shapes and types; the rules across fields (alignment, order, overlap, inside the
    memslot and the IPA space, percentages summing to 100, leaf sizes of the geometry) are the
    loader's.
    """
    byte = {"type": "integer", "minimum": 0}
    size = {"type": "integer", "minimum": 1}
    leaf_or_hole = {
        "oneOf": [
            {"required": ["leaf_bytes"], "not": {"required": ["hole"]}},
            {"required": ["leaf_bytes", "hole"], "properties": {"hole": {"const": False}}},
            {"required": ["hole"], "properties": {"hole": {"const": True}},
             "not": {"required": ["leaf_bytes"]}},
        ]
    }
    leaf = {"type": "integer", "enum": sorted({s for gr in GRANULES for ipa in (32, 40, 48)
                                                for s in Geometry(gr, ipa).leaf_sizes})}
    region = {
        "type": "object",
        "description": "A run of the memslot mapped with one leaf size, or a hole.",
        "properties": {
            "offset_bytes": {**byte, "description": "Start within the memslot; default: where "
                             "the previous region ended."},
            "size_bytes": size,
            "leaf_bytes": leaf,
            "hole": {"type": "boolean"},
            "device": {"type": "boolean", "description": "Device pages (kvm_is_device_pfn)."},
        },
        "required": ["size_bytes"],
        "additionalProperties": False,
        **leaf_or_hole,
    }
    share = {
        "type": "object",
        "properties": {
            "leaf_bytes": leaf,
            "hole": {"type": "boolean"},
            "device": {"type": "boolean"},
            "percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        },
        "required": ["percent"],
        "additionalProperties": False,
        **leaf_or_hole,
    }
    memslot = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "gpa_bytes": byte,
            "size_bytes": size,
            "regions": {"type": "array", "items": {"$ref": "#/$defs/region"}},
            "mapping": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/share"}},
        },
        "required": ["name", "gpa_bytes", "size_bytes"],
        "oneOf": [{"required": ["regions"]}, {"required": ["mapping"]}],
        "additionalProperties": False,
    }
    rng = {
        "type": "object",
        "properties": {"gpa_bytes": byte, "size_bytes": size},
        "required": ["gpa_bytes", "size_bytes"],
        "additionalProperties": False,
    }
    named = {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}, "gpa_bytes": byte,
                       "size_bytes": size},
        "required": ["name", "gpa_bytes", "size_bytes"],
        "additionalProperties": False,
    }
    invocation = {
        "type": "object",
        "properties": {
            "kind": {"enum": list(INVOCATION_KINDS)},
            "gpa_bytes": byte,
            "size_bytes": size,
            "blockable": {"type": "boolean"},
        },
        "required": ["kind"],
        "additionalProperties": False,
        "if": {"properties": {"kind": {"const": TEARDOWN}}},
        "then": {"not": {"anyOf": [{"required": ["gpa_bytes"]}, {"required": ["size_bytes"]}]}},
        "else": {"required": ["gpa_bytes", "size_bytes"]},
    }
    event = {
        "oneOf": [
            {"const": "exit"},
            {"type": "object", "properties": {"munmap": {"$ref": "#/$defs/range"}},
             "required": ["munmap"], "additionalProperties": False},
            {"type": "object", "properties": {"unmaps": {"type": "array", "minItems": 1,
                                                         "items": {"$ref": "#/$defs/named"}}},
             "required": ["unmaps"], "additionalProperties": False},
            {"type": "object",
             "properties": {"invocations": {"type": "array", "minItems": 1,
                                            "items": {"$ref": "#/$defs/invocation"}}},
             "required": ["invocations"], "additionalProperties": False},
        ]
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:s2teardown:scenario:{SCHEMA_VERSION}",
        "title": "s2teardown scenario (explicit Stage-2 layout and event)",
        "type": "object",
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION, "description": "Format version."},
            "name": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "geometry": {
                "type": "object",
                "properties": {
                    "granule_bytes": {"enum": list(GRANULES)},
                    "ipa_bits": {"oneOf": [
                        {"const": "auto"},
                        {"type": "integer", "minimum": MIN_IPA_BITS, "maximum": MAX_IPA_BITS},
                    ]},
                },
                "required": ["granule_bytes"],
                "additionalProperties": False,
            },
            "memslots": {"type": "array", "minItems": 1, "maxItems": MAX_MEMSLOTS,
                         "items": {"$ref": "#/$defs/memslot"}},
            "event": {"$ref": "#/$defs/event"},
        },
        "required": ["schema_version", "name", "geometry", "memslots", "event"],
        "additionalProperties": False,
        "$defs": {
            "memslot": memslot,
            "region": region,
            "share": share,
            "range": rng,
            "named": named,
            "invocation": invocation,
            "event": event,
        },
    }
