"""The vectorised counts equal the literal walker's, exactly, event by event and segment by segment.

Hypothesis draws layouts (memslots, mixed leaf sizes, device pages, holes, any granule and IPA
size), events (exit; munmap with its edge CLEARs; arbitrary sequences of UNMAP/CLEAR calls with
or without a final teardown) and a behaviour per invocation kind, i.e. every variant the schema
can express with the strategies both implement.  200 derandomised examples in `make test`,
1,000 in `make test-deep`.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2teardown.core.behaviour import Behaviour
from s2teardown.core.counts import batch_from_layout, count
from s2teardown.core.geometry import Geometry
from s2teardown.core.layout import (
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    exit_event,
    munmap_event,
)
from s2teardown.core.vocabulary import EVENTS, PASS_KINDS
from s2teardown.oracle.walker import walk

from .strategies import EXAMPLES, behaviours, events, layouts

HOST = [EVENTS.index("host_page_free"), EVENTS.index("host_folio_free")]


def agree(lay: Layout, event, behs: dict[str, Behaviour], fwb: bool, line: int,
          tlbi_range: bool = False) -> None:
    w = walk(lay, event, behs, fwb=fwb, cache_line=line, tlbi_range=tlbi_range)
    c = count(batch_from_layout(lay, event), [behs], fwb=fwb, cache_line=line, tlbi_range=tlbi_range,
              with_segments=True)
    got = {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True)}
    want = {e: int(v) for e, v in zip(EVENTS, w.events, strict=True)}
    assert got == want
    assert c.segments is not None
    segs = c.segments[0][0]
    assert [s.tolist() for s in segs.events] == [s.tolist() for s in w.segments]
    assert segs.lock_held.tolist() == list(w.lock_held_segments)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_counts_equal_walker(data: st.DataObject) -> None:
    lay = data.draw(layouts())
    event = data.draw(events(lay))
    behs = {k: data.draw(behaviours, label=k) for k in PASS_KINDS}
    fwb = data.draw(st.booleans(), label="fwb")
    tlbi_range = data.draw(st.booleans(), label="tlbi_range")
    line = data.draw(st.sampled_from([64, 128]), label="line")
    agree(lay, event, behs, fwb, line, tlbi_range)


STOCK = {k: Behaviour() for k in PASS_KINDS}
G, M, K = 1 << 30, 1 << 20, 1 << 10


def test_destroy_walk_has_no_range_flush() -> None:
    # Shrunk from the property test: a destroy walk invalidates nothing, even with
    # leaf_tlbi=range on a TLBIRANGE+FWB machine.
    lay = Layout(Geometry(4096, 32), (Memslot(0, 8192),), ())
    behs = {**STOCK, "teardown": Behaviour(walk="destroy", leaf_tlbi="range")}
    agree(lay, exit_event(lay), behs, True, 64, True)


def test_shared_table_across_memslots_freed_by_second_pass() -> None:
    # One PTE table (2 MiB span) shared by two memslots: slot 0 has pages, slot 1 has a hole
    # at its start.  v5.5 walks slot 1 first (highest GPA): it visits the table's entries in its
    # range; then slot 0's pass empties and frees the table.
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(G, G + M), Memslot(G + M, G + 4 * M)),
                 (Extent(G, G + 64 * K, 4096, 0), Extent(G + 2 * M, G + 4 * M, 2 * M, 1)))
    agree(lay, (Invocation(UNMAP, G, G + 4 * M),), STOCK, False, 64)


def test_exit_and_munmap_fixed_layouts() -> None:
    g = Geometry(4096, 44)
    lay = Layout(g, (Memslot(G, 9 * G),), (Extent(G, 2 * G, 2 * M, 0), Extent(2 * G, 3 * G, G, 0),
                                          Extent(3 * G, 3 * G + 8 * M, 4096, 0, True)))
    agree(lay, exit_event(lay), STOCK, False, 64)
    agree(lay, munmap_event(lay, G + 3 * M + 4 * K, 3 * G + 4 * M), STOCK, False, 128)


def test_segments_sum_to_totals_without_host_frees() -> None:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(G, 3 * G),), (Extent(G, 3 * G, 2 * M, 0),))
    c = count(batch_from_layout(lay, exit_event(lay)), [STOCK], fwb=False, cache_line=64,
              with_segments=True)
    assert c.segments is not None
    total = c.segments[0][0].events.sum(axis=0)
    expect = c.events[0, 0].copy()
    expect[HOST] = 0
    assert np.array_equal(total, expect)


def test_repeated_table_regions_collapse_and_agree() -> None:
    """A walk chunked finer than a table (16 KiB granule: 32 MiB chunks under 64 GiB tables)
    over a guest spanning several whole tables: chunk_runs lets the first whole 64 GiB region
    stand for the others (times > 1), and the counts and segments still equal the walker's."""
    from s2teardown.core.counts.chunked import chunk_runs

    g = Geometry(16384, 44)
    lay = Layout(g, (Memslot(G, 201 * G),), (Extent(G, 201 * G - 64 * M, 32 * M, 0),
                                           Extent(201 * G - 64 * M, 201 * G, 16384, 0)))
    behs = {**STOCK, "teardown": Behaviour(resched="largest_block")}
    b = batch_from_layout(lay, exit_event(lay))
    table = g.span(0)
    assert table == 64 * G and g.min_block_chunk == 32 * M
    c_lo, c_hi, mult, times = chunk_runs(b, 0, g.min_block_chunk)
    # [64 GiB, 128 GiB) stands for itself and [128 GiB, 192 GiB); the empty regions above the
    # guest (from 256 GiB to the 16 TiB top) for 251 regions
    assert sorted(set(times[mult > 0].tolist())) == [1, 2, 251]
    # every chunk of the pass is stood for once: the whole IPA space in 32 MiB chunks
    assert int((mult * times).sum()) == g.ipa_size // (32 * M)
    agree(lay, exit_event(lay), behs, False, 64)
    agree(lay, munmap_event(lay, 3 * G + 16384, 199 * G), behs, False, 64)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_chunked_walk_closed_form_equals_chunk_by_chunk(data: st.DataObject) -> None:
    """The totals' closed form of a chunked walk (visits from alive chunks per table, one range
    flush per chunk from the chunk count) equals evaluating the representative chunks one by
    one from the state each starts in (`chunk_runs` + `chunk_quantities`, what the segments use)
    — both of its paths: Python integers for one scenario, arrays for the same scenario twice."""
    from s2teardown.core.counts.chunked import chunk_quantities, chunk_runs, range_events
    from s2teardown.core.counts.quantities import (
        Extents,
        pass_quantities,
        pass_quantities_chunked,
        range_flush_columns,
    )
    from s2teardown.core.vocabulary import EVENT_INDEX

    lay = data.draw(layouts())
    event = data.draw(events(lay))
    b = batch_from_layout(lay, event)
    g = b.geometry
    ext, ext_c = Extents(b, 0), Extents(b, 1)
    b2 = _twice(b)  # two scenarios: the array path
    ext2 = Extents(b2, 0)
    prev_lo = np.zeros((1, b.ext_lo.shape[1], 0), dtype=np.int64)
    prev_hi = prev_lo.copy()
    for j in range(len(b.pass_inv)):
        lo, hi = b.pass_lo[:, j], b.pass_hi[:, j]
        prev2 = (np.concatenate([prev_lo, prev_lo]), np.concatenate([prev_hi, prev_hi]))
        for chunk in sorted({g.min_block_chunk, G, g.top_entry_size}):
            c_lo, c_hi, mult, times = chunk_runs(b, j, chunk)
            m = mult * times
            if chunk < g.span(0):
                qc = chunk_quantities(g, ext_c, prev_lo[:, None], prev_hi[:, None], lo, c_lo, c_hi)
                by_chunk = (qc.visits * m).sum(axis=1).tolist()
                one = pass_quantities_chunked(g, ext, prev_lo, prev_hi, lo, hi, [chunk])[3][chunk]
                arrays = pass_quantities_chunked(g, ext2, *prev2, b2.pass_lo[:, j], b2.pass_hi[:, j],
                                                 [chunk])[3][chunk]
                assert one.tolist() == by_chunk and arrays.tolist() == by_chunk * 2, (j, chunk)
            per_chunk = (range_events(g, c_lo, c_hi) * m[..., None]).sum(axis=1)
            calls, ops = range_flush_columns(g, lo, hi, chunk)
            assert calls.tolist() == per_chunk[:, EVENT_INDEX["range_flush_call"]].tolist()
            assert ops.tolist() == per_chunk[:, EVENT_INDEX["range_tlbi_op"]].tolist()
        _, prev_lo, prev_hi = pass_quantities(g, ext, prev_lo, prev_hi, lo, hi)


