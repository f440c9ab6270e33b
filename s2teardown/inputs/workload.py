"""Workloads: the guest a user describes with flags, as a vectorised batch of Stage-2 layouts.

A uniform workload (docs/model.md, "Workload"):
* guest RAM of ``vm_bytes`` at ``ram_base`` (QEMU virt: 1 GiB), split into ``memslots`` equal,
  contiguous memslots;
* in each memslot, ``floor(mapped × slot size)`` bytes are mapped from the slot's start; of them a
  ``device_fraction`` (rounded down to whole pages) is device pages placed last, and the rest is
  shared between leaf sizes by the backing mix (percentages), each share rounded down to whole
  leaves, largest leaves first so every region stays aligned;
* the event is ``exit`` (release: whole IPA space) or ``munmap`` of ``[offset, offset+size)``
  of guest RAM (default: all of it; guest RAM is one anonymous VMA of the host), preceded by a
  PMD-block CLEAR at each unaligned edge that ``__split_vma`` hands to ``__split_huge_pmd``,
  4 KiB-backed or THP (`layout.munmap_event`, `layout.split_edge`);
* the host mm's own work on guest RAM follows the notifiers (core/host.py): ``exit`` runs
  exit_mmap, ``munmap`` unmap_region over the range, ``clear`` MADV_DONTNEED over it, ``oom``
  the OOM reaper over it (skipping hugetlb VMAs: with hugetlb shares, one UNMAP per anonymous
  VMA, the part of each memslot after them); memslot delete, vCPU reset and the fault path
  leave host memory alone.

Everything is built with numpy over many scenarios at once; the explicit `Layout` of one
scenario (for the walker and for display) is read back from the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from s2teardown.core.counts import Batch, whole_ipa_batch
from s2teardown.core.el2 import KVM_MODES, PKVM_KINDS, SHADOW_KINDS
from s2teardown.core.geometry import MAX_IPA_BITS, Geometry, auto_ipa_bits
from s2teardown.core.host import EXIT_MMAP, MADV_DONTNEED, MUNMAP, OOM_REAP, HostOp
from s2teardown.core.layout import (
    BLOCK_RETRY,
    CLEAR,
    ITERATES_MEMSLOTS,
    MEMSLOT,
    RESET,
    TEARDOWN,
    UNMAP,
    Extent,
    Invocation,
    Layout,
    Memslot,
    host_pmd_table_span,
)
from s2teardown.core.prices import Placement
from s2teardown.inputs.paths import PATH_NAMES, RANGED
from s2teardown.inputs.units import format_size, short_size

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

GIB = 1 << 30
MIB = 1 << 20
#: The user paths into Stage-2 unmap (`--event`; inputs/paths.py has the kernel functions).
EVENTS_SUPPORTED = PATH_NAMES


@dataclass(frozen=True)
class Workload:
    vm_bytes: int
    backing: tuple[tuple[int, float], ...] = ((2 * MIB, 100.0),)  # (leaf bytes, percent)
    mapped: float = 1.0
    device_fraction: float = 0.0
    memslots: int = 1
    ipa_bits: int | None = None  # None: auto (QEMU's choice)
    granule: int = 4096
    ram_base: int = GIB
    event: str = "exit"
    range: tuple[int, int] | None = None  # (offset into guest RAM, size) for munmap
    placement: Placement | None = None  # None: the machine's default
    hugetlb: tuple[int, ...] = ()  # leaf sizes of the mix backed by hugetlbfs (--backing hugetlb-2M)
    # EL2 paths (core/el2.py, docs/model.md §15): kvm-arm.mode (None: the machine's, VHE if it
    # has it), a protected VM (pKVM), and the mapped bytes of each shadow Stage-2 (nested guest)
    kvm_mode: str | None = None
    protected_vm: bool = False
    shadow_mmus: tuple[int, ...] = ()

    def resolved_ipa_bits(self) -> int:
        if self.ipa_bits is not None:
            return self.ipa_bits
        # +1: v5.5 refuses a memslot that ends exactly at the top of the IPA space
        # (kvm_arch_prepare_memory_region), so the guest must end strictly below it.
        return auto_ipa_bits(self.ram_base + self.vm_bytes + 1)

    def geometry(self) -> Geometry:
        return Geometry(self.granule, self.resolved_ipa_bits())

    def check(self) -> None:
        """Raise ValueError (with the flag's name first) if the workload cannot be laid out."""
        if self.vm_bytes <= 0:
            raise ValueError("vm: expected a positive size")
        if self.ipa_bits is None and self.resolved_ipa_bits() > MAX_IPA_BITS:
            raise ValueError(
                f"vm: expected guest RAM (from its base) to end below the top of the largest "
                f"({MAX_IPA_BITS}-bit) IPA space ({format_size(1 << MAX_IPA_BITS)})"
            )
        g = self.geometry()
        if self.vm_bytes <= 0 or self.vm_bytes % g.granule:
            raise ValueError(f"vm: expected a positive multiple of the {g.granule}-byte granule")
        if self.ram_base % g.largest_block:
            raise ValueError(f"ram-base: expected a multiple of {g.largest_block} bytes")
        if self.ram_base + self.vm_bytes >= g.ipa_size:
            raise ValueError(
                f"vm: expected guest RAM to end below the top of the {g.ipa_bits}-bit IPA space "
                "(v5.5 refuses a memslot that reaches it)"
            )
        if self.memslots < 1 or self.vm_bytes % self.memslots:
            raise ValueError("memslots: expected a whole number that divides the VM size")
        slot = self.vm_bytes // self.memslots
        for leaf, _ in self.backing:
            if leaf not in g.leaf_sizes:
                sizes = ", ".join(short_size(s) for s in g.leaf_sizes)
                raise ValueError(
                    f"backing: expected leaf sizes the {format_size(g.granule)} granule maps ({sizes})"
                )
            if self.vm_bytes % leaf:
                raise ValueError(
                    f"vm: expected a whole number of {format_size(leaf)} leaves (--backing), "
                    f"at least {format_size(leaf)}"
                )
            if slot % leaf:
                raise ValueError(
                    f"memslots: expected memslots that each hold whole {format_size(leaf)} leaves "
                    f"(each would be {format_size(slot)})"
                )
        if abs(sum(p for _, p in self.backing) - 100.0) > 1e-6:
            raise ValueError("backing: the percentages must sum to 100")
        for leaf in self.hugetlb:
            if leaf not in dict(self.backing) or leaf == g.granule:
                raise ValueError(
                    f"backing: expected hugetlb pages of a block size the {format_size(g.granule)} "
                    f"granule maps ({', '.join(short_size(s) for s in g.leaf_sizes[1:])})"
                )
        if not 0.0 <= self.mapped <= 1.0:
            raise ValueError("mapped: expected a fraction in [0, 1]")
        if not 0.0 <= self.device_fraction <= 1.0:
            raise ValueError("device: expected a fraction in [0, 1]")
        if self.event not in EVENTS_SUPPORTED:
            raise ValueError(f"event: expected one of {EVENTS_SUPPORTED}")
        if self.range is not None:
            off, size = self.range
            if self.event not in RANGED:
                raise ValueError(f"range: expected an --event that takes a range ({', '.join(RANGED)})")
            if size <= 0 or off < 0 or off + size > self.vm_bytes:
                raise ValueError(
                    f"range: expected OFFSET:SIZE inside the guest RAM ({format_size(self.vm_bytes)})"
                )
            if off % g.granule or size % g.granule:
                raise ValueError(f"range: expected multiples of the {g.granule}-byte granule")
            huge = max(self.hugetlb, default=0)
            if huge and (off % huge or size % huge) and self.event in ("munmap", "munmap-then-exit",
                                                                        "clear"):
                # __split_vma -> hugetlb_vm_op_split refuses a cut hugetlb page (munmap: EINVAL);
                # madvise_dontneed_free_valid_vma refuses an unaligned start (MADV_DONTNEED)
                raise ValueError(
                    f"range: expected OFFSET and SIZE multiples of {format_size(huge)} with hugetlb "
                    f"backing (the kernel refuses to cut a hugetlb page: EINVAL)"
                )
        self._check_el2(g)

    def _check_el2(self, g: Geometry) -> None:
        if self.kvm_mode is not None and self.kvm_mode not in KVM_MODES:
            raise ValueError(f"kvm-mode: expected one of {', '.join(KVM_MODES)}")
        if self.protected_vm and self.kvm_mode != "protected":
            raise ValueError("protected-vm: expected --kvm-mode protected (a protected VM needs pKVM)")
        kinds = set(_EVENT_KINDS.get(self.event, ()))
        if self.shadow_mmus and self.kvm_mode not in (None, "vhe"):
            raise ValueError("shadow-mmus: expected a VHE host (--kvm-mode vhe on a machine with VHE): "
                             "nested virtualisation runs with KVM at EL2, neither nVHE nor pKVM")
        if self.kvm_mode == "protected" and not kinds <= set(PKVM_KINDS):
            raise ValueError("event: expected exit, munmap, munmap-then-exit, clear or oom under "
                             "--kvm-mode protected (the other paths are not modelled under pKVM)")
        if self.shadow_mmus and not kinds <= set(SHADOW_KINDS):
            raise ValueError("event: expected exit, munmap, munmap-then-exit, clear, oom or "
                             "memslot-delete with --shadow-mmus")
        for size in self.shadow_mmus:
            if size <= 0 or size % g.granule:
                raise ValueError(f"shadow-mmus: expected sizes that are positive multiples of the "
                                 f"{g.granule}-byte granule")
            if self.ram_base + size >= g.ipa_size:
                raise ValueError(f"shadow-mmus: expected each shadow's memory to end below the top of "
                                 f"the {g.ipa_bits}-bit IPA space")
            for leaf, _ in self.backing:
                if size % leaf:
                    raise ValueError(f"shadow-mmus: expected whole {format_size(leaf)} leaves in each "
                                     f"shadow (--backing), got {format_size(size)}")


def uniform_batch(workloads: Sequence[Workload]) -> Batch:
    """One batch for workloads sharing geometry, memslot count, leaf-size list and event."""
    w0 = workloads[0]
    g = w0.geometry()
    leaves = tuple(sorted((leaf for leaf, _ in w0.backing), reverse=True))
    for w in workloads:
        if (
            w.geometry() != g
            or w.memslots != w0.memslots
            or w.event != w0.event
            or tuple(sorted((leaf for leaf, _ in w.backing), reverse=True)) != leaves
            or tuple(sorted(w.hugetlb)) != tuple(sorted(w0.hugetlb))
            or len(w.shadow_mmus) != len(w0.shadow_mmus)
        ):
            raise ValueError("uniform_batch: workloads must share geometry, memslots, leaves, event, "
                             "shadow count")
    share = np.array([[dict(w.backing)[leaf] for leaf in leaves] for w in workloads])
    rng = [w.range if w.range is not None else (0, w.vm_bytes) for w in workloads]
    return uniform_batch_arrays(
        g,
        vm_bytes=np.array([w.vm_bytes for w in workloads], dtype=np.int64),
        mapped=np.array([w.mapped for w in workloads]),
        leaves=leaves,
        share_pct=share,
        device_fraction=np.array([w.device_fraction for w in workloads]),
        memslots=w0.memslots,
        ram_base=np.array([w.ram_base for w in workloads], dtype=np.int64),
        event=w0.event,
        range_off=np.array([r[0] for r in rng], dtype=np.int64),
        range_size=np.array([r[1] for r in rng], dtype=np.int64),
        hugetlb=w0.hugetlb,
        shadow_bytes=tuple(np.array([w.shadow_mmus[k] for w in workloads], dtype=np.int64)
                           for k in range(len(w0.shadow_mmus))),
    )


#: The invocation kinds of each user path (what `uniform_batch_arrays` builds), for the checks.
_EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "exit": (TEARDOWN,), "munmap": (CLEAR, UNMAP), "munmap-then-exit": (CLEAR, UNMAP, TEARDOWN),
    "clear": (CLEAR,), "oom": (UNMAP,), "memslot-delete": (MEMSLOT,), "reset": (RESET,),
    "block-retry": (BLOCK_RETRY,),
}


