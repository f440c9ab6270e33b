"""A batch of scenarios: extents, invocations and passes as arrays (the model's input)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from s2teardown.core.geometry import Geometry
from s2teardown.core.host import HostOp
from s2teardown.core.intervals import (
    I64,
)
from s2teardown.core.layout import (
    ITERATES_MEMSLOTS,
    RESET,
    TEARDOWN,
    Invocation,
    Layout,
    vmas,
)
from s2teardown.core.vocabulary import EVENTS

N_EVENTS = len(EVENTS)
ONE_GIB = 1 << 30


@dataclass(frozen=True)
class Batch:
    """S scenarios sharing one geometry and one shape of event (the same invocation kinds).

    Extents are padded with ``leaf == 0``; an invocation absent from a scenario has
    ``inv_present == False`` and empty passes.
    """

    geometry: Geometry
    ext_lo: I64  # (S, E)
    ext_hi: I64  # (S, E)
    ext_leaf: I64  # (S, E), 0 = padding
    ext_dev: npt.NDArray[np.bool_]  # (S, E)
    n_memslots: I64  # (S,)
    inv_kind: tuple[str, ...]  # (I,)
    inv_blockable: tuple[bool, ...]  # (I,)
    inv_present: npt.NDArray[np.bool_]  # (S, I)
    inv_lo: I64  # (S, I) the range each invocation was called with
    inv_hi: I64  # (S, I)
    pass_lo: I64  # (S, J)
    pass_hi: I64  # (S, J)
    pass_inv: tuple[int, ...]  # (J,) invocation index of each pass
    pass_slot: tuple[int, ...]  # (J,) memslot index (-1 for a teardown pass)
    # the host mm's own operations on guest RAM, in order (core/host.py): none by default
    host_kind: tuple[str, ...] = ()  # (H,)
    host_lo: I64 | None = None  # (S, H)
    host_hi: I64 | None = None  # (S, H)
    # hugetlbfs-backed block extents (S, E) (None: none but PUD blocks, core/host.py), and the
    # run of adjacent memslots (one host VMA, `layout.vmas`) each extent lies in (None: one run)
    ext_huge: npt.NDArray[np.bool_] | None = None
    ext_run: I64 | None = None
    # the shadow Stage-2s of a nested guest (core/el2.py), each a batch of its own over the same
    # scenarios: one invocation per canonical invocation that reaches kvm_nested_s2_unmap or exit
    shadows: tuple[Batch, ...] = ()

    @property
    def size(self) -> int:
        return int(self.ext_lo.shape[0])


def batch_from_layout(
    layout: Layout, event: Sequence[Invocation], host: Sequence[HostOp] = ()
) -> Batch:
    """A batch of one scenario from an explicit layout and event (and the host's operations)."""
    g = layout.geometry
    ext = layout.extents
    e_lo = np.array([[e.lo for e in ext]], dtype=np.int64).reshape(1, len(ext))
    e_hi = np.array([[e.hi for e in ext]], dtype=np.int64).reshape(1, len(ext))
    e_leaf = np.array([[e.leaf for e in ext]], dtype=np.int64).reshape(1, len(ext))
    e_dev = np.array([[e.device for e in ext]], dtype=bool).reshape(1, len(ext))
    e_huge = np.array([[e.hugetlb for e in ext]], dtype=bool).reshape(1, len(ext))
    runs = vmas(layout)
    e_run = np.array([[next(i for i, (a, z) in enumerate(runs) if a <= e.lo < z) for e in ext]],
                     dtype=np.int64).reshape(1, len(ext))
    p_lo: list[int] = []
    p_hi: list[int] = []
    p_inv: list[int] = []
    p_slot: list[int] = []
    for i, inv in enumerate(event):
        if inv.kind not in ITERATES_MEMSLOTS:
            # teardown: the whole IPA space; memslot delete, block retry: their own range
            whole = inv.kind == TEARDOWN
            p_lo.append(0 if whole else inv.lo)
            p_hi.append(g.ipa_size if whole else inv.hi)
            p_inv.append(i)
            p_slot.append(-1)
            continue
        # handle_hva_to_gpa walks the memslot array, kept sorted by base GFN, highest first
        # (update_memslots, virt/kvm/kvm_main.c, v5.5)
        for m, s in sorted(enumerate(layout.memslots), key=lambda ms: ms[1].lo, reverse=True):
            if inv.kind == RESET:  # stage2_unmap_vm: every intersecting memslot, whole
                hit = inv.lo < s.hi and s.lo < inv.hi
                p_lo.append(s.lo if hit else 0)
                p_hi.append(s.hi if hit else 0)
            else:
                p_lo.append(max(inv.lo, s.lo))
                p_hi.append(min(inv.hi, s.hi))
            p_inv.append(i)
            p_slot.append(m)
    return Batch(
        geometry=g,
        ext_lo=e_lo,
        ext_hi=e_hi,
        ext_leaf=e_leaf,
        ext_dev=e_dev,
        n_memslots=np.array([len(layout.memslots)], dtype=np.int64),
        inv_kind=tuple(inv.kind for inv in event),
        inv_blockable=tuple(inv.blockable for inv in event),
        inv_present=np.ones((1, len(event)), dtype=bool),
        inv_lo=np.array([[inv.lo for inv in event]], dtype=np.int64).reshape(1, len(event)),
        inv_hi=np.array([[inv.hi for inv in event]], dtype=np.int64).reshape(1, len(event)),
        pass_lo=np.array([p_lo], dtype=np.int64).reshape(1, len(p_lo)),
        pass_hi=np.array([p_hi], dtype=np.int64).reshape(1, len(p_hi)),
        pass_inv=tuple(p_inv),
        pass_slot=tuple(p_slot),
        host_kind=tuple(op.kind for op in host),
        host_lo=np.array([[op.lo for op in host]], dtype=np.int64).reshape(1, len(host)),
        host_hi=np.array([[op.hi for op in host]], dtype=np.int64).reshape(1, len(host)),
        ext_huge=e_huge,
        ext_run=e_run,
    )


def slice_batch(b: Batch, lo: int, hi: int) -> Batch:
    """Scenarios ``lo..hi-1`` of a batch (views, no copy)."""
    return Batch(
        geometry=b.geometry,
        ext_lo=b.ext_lo[lo:hi],
        ext_hi=b.ext_hi[lo:hi],
        ext_leaf=b.ext_leaf[lo:hi],
        ext_dev=b.ext_dev[lo:hi],
        n_memslots=b.n_memslots[lo:hi],
        inv_kind=b.inv_kind,
        inv_blockable=b.inv_blockable,
        inv_present=b.inv_present[lo:hi],
        inv_lo=b.inv_lo[lo:hi],
        inv_hi=b.inv_hi[lo:hi],
        pass_lo=b.pass_lo[lo:hi],
        pass_hi=b.pass_hi[lo:hi],
        pass_inv=b.pass_inv,
        pass_slot=b.pass_slot,
        host_kind=b.host_kind,
        host_lo=None if b.host_lo is None else b.host_lo[lo:hi],
        host_hi=None if b.host_hi is None else b.host_hi[lo:hi],
        ext_huge=None if b.ext_huge is None else b.ext_huge[lo:hi],
        ext_run=None if b.ext_run is None else b.ext_run[lo:hi],
        shadows=tuple(slice_batch(x, lo, hi) for x in b.shadows),
    )


def whole_ipa_batch(base: Batch, calls: Sequence[tuple[str, npt.NDArray[np.bool_], bool]]) -> Batch:
    """``base``'s extents (a shadow Stage-2 of a nested guest, core/el2.py) under one pass over
    the WHOLE IPA space per call (kind, present per scenario, blockable), no memslot iterated
    and no host operation: ``kvm_nested_s2_unmap`` -> ``kvm_stage2_unmap_range(mmu, 0,
    kvm_phys_size(mmu))`` per notifier call, ``kvm_free_stage2_pgd`` at exit."""
    n_s, g = base.size, base.geometry
    zero = np.zeros((n_s, len(calls)), dtype=np.int64)
    present = (np.stack([np.broadcast_to(np.asarray(c[1], dtype=bool), (n_s,)) for c in calls], axis=1)
               if calls else np.zeros((n_s, 0), dtype=bool))
    return replace(
        base,
        n_memslots=np.zeros(n_s, dtype=np.int64),
        inv_kind=tuple(c[0] for c in calls),
        inv_blockable=tuple(c[2] for c in calls),
        inv_present=present,
        inv_lo=zero,
        inv_hi=zero + g.ipa_size,
        pass_lo=zero,
        pass_hi=np.where(present, g.ipa_size, 0).astype(np.int64),
        pass_inv=tuple(range(len(calls))),
        pass_slot=(-1,) * len(calls),
        host_kind=(),
        host_lo=np.zeros((n_s, 0), dtype=np.int64),
        host_hi=np.zeros((n_s, 0), dtype=np.int64),
        shadows=(),
    )