def test_munmap_across_many_memslots_equals_walker() -> None:
    """An unmap across 96 memslots (288 passes with the two edge CLEARs, the coverage kept
    narrow by intervals.compact) against the walker, every variant's behaviours, in totals and
    segments; the memslots hold 2 MiB blocks, 4 KiB pages and device pages."""
    from s2teardown.inputs.variants import load_variants
    from s2teardown.inputs.workload import (
        Workload,
        event_of,
        layout_of,
        memslot_bounds,
        uniform_batch,
    )

    w = Workload(vm_bytes=96 * 32 * M, backing=((2 * M, 80.0), (4 * K, 20.0)), mapped=0.9,
                 device_fraction=0.02, memslots=96, event="munmap", range=(3 * M + 4 * K, 90 * 32 * M))
    b = uniform_batch([w])
    lay, event = layout_of(b, 0, memslot_bounds(w)), event_of(b, 0)
    assert len(lay.memslots) == 96 and len(b.pass_inv) == 3 * 96
    seen = set()
    for v in load_variants().variants:
        behs = {k: v.behaviours[k] for k in PASS_KINDS}
        key = tuple(sorted(behs.items()))
        if key not in seen:
            seen.add(key)
            agree(lay, event, behs, False, 64)


def test_compact_keeps_every_set() -> None:
    """intervals.compact drops empty intervals but no set changes: same union length, same
    complement, whatever the order and the empties."""
    from s2teardown.core.intervals import compact, complement_within, union_length

    rng = np.random.default_rng(7)
    lo = rng.integers(0, 50, size=(5, 3, 9))
    hi = lo + rng.integers(-3, 6, size=lo.shape)
    hi[rng.random(lo.shape) < 0.6] = -1  # mostly empty, anywhere
    lo = np.where(hi > lo, lo, -1)
    hi = np.where(hi > lo, hi, -1)
    c_lo, c_hi = compact(lo, hi)
    assert c_lo.shape[-1] < lo.shape[-1]
    assert np.array_equal(union_length(c_lo, c_hi), union_length(lo, hi))
    a, b = np.zeros((5, 3), dtype=np.int64), np.full((5, 3), 60, dtype=np.int64)
    want = complement_within(a, b, lo, hi)
    got = complement_within(a, b, c_lo, c_hi)
    # the same pieces once the empty ones are dropped
    for s_ in range(5):
        for e in range(3):
            w_ = sorted((int(x), int(y)) for x, y in zip(want[0][s_, e], want[1][s_, e], strict=True) if y > x)
            g_ = sorted((int(x), int(y)) for x, y in zip(got[0][s_, e], got[1][s_, e], strict=True) if y > x)
            assert w_ == g_


