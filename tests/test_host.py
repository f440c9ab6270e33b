"""The host side (core.host) against hand-worked counts and the literal host simulation
(oracle.host) on random layouts: exact, per operation (docs/model.md §14)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2teardown.core.geometry import Geometry
from s2teardown.core.host import (
    EXIT_MMAP,
    MADV_DONTNEED,
    MUNMAP,
    OOM_REAP,
    QUANTITY_NAMES,
    HostExtents,
    HostOp,
    host_quantities,
)
from s2teardown.core.layout import Extent, Layout, Memslot
from s2teardown.oracle.host import host_counts

from .strategies import EXAMPLES, layouts, ranges

K, M, G = 1 << 10, 1 << 20, 1 << 30


def model(layout: Layout, ops: list[HostOp]) -> list[dict[str, int]]:
    ext = layout.extents
    n = max(len(ext), 1)
    arr = lambda f, pad: np.array([[f(e) for e in ext] + [pad] * (n - len(ext))], dtype=np.int64)  # noqa: E731
    e = HostExtents.of(arr(lambda x: x.lo, 0), arr(lambda x: x.hi, 0), arr(lambda x: x.leaf, 0),
                       np.array([[x.device for x in ext] + [False] * (n - len(ext))]))
    lo = np.array([[op.lo for op in ops]], dtype=np.int64)
    hi = np.array([[op.hi for op in ops]], dtype=np.int64)
    out = host_quantities(layout.geometry, e, [op.kind for op in ops], lo, hi)
    return [{f: int(getattr(q, f)[0]) for f in QUANTITY_NAMES if int(getattr(q, f)[0])} for q in out]


def _layout(*extents: tuple[int, int, int], slot: tuple[int, int] = (G, 5 * G)) -> Layout:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(*slot),), tuple(Extent(lo, hi, leaf, 0) for lo, hi, leaf in extents))
    lay.validate()
    return lay


def test_exit_of_one_gib_of_4k_pages_by_hand() -> None:
    lay = _layout((G, 2 * G, 4 * K))
    # 262,144 PTEs zapped and freed; free_pgtables: 512 PTE tables + 1 PMD table + 1 PUD table
    want = {"pte_zap": 262_144, "page_free": 262_144, "table_free": 512 + 1 + 1, "srcu_sync": 2}
    assert model(lay, [HostOp(EXIT_MMAP)]) == [want] == host_counts(lay, [HostOp(EXIT_MMAP)])


def test_exit_of_one_gib_of_thp_by_hand() -> None:
    lay = _layout((G, 2 * G, 2 * M))
    # 512 zap_huge_pmd, 512 order-9 folios freed, 512 deposited PTE tables + PMD + PUD tables
    want = {"pmd_zap": 512, "folio_free": 512, "table_free": 512 + 1 + 1, "srcu_sync": 2}
    assert model(lay, [HostOp(EXIT_MMAP)]) == [want] == host_counts(lay, [HostOp(EXIT_MMAP)])


def test_munmap_cutting_two_thps_then_exit_by_hand() -> None:
    lay = _layout((G, G + 8 * M, 2 * M))  # 4 THPs
    ops = [HostOp(MUNMAP, G + 1 * M, G + 5 * M), HostOp(EXIT_MMAP)]
    # munmap [1 MiB, 5 MiB): THP 0 and THP 2 cut (split; 256 + 256 pages zapped per PTE, folios
    # kept), THP 1 [2, 4) MiB whole: zapped, freed, its deposited table freed; no table region
    # (2 MiB, 1 GiB, 512 GiB) lies wholly inside the range
    first = {"pte_zap": 512, "pmd_split": 2, "pmd_zap": 1, "folio_free": 1, "table_free": 1}
    # exit: 256 + 256 remaining pages of the split THPs per PTE (their folios freed), THP 3
    # whole (+ its deposited table); tables: 2 PTE tables of the split THPs + PMD + PUD tables
    then = {"pte_zap": 512, "pmd_zap": 1, "folio_free": 3, "table_free": 1 + 2 + 1 + 1, "srcu_sync": 2}
    assert model(lay, ops) == [first, then] == host_counts(lay, ops)


def test_dontneed_keeps_page_tables_and_oom_reap_zaps_everything() -> None:
    lay = _layout((G, G + 4 * M, 4 * K), (G + 4 * M, G + 8 * M, 2 * M))
    ops = [HostOp(MADV_DONTNEED, G, G + 8 * M)]
    want = {"pte_zap": 1024, "page_free": 1024, "pmd_zap": 2, "folio_free": 2, "table_free": 2}
    assert model(lay, ops) == [want] == host_counts(lay, ops)
    ops = [HostOp(OOM_REAP, G, G + 8 * M)]
    assert model(lay, ops) == [want] == host_counts(lay, ops)


def test_device_extents_are_not_the_hosts() -> None:
    g = Geometry(4096, 40)
    lay = Layout(g, (Memslot(G, 2 * G),), (Extent(G, G + 64 * K, 4 * K, 0, True),))
    assert model(lay, [HostOp(EXIT_MMAP)]) == [{"srcu_sync": 2}] == host_counts(lay, [HostOp(EXIT_MMAP)])


@st.composite
def host_ops(draw: st.DrawFn, lay: Layout) -> list[HostOp]:
    kind = draw(st.sampled_from([EXIT_MMAP, OOM_REAP, MUNMAP, MADV_DONTNEED, "munmap-then-exit"]))
    if kind == EXIT_MMAP:
        return [HostOp(kind)]
    lo, hi = draw(ranges(lay))
    if kind == "munmap-then-exit":
        return [HostOp(MUNMAP, lo, hi), HostOp(EXIT_MMAP)]
    return [HostOp(kind, lo, hi)]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_closed_form_equals_the_literal_host(data: st.DataObject) -> None:
    lay = data.draw(layouts())
    ops = data.draw(host_ops(lay))
    assert model(lay, ops) == host_counts(lay, ops)


def test_refuses_sequences_it_does_not_model() -> None:
    lay = _layout((G, 2 * G, 2 * M))
    with pytest.raises(ValueError):
        model(lay, [HostOp(EXIT_MMAP), HostOp(MUNMAP, G, 2 * G)])
