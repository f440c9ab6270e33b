"""Chunked passes: the same counts per walk chunk, for resched points and lock-hold stretches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from s2teardown.core.counts.batch import N_EVENTS, Batch
from s2teardown.core.counts.coefficients import SEGMENT_QUANTITIES, quantity_matrix
from s2teardown.core.counts.quantities import (
    Extents,
    ExtentWindows,
    PassQuantities,
    pass_quantities,
    range_flush,
)
from s2teardown.core.geometry import Geometry
from s2teardown.core.intervals import (
    I64,
    ceil_div,
    concat_last,
    floor_div,
)
from s2teardown.core.vocabulary import EVENT_INDEX

# ----------------------------------------------------------------------------------------------
# Chunked passes


def chunk_runs(b: Batch, j: int, chunk: int) -> tuple[I64, I64, I64, I64]:
    """The chunk-walks of pass ``j``, compressed: (S, K) bounds of representative chunks, how
    many consecutive identical chunks each stands for (``mult``), and how many times the region
    holding it repeats (``times``).

    Between two breakpoints — extent edges, the edges of this and earlier passes, and the edges
    of tables larger than a chunk — every chunk but the first and the last has the same leaves,
    the same tables and the same table states, so one of them is evaluated for all.  The edges
    of the smallest such table (``t_min``) split a stretch between two other breakpoints into
    a head, identical whole ``t_min`` regions and a tail: the first whole region stands for all
    of them (``times``), so the work does not grow with the size of the guest.  Chunks are listed
    in address order; ``mult`` is 0 for padding.  A chunk stands for ``mult · times`` chunks.
    """
    g = b.geometry
    big = sorted(g.span(k - 1) for k in range(1, g.levels) if g.span(k - 1) > chunk)
    t_min = big[0] if big else None
    reps: list[list[tuple[int, int, int]]] = []  # per scenario: (chunk index, mult, times)
    for s in range(b.size):
        lo, hi = int(b.pass_lo[s, j]), int(b.pass_hi[s, j])
        if hi <= lo:
            reps.append([])
            continue
        # the extents' edges and the earlier passes' inside the pass (picked out by numpy: there
        # are thousands of them over 512 memslots, a handful inside one pass)
        valid = b.ext_leaf[s] > 0
        cand = np.concatenate([b.ext_lo[s][valid], b.ext_hi[s][valid], b.pass_lo[s, :j],
                               b.pass_hi[s, :j]])
        pts = {lo, hi, *cand[(cand >= lo) & (cand <= hi)].tolist()}
        for t in big[1:]:  # edges of the larger tables: few (at most IPA / t each)
            pts.update(range(-(-lo // t) * t, hi, t))
        edges = sorted(p for p in pts if lo <= p <= hi)
        pieces: list[tuple[int, int, int]] = []  # (start, end, times)
        for p, q in zip(edges, edges[1:], strict=False):
            if q <= p:
                continue
            if t_min is None:
                pieces.append((p, q, 1))
                continue
            first, last = (p // t_min + 1) * t_min, ((q - 1) // t_min) * t_min
            if first > last:  # no t_min edge inside
                pieces.append((p, q, 1))
                continue
            pieces.append((p, first, 1))
            if last > first:
                pieces.append((first, first + t_min, (last - first) // t_min))
            pieces.append((last, q, 1))
        chosen: dict[int, tuple[int, int]] = {}
        for p, q, n_regions in pieces:
            cf, cl = p // chunk, (q - 1) // chunk
            chosen[cf] = (1, n_regions)
            chosen[cl] = (1, n_regions)
            if cl - cf >= 2 and cf + 1 not in chosen:
                chosen[cf + 1] = (cl - cf - 1, n_regions)
        reps.append([(c, m, t) for c, (m, t) in sorted(chosen.items())])
    width = max(1, max((len(r) for r in reps), default=1))
    table = np.array([r + [(0, 0, 0)] * (width - len(r)) for r in reps], dtype=np.int64)
    table = table.reshape(b.size, width, 3)
    idx, mult, times = table[..., 0], table[..., 1], table[..., 2]
    p_lo = b.pass_lo[:, j : j + 1]
    p_hi = b.pass_hi[:, j : j + 1]
    c_lo = np.where(mult > 0, np.maximum(idx * chunk, p_lo), 0)
    c_hi = np.where(mult > 0, np.minimum((idx + 1) * chunk, p_hi), 0)
    return c_lo, c_hi, mult, times


def chunk_quantities(
    g: Geometry, ext: Extents, prev_lo: I64, prev_hi: I64, lo: I64, c_lo: I64, c_hi: I64
) -> PassQuantities:
    """Quantities of chunk-walks ``[c_lo, c_hi)`` (S, K) of the passes starting at ``lo`` (S,).

    Chunk ``c`` starts from the coverage before the pass plus ``[lo, start of c)``: a table the
    chunk empties is freed there, and a table an earlier chunk freed is not walked again.
    ``ext`` has one middle axis (the chunks); ``prev`` has shape (S, 1, E, q).
    """
    done_lo, done_hi = ext.clip(np.broadcast_to(lo[:, None], c_lo.shape), np.maximum(c_lo, lo[:, None]))
    p_lo = concat_last(prev_lo, done_lo[..., None])
    p_hi = concat_last(prev_hi, done_hi[..., None])
    q, _, _ = pass_quantities(g, ext, p_lo, p_hi, c_lo, c_hi)
    return q


def chunk_run_quantities(
    g: Geometry,
    ext: Extents,
    prev_lo: I64,
    prev_hi: I64,
    lo: I64,
    hi: I64,
    runs: Sequence[tuple[I64, I64]],
    windows: ExtentWindows | None = None,
) -> tuple[I64, list[I64]]:
    """The whole passes ``[lo, hi)`` (S,) and their chunk-walks ``runs`` (each (S, K_i) bounds)
    in one evaluation: the whole pass is one more chunk, with nothing of the pass done before
    it.  Returns the quantity matrices in `SEGMENT_QUANTITIES` order, (S, 8) and one (S, K_i, 8)
    per run.

    With ``windows``, the chunks are evaluated in groups (consecutive chunks in the same
    largest tables), each over the extents its tables hold only: chunks × extents would grow
    with the square of the memslots."""
    c_lo = np.concatenate([lo[:, None], *(r[0] for r in runs)], axis=1)
    c_hi = np.concatenate([hi[:, None], *(r[1] for r in runs)], axis=1)
    if windows is None:
        qm = quantity_matrix(chunk_quantities(g, ext, prev_lo[:, None], prev_hi[:, None], lo, c_lo,
                                              c_hi), SEGMENT_QUANTITIES)
    else:
        e0, e1 = windows.of(lo, hi)
        if c_lo.shape[1] * (e1 - e0) <= _CELLS:  # a pass of a few memslots: in one go
            groups = [np.arange(c_lo.shape[1])]
        else:  # a pass over many (a teardown): chunk by chunk group, each over its own extents
            groups = _groups(c_lo, c_hi, windows.t0)
        qm = np.empty((c_lo.shape[0], c_lo.shape[1], len(SEGMENT_QUANTITIES)), dtype=np.int64)
        for cols in groups:
            g_lo, g_hi = c_lo[:, cols], c_hi[:, cols]
            e0, e1 = windows.of(g_lo, g_hi)
            q = chunk_quantities(g, ext.window(e0, e1), prev_lo[:, None, e0:e1],
                                 prev_hi[:, None, e0:e1], lo, g_lo, g_hi)
            qm[:, cols, :] = quantity_matrix(q, SEGMENT_QUANTITIES)
    ends = np.cumsum([1, *(r[0].shape[1] for r in runs)])
    return qm[:, 0, :], [qm[:, a:z, :] for a, z in zip(ends[:-1], ends[1:], strict=True)]


#: Chunks × extents evaluated at once at most, when a pass has many of both.
_CELLS = 1 << 16


def _groups(c_lo: I64, c_hi: I64, t0: int) -> list[npt.NDArray[np.intp]]:
    """The chunks (columns) grouped by the ``t0``-aligned regions they lie in, in every scenario
    (an empty chunk is a group of its own kind)."""
    live = c_hi > c_lo
    first = np.where(live, floor_div(c_lo, t0), -1)
    last = np.where(live, ceil_div(c_hi, t0), -1)
    key = np.concatenate([first, last], axis=0).T  # (K, 2S)
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [np.flatnonzero(inverse == k) for k in range(int(inverse.max(initial=-1)) + 1)]


def range_events(g: Geometry, c_lo: I64, c_hi: I64) -> I64:
    """One range flush per chunk-walk (even an empty-handed one), with its TLBI range ops."""
    ev = np.zeros(c_lo.shape + (N_EVENTS,), dtype=np.int64)
    calls, ops = range_flush(np.where(c_hi > c_lo, (c_hi - c_lo) // g.granule, 0))
    ev[..., EVENT_INDEX["range_flush_call"]] = calls
    ev[..., EVENT_INDEX["range_tlbi_op"]] = ops
    return ev


