"""Vectorised arithmetic on sets of half-open integer intervals ``[lo, hi)``.

The last axis of every array holds the intervals of one set; leading axes are batch axes
(scenarios, steps, chunks).  An interval with ``lo >= hi`` is empty and ignored.  Everything is
int64 numpy arithmetic; nothing loops in Python over intervals.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

_EMPTY = np.int64(-1)
#: Unions of at most this many intervals per set are summed column by column.
_COLUMN_LOOP = 16


def _shift_of(unit: int | I64) -> int | None:
    """log2 of ``unit`` if it is an int power of two, else None (array units pass their shift).

    Every unit of the model (granule, leaf sizes, table spans, chunks) is a power of two, and a
    shift is several times faster than numpy's int64 floor division."""
    if isinstance(unit, int | np.integer):
        u = int(unit)
        return u.bit_length() - 1 if u > 0 and u & (u - 1) == 0 else None
    return None


def floor_div(x: I64 | np.int64 | int, unit: int | I64, shift: int | I64 | None = None) -> I64:
    """``floor(x / unit)``; ``shift`` = log2(unit) when the caller knows it (array units)."""
    k = _shift_of(unit) if shift is None else shift
    if k is not None:
        return np.right_shift(x, k)  # an arithmetic shift floors negatives too
    return np.floor_divide(x, unit)


def ceil_div(x: I64 | np.int64 | int, unit: int | I64, shift: int | I64 | None = None) -> I64:
    """``ceil(x / unit)`` (values far below 2**62)."""
    k = _shift_of(unit) if shift is None else shift
    if k is not None:
        return np.right_shift(np.add(x, np.subtract(unit, 1)), k)
    return -np.floor_divide(np.negative(x), unit)


def normalise_empty(lo: I64, hi: I64) -> tuple[I64, I64]:
    """Replace empty intervals by the sentinel ``[-1, -1)`` (real bounds are >= 0)."""
    empty = hi <= lo
    return np.where(empty, _EMPTY, lo), np.where(empty, _EMPTY, hi)


def to_units(lo: I64, hi: I64, unit: int | I64, shift: int | I64 | None = None) -> tuple[I64, I64]:
    """The indices of the ``unit``-sized aligned slots an interval touches (outward rounding)."""
    nlo, nhi = floor_div(lo, unit, shift), ceil_div(hi, unit, shift)
    return normalise_empty(nlo, np.where(hi > lo, nhi, nlo))


def concat_last(*parts: I64) -> I64:
    """Concatenate along the last axis, broadcasting the leading (batch) axes."""
    shape = np.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return np.concatenate([np.broadcast_to(p, shape + p.shape[-1:]) for p in parts], axis=-1)


def compact(lo: I64, hi: I64, width: int = 4) -> tuple[I64, I64]:
    """The same sets of intervals with empty ones dropped where possible: once the last axis is
    wider than ``width``, the non-empty intervals of each set are moved first (in order) and
    the columns that are empty in every set are cut.  A long sequence of passes that each touch
    a few extents (an unmap across hundreds of memslots) then keeps a narrow coverage array."""
    if lo.shape[-1] <= width:
        return lo, hi
    empty = hi <= lo
    keep = int((~empty).sum(axis=-1).max(initial=0))
    if keep == lo.shape[-1]:
        return lo, hi
    order = np.argsort(empty, axis=-1, kind="stable")[..., :keep]
    return np.take_along_axis(lo, order, axis=-1), np.take_along_axis(hi, order, axis=-1)


def union_length(lo: I64, hi: I64, *, presorted: bool = False, normalised: bool = False) -> I64:
    """Total length of the union of the intervals along the last axis.

    ``presorted``: the non-empty intervals are already in order of ``lo`` (empty ones may sit
    anywhere), which saves the sort.  ``normalised``: every empty interval is already the
    sentinel ``[-1, -1)`` (as `to_units` returns them).
    """
    if lo.shape[-1] == 0:
        return np.zeros(lo.shape[:-1], dtype=np.int64)
    if lo.shape[-1] == 1:
        return np.maximum(hi - lo, 0)[..., 0]  # type: ignore[no-any-return]
    if not normalised:
        lo, hi = normalise_empty(lo, hi)
    if presorted:
        lo_s, hi_s = lo, hi
    else:
        order = np.argsort(lo, axis=-1, kind="stable")
        lo_s = np.take_along_axis(lo, order, axis=-1)
        hi_s = np.take_along_axis(hi, order, axis=-1)
    # each interval adds what lies beyond the furthest end of those before it
    if lo_s.shape[-1] <= _COLUMN_LOOP:
        # a few intervals per set (the usual case): column by column, each a whole-array
        # operation — numpy's reductions along a short last axis are several times slower
        run = hi_s[..., 0]
        total = np.maximum(run - lo_s[..., 0], 0)
        for j in range(1, lo_s.shape[-1]):
            h = hi_s[..., j]
            total += np.maximum(h - np.maximum(lo_s[..., j], run), 0)
            run = np.maximum(run, h)
        return total  # type: ignore[no-any-return]
    run = np.maximum.accumulate(hi_s, axis=-1)
    start = lo_s.copy()
    np.maximum(start[..., 1:], run[..., :-1], out=start[..., 1:])
    return np.maximum(hi_s - start, 0).sum(axis=-1)  # type: ignore[no-any-return]


def complement_within(a: I64, b: I64, lo: I64, hi: I64) -> tuple[I64, I64]:
    """``[a, b)`` minus the union of the intervals (each assumed inside ``[a, b)``).

    ``a`` and ``b`` have the batch shape; ``lo``/``hi`` have one more axis of ``q`` intervals.
    Returns ``q + 1`` pieces per batch element, some possibly empty.
    """
    if lo.shape[-1] == 0:  # nothing removed: the whole of [a, b)
        return normalise_empty(a[..., None], b[..., None])
    lo, hi = normalise_empty(lo, hi)
    if lo.shape[-1] == 1:
        lo_s, hi_s = lo, hi
    else:
        order = np.argsort(lo, axis=-1, kind="stable")
        lo_s = np.take_along_axis(lo, order, axis=-1)
        hi_s = np.take_along_axis(hi, order, axis=-1)
    start = np.broadcast_to(a[..., None], lo_s.shape[:-1] + (1,))
    end = np.broadcast_to(b[..., None], lo_s.shape[:-1] + (1,))
    run = np.maximum(np.maximum.accumulate(hi_s, axis=-1), start)
    prev = np.concatenate([start, run[..., :-1]], axis=-1)
    piece_lo = np.concatenate([prev, run[..., -1:]], axis=-1)
    piece_hi = np.concatenate([lo_s, end], axis=-1)
    return normalise_empty(piece_lo, piece_hi)
