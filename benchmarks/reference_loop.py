"""The loop a user would write: the exit cost model, scenario by scenario, in plain Python.

This is the baseline of figure 2 of ``benchmarks/run.py``.  It evaluates the *uniform exit
workload* (one memslot; RAM backed by a mix of leaf sizes, then an optional run of device
pages; the whole IPA space torn down by ``kvm_free_stage2_pgd``) with an **independent closed
form** — docs/model.md §5 — and no numpy inside the loop:

* leaves: every mapped leaf goes (``n4`` pages, ``n4d`` of them device, ``n2`` PMD blocks,
  ``n1`` PUD blocks);
* tables: a table page at level ``k >= 1`` covers one level-``k-1`` entry span ``T``; it exists
  (and an exit frees it) iff some leaf smaller than ``T`` lies in that span, so the tables per
  level are the number of distinct ``T``-slots touched by the extents of smaller leaves;
* entry visits: every entry-level entry, plus every entry of every table that exists — except
  that a walk split into chunks smaller than an entry-level entry (v6.19's 1 GiB chunks with 4
  levels) loads one entry-level entry per chunk, and a table wider than a chunk is walked by the
  chunks from its start up to the one that removes its last leaf;
* per variant (its ``teardown`` behaviour): an *unmap* walk clears every leaf and emptied table,
  with a TLBI per leaf / table entry and a CMO per non-device leaf unless elided (or FWB); a
  *destroy* walk (v5.10+) only drops references and frees tables; resched points after every
  chunk but the last; the entry-level (pgd) pages are freed after the walk; host frees;
* times: ``time[phase] = sum_event events[event] * W[event, phase]`` with the weight matrix
  ``W = model.weights(instructions.expansion(features), prices.ops)`` computed *once*, with
  numpy, outside the loop and handed in as plain Python floats (only its non-zero entries).

It shares no counting code with ``s2teardown.core.counts``: geometry constants are recomputed here
from the arm64 formulas, and the layout of a uniform workload is rebuilt from the same inputs
with the same floating-point steps as ``workload.uniform_batch_arrays`` (so the two agree to the
byte).  Only the vocabulary (``ops.EVENTS``, pure data) is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from s2teardown.core.vocabulary import EVENTS

_IX = {e: i for i, e in enumerate(EVENTS)}
N_EVENTS = len(EVENTS)
E_NOTIFIER = _IX["notifier_call"]
E_VISIT = _IX["entry_visit"]
E_PTE = _IX["pte_clear"]
E_BLOCK = _IX["block_clear"]
E_TABLE_CLEAR = _IX["table_clear"]
E_PUT = _IX["put_page"]
E_TLB = _IX["tlb_flush_vmid_ipa"]
E_DCACHE = _IX["dcache_flush_call"]
E_LINE = _IX["dc_civac_line"]
E_TABLE_FREE = _IX["table_free"]
E_RESCHED = _IX["resched_point"]
E_FLUSH_ALL = _IX["flush_remote_tlbs"]
E_HOST_PAGE = _IX["host_page_free"]
E_HOST_FOLIO = _IX["host_folio_free"]

ONE_GIB = 1 << 30


@dataclass(frozen=True)
class Geo:
    """Stage-2 geometry constants, from the v5.5 arm64 formulas (no s2teardown.core.geometry)."""

    granule: int
    ipa_bits: int
    levels: int
    spans: tuple[int, ...]  # bytes per entry, level 0 (entry level) first
    entries_per_table: int
    top_entries: int
    pgd_pages: int
    page: int
    pmd: int
    pud: int  # 0: no PUD blocks (16/64 KiB granule, or 2 levels)
    largest_block: int

    @staticmethod
    def of(granule: int, ipa_bits: int) -> Geo:
        shift = granule.bit_length() - 1
        bits = shift - 3  # 8-byte descriptors per table page
        # stage2_pgtable_levels(ipa) = ARM64_HW_PGTABLE_LEVELS(ipa - 4), at least 2
        levels = max(2, ((ipa_bits - 4) - 4) // bits)
        spans = tuple(1 << (shift + (levels - 1 - k) * bits) for k in range(levels))
        top = (1 << ipa_bits) // spans[0]
        pgd_pages = max(1, -(-(top * 8) // granule))
        pmd = spans[levels - 2]
        pud = spans[levels - 3] if (granule == 4096 and levels >= 3) else 0
        return Geo(granule, ipa_bits, levels, spans, 1 << bits, top, pgd_pages, granule, pmd,
                   pud, pud or pmd)


def layout(
    g: Geo,
    vm: int,
    mapped: float,
    leaves: Sequence[int],
    shares: Sequence[float],
    device_fraction: float,
    ram_base: int,
) -> list[tuple[int, int, int, bool]]:
    """Extents ``(lo, hi, leaf, device)`` of a one-memslot uniform workload, non-empty only.

    The same arithmetic, in the same order, as ``uniform_batch_arrays`` (float64 products,
    floors, rounding down to whole leaves; leaf classes in the order given, device pages last).
    """
    mapped_b = math.floor(mapped * vm)
    dev_b = (math.floor(device_fraction * mapped_b) // g.granule) * g.granule
    ram_b = mapped_b - dev_b
    out = []
    lo = ram_base
    for leaf, share in zip(leaves, shares, strict=True):
        size = (math.floor(ram_b * share / 100.0) // leaf) * leaf
        if size:
            out.append((lo, lo + size, leaf, False))
        lo += size
    if dev_b:
        out.append((lo, lo + dev_b, g.granule, True))
    return out


def walk_chunk(g: Geo, b: Any) -> int | None:
    """Bytes per separate walk (a resched point may sit between two); None: one walk."""
    if b.resched == "top_level":
        return g.spans[0]  # v5.5: after each entry-level entry
    if b.resched == "largest_block":  # v6.1 stage2_apply_range: block size at the min block level
        return {4096: ONE_GIB, 16384: 32 << 20, 65536: 512 << 20}[g.granule]
    if b.resched == "1g":
        return ONE_GIB  # v6.19 destroy
    return None


def exit_quantities(
    g: Geo, extents: Sequence[tuple[int, int, int, bool]], chunk: int | None = None
) -> tuple[int, ...]:
    """``(n4, n4d, n2, n1, tables, visits)`` for a teardown of the whole IPA space.

    ``chunk``: the walk is split into ``chunk``-byte walks (v6.19's 1 GiB destroy chunks); only
    matters when a chunk is smaller than an entry-level entry (4 levels).  Each chunk-walk loads
    one entry-level entry; a table wider than a chunk is walked by every chunk from its start up
    to the chunk that removes its last leaf (which frees it), ``chunk / span`` entries each.
    """
    n4 = n4d = n2 = n1 = 0
    for lo, hi, leaf, dev in extents:
        n = (hi - lo) // leaf
        if leaf == g.page:
            if dev:
                n4d += n
            else:
                n4 += n
        elif leaf == g.pmd:
            n2 += n
        elif leaf == g.pud:
            n1 += n
        else:
            raise ValueError(f"leaf {leaf} is not a leaf size of {g}")
    chunked = chunk is not None and chunk < g.spans[0]
    tables = 0
    # every entry-level entry is loaded, once per chunk-walk that spans it
    visits = (1 << g.ipa_bits) // chunk if chunked and chunk else g.top_entries
    ordered = sorted(extents)
    for k in range(1, g.levels):
        span = g.spans[k - 1]  # a level-k table page covers one level-(k-1) entry
        entry = g.spans[k]
        last_end: dict[int, int] = {}  # T-slot -> end of its last leaf smaller than T
        slots = 0
        end = -1  # merge the T-slot ranges of the smaller leaves' extents (sorted by lo)
        for lo, hi, leaf, _ in ordered:
            if leaf >= span:
                continue
            a, b = lo // span, -(-hi // span)
            if chunked and chunk and span > chunk:
                for t in range(a, b):
                    last_end[t] = max(last_end.get(t, 0), min(hi, (t + 1) * span))
            if a < end:
                a = end
            if b > a:
                slots += b - a
                end = b
        tables += slots
        if chunked and chunk and span > chunk:
            per_chunk = max(1, chunk // entry)
            for t, z in last_end.items():
                visits += -(-(z - t * span) // chunk) * per_chunk
        else:
            visits += slots * g.entries_per_table
    return n4, n4d, n2, n1, tables, visits


def exit_events(
    g: Geo, q: tuple[int, ...], b: Any, *, fwb: bool, tlbi_range: bool = False, cache_line: int,
    blockable: bool = True,
) -> list[int]:
    """Kernel events (``ops.EVENTS`` order) of an exit, for one variant's teardown behaviour."""
    n4, n4d, n2, n1, tables, visits = q
    leaves = n4 + n4d + n2 + n1
    ev = [0] * N_EVENTS
    ev[E_NOTIFIER] = 1
    ev[E_VISIT] = visits
    ev[E_PUT] = leaves + tables  # one reference dropped per valid entry
    ev[E_TABLE_FREE] = tables + g.pgd_pages  # emptied tables, then the entry-level pages
    ev[E_HOST_PAGE] = n4
    ev[E_HOST_FOLIO] = n2 + n1
    chunk = walk_chunk(g, b)
    if chunk is not None and b.resched != "none" and (b.resched_when == "always" or blockable):
        ev[E_RESCHED] = max(-(-(1 << g.ipa_bits) // chunk) - 1, 0)
    if b.final_flush == "vmall":
        ev[E_FLUSH_ALL] = 1
    if b.walk == "destroy":  # kvm_pgtable_stage2_destroy: nothing cleared, no TLBI, no CMO
        return ev
    ev[E_PTE] = n4 + n4d
    ev[E_BLOCK] = n2 + n1
    ev[E_TABLE_CLEAR] = tables
    if b.leaf_tlbi == "range" and fwb and tlbi_range:
        raise NotImplementedError("deferred range flush at teardown")
    tlb = leaves if b.leaf_tlbi != "none" else 0
    if b.table_tlbi in ("per_entry", "deferred"):
        tlb += tables
    ev[E_TLB] = tlb
    if b.cmo == "per_leaf" and not fwb:
        ev[E_DCACHE] = n4 + n2 + n1
        ev[E_LINE] = (n4 * g.page + n2 * g.pmd + n1 * g.pud) // cache_line
    return ev


def weight_rows(w: Any) -> list[list[tuple[int, float]]]:
    """The non-zero ``(phase, ns)`` of each event's row of ``W`` as plain Python values."""
    rows = w.tolist() if hasattr(w, "tolist") else w
    return [[(p, float(x)) for p, x in enumerate(row) if x != 0.0] for row in rows]


def evaluate_loop(
    g: Geo,
    scenarios: Sequence[tuple[int, float, Sequence[float], float, int]],
    leaves: Sequence[int],
    behaviours: Sequence[Any],
    rows: list[list[tuple[int, float]]],
    n_phases: int,
    *,
    fwb: bool,
    cache_line: int,
    tlbi_range: bool = False,
    keep_events: bool = False,
) -> tuple[list[list[list[float]]], list[list[list[int]]] | None]:
    """Per scenario, per variant: time per phase (ns); optionally the events too.

    ``scenarios``: ``(vm_bytes, mapped, shares, device_fraction, ram_base)`` tuples;
    ``behaviours``: one teardown `Behaviour` per variant.
    """
    times: list[list[list[float]]] = []
    events: list[list[list[int]]] | None = [] if keep_events else None
    chunks = [walk_chunk(g, b) for b in behaviours]
    chunks = [c if (c is not None and c < g.spans[0]) else None for c in chunks]
    for vm, mapped, shares, dev, base in scenarios:
        ext = layout(g, vm, mapped, leaves, shares, dev, base)
        q_by_chunk = {c: exit_quantities(g, ext, c) for c in set(chunks)}
        per_v = []
        per_v_ev = []
        for b, c in zip(behaviours, chunks, strict=True):
            ev = exit_events(g, q_by_chunk[c], b, fwb=fwb, tlbi_range=tlbi_range, cache_line=cache_line)
            t = [0.0] * n_phases
            for e, n in enumerate(ev):
                if n:
                    for p, wt in rows[e]:
                        t[p] += n * wt
            per_v.append(t)
            if events is not None:
                per_v_ev.append(ev)
        times.append(per_v)
        if events is not None:
            events.append(per_v_ev)
    return times, events
