"""Hypothesis strategies: random Stage-2 layouts, events and behaviours (shared by property tests)."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from s2teardown.core.behaviour import CHOICES, Behaviour
from s2teardown.core.geometry import Geometry
from s2teardown.core.layout import (
    BLOCK_RETRY,
    CLEAR,
    MEMSLOT,
    RESET,
    TEARDOWN,
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    munmap_event,
)

DEEP = bool(os.environ.get("S2T_DEEP"))
EXAMPLES = 1000 if DEEP else 200

#: The behaviour values both the walker and the vectorised model implement.
WALKABLE = {k: list(v) for k, v in CHOICES.items()}

behaviours = st.builds(Behaviour, **{k: st.sampled_from(v) for k, v in WALKABLE.items()})


@st.composite
def geometries(draw: st.DrawFn) -> Geometry:
    granule = draw(st.sampled_from([4096, 16384, 65536]))
    ipa = draw(st.integers(32, 48))
    return Geometry(granule, ipa)


@st.composite
def layouts(draw: st.DrawFn, geometry: Geometry | None = None) -> Layout:
    g = geometry or draw(geometries())
    big = g.largest_block
    window = min(4 * big, g.ipa_size)
    base = draw(st.integers(0, g.ipa_size // window - 1)) * window
    end = base + window
    extents: list[tuple[int, int, int, bool, bool]] = []
    cursor = base
    for _ in range(draw(st.integers(0, 6))):
        leaf = draw(st.sampled_from(g.leaf_sizes))
        gap = draw(st.integers(0, 3)) * draw(st.sampled_from([g.granule, g.leaf_sizes[1]]))
        lo = -(-(cursor + gap) // leaf) * leaf
        k = draw(st.integers(1, 300 if leaf == g.granule else 6))
        hi = lo + k * leaf
        if hi > end:
            break
        device = leaf == g.granule and draw(st.booleans())
        hugetlb = leaf == g.leaf_sizes[1] and draw(st.booleans())  # else a THP on the host
        extents.append((lo, hi, leaf, device, hugetlb))
        cursor = hi
    # memslots: cut between extents at granule-aligned points inside the gaps
    cuts = sorted(set(draw(st.lists(st.integers(0, max(0, len(extents) - 1)), max_size=2))))
    bounds: list[int] = []
    for c in cuts:
        if c + 1 >= len(extents):
            continue
        gap_lo, gap_hi = extents[c][1], extents[c + 1][0]
        n = (gap_hi - gap_lo) // g.granule
        bounds.append(gap_lo + draw(st.integers(0, n)) * g.granule)
    first_lo = extents[0][0] if extents else base + g.granule
    last_hi = extents[-1][1] if extents else base + 2 * g.granule
    slot_lo = base + draw(st.integers(0, (first_lo - base) // g.granule)) * g.granule
    slot_hi = last_hi + draw(st.integers(0, (end - last_hi) // g.granule)) * g.granule
    if slot_hi >= g.ipa_size:  # a memslot may not end at the very top of the IPA space
        slot_hi = g.ipa_size - g.granule
    if slot_lo >= slot_hi:
        slot_lo = slot_hi - g.granule
    edges = [slot_lo, *[b for b in sorted(set(bounds)) if slot_lo < b < slot_hi], slot_hi]
    slots = tuple(Memslot(a, b) for a, b in zip(edges, edges[1:], strict=False))
    exts = []
    for lo, hi, leaf, dev, huge in extents:
        if hi > slot_hi:
            break
        idx = next(i for i, s in enumerate(slots) if s.lo <= lo < s.hi)
        if hi > slots[idx].hi:
            continue
        exts.append(Extent(lo, hi, leaf, idx, dev, huge))
    lay = Layout(g, slots, tuple(exts))
    lay.validate()
    return lay


@st.composite
def ranges(draw: st.DrawFn, lay: Layout) -> tuple[int, int]:
    g = lay.geometry
    lo_all, hi_all = lay.memslots[0].lo, lay.memslots[-1].hi
    n = (hi_all - lo_all) // g.granule
    a = draw(st.integers(0, n - 1))
    b = draw(st.integers(a + 1, n))
    return lo_all + a * g.granule, lo_all + b * g.granule


@st.composite
def events(draw: st.DrawFn, lay: Layout) -> tuple[Invocation, ...]:
    kind = draw(st.sampled_from(["exit", "munmap", "sequence"]))
    if kind == "exit":
        return (Invocation(TEARDOWN, 0, lay.geometry.ipa_size),)
    if kind == "munmap":
        lo, hi = draw(ranges(lay))
        return munmap_event(lay, lo, hi)
    out = []
    for _ in range(draw(st.integers(1, 3))):
        lo, hi = draw(ranges(lay))
        kind = draw(st.sampled_from([UNMAP, CLEAR, MEMSLOT, RESET, BLOCK_RETRY]))
        if kind == RESET:
            lo, hi = 0, lay.geometry.ipa_size
        elif kind == BLOCK_RETRY:
            pmd = lay.geometry.leaf_sizes[1]
            lo = lo - lo % pmd
            hi = min(lo + pmd, lay.geometry.ipa_size)
        out.append(Invocation(kind, lo, hi, draw(st.booleans())))
    if draw(st.booleans()):
        out.append(Invocation(TEARDOWN, 0, lay.geometry.ipa_size))
    return tuple(out)