def _twice(b):
    """The one-scenario batch ``b`` as a batch of that scenario twice."""
    import dataclasses

    return dataclasses.replace(b, **{
        f.name: np.concatenate([getattr(b, f.name)] * 2) for f in dataclasses.fields(b)
        if isinstance(getattr(b, f.name), np.ndarray)
    })


def test_four_level_batch_equals_its_scenarios() -> None:
    """A batch of 4-level guests (arrays) gives each scenario's counts alone (integers)."""
    from s2teardown.inputs.variants import load_variants
    from s2teardown.inputs.workload import Workload, uniform_batch

    behs = [v.behaviours for v in load_variants().variants]
    ws = [Workload(vm_bytes=(1 + 37 * i) * G, backing=((2 * M, 70.0), (4 * K, 30.0)), mapped=0.5 + 0.05 * i,
                   ipa_bits=44, memslots=1, event=ev, range=(5 * M + 4 * K * i, (i + 1) * G))
          for ev in ("exit", "munmap") for i in range(6)]
    for event in ("exit", "munmap"):
        group = [w for w in ws if w.event == event]
        together = count(uniform_batch(group), behs, fwb=False, cache_line=64, tlbi_range=True).events
        for s, w in enumerate(group):
            alone = count(uniform_batch([w]), behs, fwb=False, cache_line=64, tlbi_range=True).events
            assert alone[0].tolist() == together[s].tolist(), (event, s)


def test_munmap_calls_vectorised_equal_layout_munmap_event() -> None:
    """The workload builder's vectorised edge rule (inputs/workload.py ``split_block``) and the
    scalar one the walker's layouts use (core/layout.py ``munmap_event``) are two codings of
    docs/model.md §3: on random workloads (granules, backings, mapped fractions, memslots,
    unaligned ranges) they give the same invocations, scenario by scenario."""
    from s2teardown.core.layout import munmap_event
    from s2teardown.inputs.workload import (
        Workload,
        event_of,
        layout_of,
        memslot_bounds,
        uniform_batch,
    )

    rng = np.random.default_rng(20261207)
    seen_4k_clear = seen_no_table = 0
    for _ in range(300):
        granule = int(rng.choice([4 * K, 16 * K, 64 * K]))
        pmd = granule * (granule // 8)
        slots = int(rng.choice([1, 2, 4]))
        vm = slots * pmd * int(rng.integers(1, 6))
        mix = rng.choice(["pages", "blocks", "both"])
        backing = {"pages": ((granule, 100.0),), "blocks": ((pmd, 100.0),),
                   "both": ((pmd, 50.0), (granule, 50.0))}[mix]
        mapped = float(rng.choice([1.0, 0.5, 0.2, 0.0]))
        pages = vm // granule
        a = int(rng.integers(0, pages))
        b = int(rng.integers(a + 1, pages + 1))
        w = Workload(vm_bytes=vm, backing=backing, mapped=mapped, memslots=slots, granule=granule,
                     device_fraction=float(rng.choice([0.0, 0.1])), event="munmap",
                     range=(a * granule, (b - a) * granule))
        w.check()
        bt = uniform_batch([w])
        lay = layout_of(bt, 0, memslot_bounds(w))
        lo, hi = w.ram_base + a * granule, w.ram_base + b * granule
        want = munmap_event(lay, lo, hi)
        assert event_of(bt, 0) == want, (w, want)
        clears = [i for i in want if i.kind == "clear"]
        if any(not any(e.leaf == pmd and e.lo <= c.lo < e.hi for e in lay.extents) for c in clears):
            seen_4k_clear += 1
        if len(clears) < 2 and lo % pmd and hi % pmd and mapped < 1.0:
            seen_no_table += 1
    assert seen_4k_clear > 20 and seen_no_table > 0  # the new cases were exercised