def shadow_batch(g: Geometry, size: I64, leaves: tuple[int, ...], share_pct: F64, ram_base: I64,
                 calls: Sequence[tuple[str, npt.NDArray[np.bool_], bool]]) -> Batch:
    """One shadow Stage-2 of a nested guest (docs/model.md §15.4): ``size`` bytes mapped from
    ``ram_base`` with the workload's backing mix, one memslot's worth, and one invocation over its
    WHOLE IPA space per canonical call that reaches it (kind, present, blockable): each notifier
    unmap and memslot flush (kvm_nested_s2_unmap), and the exit (kvm_arch_flush_shadow_all)."""
    n_s = size.shape[0]
    base = uniform_batch_arrays(g, vm_bytes=size, mapped=np.ones(n_s), leaves=leaves,
                                share_pct=share_pct, device_fraction=np.zeros(n_s), memslots=1,
                                ram_base=ram_base, event="exit")
    return whole_ipa_batch(base, calls)


def uniform_batch_arrays(
    g: Geometry,
    *,
    vm_bytes: I64,
    mapped: F64,
    leaves: tuple[int, ...],
    share_pct: F64,
    device_fraction: F64,
    memslots: int,
    ram_base: I64,
    event: str,
    range_off: I64 | None = None,
    range_size: I64 | None = None,
    hugetlb: tuple[int, ...] = (),
    shadow_bytes: tuple[I64, ...] = (),
) -> Batch:
    """The vectorised builder behind `uniform_batch` (arrays of shape (S,) and (S, C))."""
    n_s = vm_bytes.shape[0]
    n_c = len(leaves)
    slot_size = vm_bytes // memslots  # (S,)
    slot_lo = ram_base[:, None] + slot_size[:, None] * np.arange(memslots)[None, :]  # (S, N)
    slot_hi = slot_lo + slot_size[:, None]
    mapped_b = np.floor(mapped * slot_size).astype(np.int64)  # per slot (S,)
    dev_b = (np.floor(device_fraction * mapped_b).astype(np.int64) // g.granule) * g.granule
    ram_b = mapped_b - dev_b
    leaf_arr = np.array(leaves, dtype=np.int64)  # (C,)
    cls_b = (np.floor(ram_b[:, None] * share_pct / 100.0).astype(np.int64) // leaf_arr) * leaf_arr
    sizes = np.concatenate([cls_b, dev_b[:, None]], axis=1)  # (S, C+1)
    offs = np.concatenate([np.zeros((n_s, 1), dtype=np.int64), np.cumsum(sizes, axis=1)[:, :-1]], axis=1)
    e_lo = slot_lo[:, :, None] + offs[:, None, :]  # (S, N, C+1)
    e_hi = e_lo + sizes[:, None, :]
    e_leaf = np.broadcast_to(np.append(leaf_arr, g.granule), (n_s, memslots, n_c + 1))
    e_leaf = np.where(e_hi > e_lo, e_leaf, 0)
    e_dev = np.zeros((n_s, memslots, n_c + 1), dtype=bool)
    e_dev[:, :, -1] = True
    shape = (n_s, memslots * (n_c + 1))
    e_lo, e_hi = e_lo.reshape(shape), e_hi.reshape(shape)
    e_leaf = np.ascontiguousarray(e_leaf).reshape(shape)
    e_dev = e_dev.reshape(shape)
    e_lo, e_hi = np.where(e_leaf > 0, e_lo, 0), np.where(e_leaf > 0, e_hi, 0)
    # hugetlbfs-backed shares (never the device pages): a VMA of their own on the host; the
    # memslots are contiguous, one run (core/host.py `host_vmas`)
    e_huge = np.isin(e_leaf, np.array(hugetlb, dtype=np.int64)) & ~e_dev

    n_slots = memslots
    ipa = np.full(n_s, g.ipa_size, dtype=np.int64)
    zero = np.zeros(n_s, dtype=np.int64)
    yes = np.ones(n_s, dtype=bool)
    off = range_off if range_off is not None else zero
    size = range_size if range_size is not None else vm_bytes
    r_lo = ram_base + off
    r_hi = r_lo + size
    pmd = g.leaf_sizes[1]
    span = host_pmd_table_span(g)
    v_lo, v_hi = ram_base, ram_base + vm_bytes  # guest RAM: one anonymous VMA of the host

    def split_block(edge: I64, bottom: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
        """`layout.split_edge` over the batch: the CLEAR's block, and whether it is raised."""
        block = edge - edge % pmd
        t_lo = (edge - edge % span)[:, None]
        table = ((e_leaf > 0) & (e_lo < t_lo + span) & (t_lo < e_hi)).any(axis=1)
        raised = (bottom < edge) & (edge < v_hi) & (edge % pmd != 0)
        return block, raised & (block >= bottom) & (block + pmd <= v_hi) & table

    def munmap_calls() -> list[tuple[str, I64, I64, npt.NDArray[np.bool_], bool]]:
        b_lo, p_lo = split_block(r_lo, v_lo)
        b_hi, p_hi = split_block(r_hi, np.maximum(v_lo, r_lo))  # the VMA split at hi starts at lo
        return [(CLEAR, b_lo, b_lo + pmd, p_lo, True), (CLEAR, b_hi, b_hi + pmd, p_hi, True),
                (UNMAP, r_lo, r_hi, yes, True)]

    # (kind, lo, hi, present, blockable) per invocation, in order
    if event == "exit":
        calls = [(TEARDOWN, zero, ipa, yes, True)]
    elif event == "munmap":
        calls = munmap_calls()
    elif event == "munmap-then-exit":
        calls = [*munmap_calls(), (TEARDOWN, zero, ipa, yes, True)]
    elif event == "clear":
        calls = [(CLEAR, r_lo, r_hi, yes, True)]
    elif event == "oom":
        huge = [c for c, leaf in enumerate(leaves) if leaf in hugetlb or leaf > pmd]
        if not huge:
            calls = [(UNMAP, r_lo, r_hi, yes, False)]  # the OOM reaper: non-blockable, one VMA
        else:
            # __oom_reap_task_mm skips hugetlb VMAs: one non-blockable UNMAP per anonymous VMA,
            # the part of each memslot after its hugetlb shares (the largest leaves, laid first)
            h = cls_b[:, huge].sum(axis=1)
            calls = []
            for m in range(memslots):
                a = np.maximum(r_lo, slot_lo[:, m] + h)
                z = np.minimum(r_hi, np.where(h > 0, slot_hi[:, m], slot_hi[:, -1]))
                present = (z > a) & ((h > 0) | (m == 0))  # no hugetlb share: one VMA, as above
                calls.append((UNMAP, np.where(present, a, 0), np.where(present, z, 0), present, False))
    elif event == "memslot-delete":
        slot = (r_lo - ram_base) // slot_size  # the memslot holding the range's start
        s_lo = ram_base + slot * slot_size
        calls = [(MEMSLOT, s_lo, s_lo + slot_size, yes, True)]
    elif event == "reset":
        calls = [(RESET, zero, ipa, yes, True)]
    elif event == "block-retry":
        b_lo = r_lo - r_lo % pmd  # the PMD block holding the range's start
        calls = [(BLOCK_RETRY, b_lo, b_lo + pmd, yes, True)]
    else:
        raise ValueError(f"event: unknown event {event!r}")

    # the host mm's own operations on guest RAM (core/host.py), after the notifiers
    host_calls: list[tuple[str, I64, I64]] = {
        "exit": [(EXIT_MMAP, zero, zero)],
        "munmap": [(MUNMAP, r_lo, r_hi)],
        "munmap-then-exit": [(MUNMAP, r_lo, r_hi), (EXIT_MMAP, zero, zero)],
        "clear": [(MADV_DONTNEED, r_lo, r_hi)],
        "oom": [(OOM_REAP, r_lo, r_hi)],
    }.get(event, [])

    p_lo_l: list[I64] = []
    p_hi_l: list[I64] = []
    p_inv: list[int] = []
    p_slot: list[int] = []
    for i, (kind, lo, hi, present, _) in enumerate(calls):
        lo, hi = np.where(present, lo, 0), np.where(present, hi, 0)
        if kind not in ITERATES_MEMSLOTS:
            p_lo_l.append(lo)
            p_hi_l.append(hi)
            p_inv.append(i)
            p_slot.append(-1)
            continue
        for m in reversed(range(n_slots)):  # v5.5's memslot array: highest GPA first
            if kind == RESET:
                hit = (lo < slot_hi[:, m]) & (slot_lo[:, m] < hi)
                a, z = np.where(hit, slot_lo[:, m], 0), np.where(hit, slot_hi[:, m], 0)
            else:
                a = np.maximum(lo, slot_lo[:, m])
                z = np.minimum(hi, slot_hi[:, m])
                z = np.where(z > a, z, a)
            p_lo_l.append(a)
            p_hi_l.append(z)
            p_inv.append(i)
            p_slot.append(m)
    return Batch(
        geometry=g,
        ext_lo=e_lo,
        ext_hi=e_hi,
        ext_leaf=e_leaf,
        ext_dev=e_dev,
        n_memslots=np.full(n_s, memslots, dtype=np.int64),
        inv_kind=tuple(c[0] for c in calls),
        inv_blockable=tuple(c[4] for c in calls),
        inv_present=np.stack([c[3] for c in calls], axis=1),
        inv_lo=np.stack([np.broadcast_to(c[1], (n_s,)) for c in calls], axis=1).astype(np.int64),
        inv_hi=np.stack([np.broadcast_to(c[2], (n_s,)) for c in calls], axis=1).astype(np.int64),
        pass_lo=np.stack(p_lo_l, axis=1),
        pass_hi=np.stack(p_hi_l, axis=1),
        pass_inv=tuple(p_inv),
        pass_slot=tuple(p_slot),
        host_kind=tuple(h[0] for h in host_calls),
        host_lo=np.stack([h[1] for h in host_calls], axis=1) if host_calls else np.zeros((n_s, 0), dtype=np.int64),
        host_hi=np.stack([h[2] for h in host_calls], axis=1) if host_calls else np.zeros((n_s, 0), dtype=np.int64),
        ext_huge=e_huge,
        shadows=tuple(
            shadow_batch(g, sz, leaves, share_pct, ram_base,
                         [(c[0], c[3], c[4]) for c in calls if c[0] in SHADOW_KINDS])
            for sz in shadow_bytes),
    )


def host_ops_of(b: Batch, s: int) -> tuple[HostOp, ...]:
    """The host operations of scenario ``s`` (for the walker's literal host simulation)."""
    if b.host_lo is None or b.host_hi is None:
        return ()
    return tuple(HostOp(k, int(b.host_lo[s, i]), int(b.host_hi[s, i])) for i, k in enumerate(b.host_kind))


def layout_of(b: Batch, s: int, slots: Sequence[tuple[int, int]]) -> Layout:
    """The explicit layout of scenario ``s`` (memslots given as (lo, hi))."""
    mems = tuple(Memslot(lo, hi) for lo, hi in slots)
    exts = []
    for e in range(b.ext_lo.shape[1]):
        leaf = int(b.ext_leaf[s, e])
        if leaf == 0:
            continue
        lo, hi = int(b.ext_lo[s, e]), int(b.ext_hi[s, e])
        slot = next(i for i, m in enumerate(mems) if m.lo <= lo < m.hi)
        huge = b.ext_huge is not None and bool(b.ext_huge[s, e])
        exts.append(Extent(lo, hi, leaf, slot, bool(b.ext_dev[s, e]), huge))
    return Layout(b.geometry, mems, tuple(exts))


def event_of(b: Batch, s: int) -> tuple[Invocation, ...]:
    """The explicit invocations of scenario ``s``."""
    out = []
    for i, kind in enumerate(b.inv_kind):
        if not b.inv_present[s, i]:
            continue
        out.append(Invocation(kind, int(b.inv_lo[s, i]), int(b.inv_hi[s, i]), b.inv_blockable[i]))
    return tuple(out)


def memslot_bounds(w: Workload) -> list[tuple[int, int]]:
    z = w.vm_bytes // w.memslots
    return [(w.ram_base + m * z, w.ram_base + (m + 1) * z) for m in range(w.memslots)]
