"""Sizes and times: parsing command-line sizes (binary prefixes) and formatting for humans.

Sizes on the command line use binary prefixes: ``K`` = KiB = 2**10, ``M`` = MiB, ``G`` = GiB,
``T`` = TiB, ``P`` = PiB; ``64G``, ``64GiB``, ``64gb`` and ``68719476736`` all mean 64 GiB.
A fraction is allowed if it gives whole bytes (``1.5G``).  YAML files never carry size strings:
their keys name the unit and their values are plain numbers.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_PREFIX = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)
_NAMES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def parse_size(text: str) -> int:
    """Bytes from ``64G``-style text; ValueError with what was expected otherwise."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"expected a size such as 64G, 512M or 4K (binary prefixes), got {text!r}")
    value = Fraction(m.group(1)) * (1 << (10 * _PREFIX[m.group(2).upper()]))
    if value.denominator != 1:
        raise ValueError(f"expected a whole number of bytes, got {text!r}")
    return int(value)


#: A backing mix: (leaf bytes, percent) pairs summing to 100, as ``--backing`` reads it.
Backing = tuple[tuple[int, float], ...]

#: The translation granules by the name the CLI and files use (Stage-2 and host page size).
GRANULE_BYTES: dict[str, int] = {"4K": 4096, "16K": 16384, "64K": 65536}


def format_size(n: int) -> str:
    """``68719476736`` -> ``64 GiB``; non-round sizes keep up to 3 significant decimals."""
    if n == 0:
        return "0 B"
    k = min(len(_NAMES) - 1, (abs(n).bit_length() - 1) // 10)
    value = n / (1 << (10 * k))
    if value == int(value):
        return f"{int(value)} {_NAMES[k]}"
    return f"{value:.3g} {_NAMES[k]}"


def format_int(n: int) -> str:
    return f"{n:,}"


def format_ns(ns: float) -> str:
    """A duration in the unit that reads best: ``9.13 s``, ``1.30 ms``, ``612 ns``."""
    if not math.isfinite(ns):
        return str(ns)
    a = abs(ns)
    if a >= 1e9:
        return f"{ns / 1e9:.3g} s" if a < 1e11 else f"{ns / 1e9:,.0f} s"
    if a >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if a >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    if a == 0:
        return "0"
    return f"{ns:.3g} ns"


def parse_backing(text: str) -> tuple[tuple[int, float], ...]:
    """``2M`` or ``2M:90,4K:10`` (percent) -> ((leaf bytes, percent), ...): leaf sizes only (a
    ``hugetlb-`` part is refused here: `parse_backing_kinds` reads it)."""
    backing, hugetlb = parse_backing_kinds(text)
    if hugetlb:
        raise ValueError(f"expected leaf sizes such as 2M or 4K:10 (hugetlb backing is read by "
                         f"estimate, compare, explain and sweep only), got {text!r}")
    return backing


#: The ``--backing`` prefix of a hugetlbfs-backed part (``hugetlb-2M``, ``hugetlb-1G``).
HUGETLB_PREFIX = "hugetlb-"


def parse_backing_kinds(text: str) -> tuple[tuple[tuple[int, float], ...], tuple[int, ...]]:
    """``4K:50,hugetlb-2M:50`` -> (((4096, 50), (2 MiB, 50)), (2 MiB,)): the mix, and the leaf
    sizes of it backed by hugetlbfs pages rather than order-0 pages or THPs (docs/model.md
    §14.2).  One backing per leaf size: a 2 MiB share is THP or hugetlb, not both."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"expected a leaf size such as 2M, or a mix such as 2M:90,4K:10, got {text!r}")
    out: list[tuple[int, float]] = []
    hugetlb: list[int] = []
    for p in parts:
        if ":" in p:
            size_s, pct_s = p.split(":", 1)
            try:
                pct = float(pct_s)
            except ValueError:
                raise ValueError(f"expected a percentage after ':' in {p!r}") from None
            if not math.isfinite(pct) or pct <= 0:
                raise ValueError(f"expected a positive percentage in {p!r}")
        else:
            size_s, pct = p, 100.0 if len(parts) == 1 else float("nan")
            if math.isnan(pct):
                raise ValueError(f"expected SIZE:PERCENT for every part of a mix, got {p!r}")
        huge = size_s.strip().lower().startswith(HUGETLB_PREFIX)
        if huge:
            size_s = size_s.strip()[len(HUGETLB_PREFIX):]
        size = parse_size(size_s)
        if any(size == s for s, _ in out):
            raise ValueError(f"leaf size {size_s.strip()} given twice in {text!r}")
        if huge:
            hugetlb.append(size)
        out.append((size, pct))
    total = sum(p for _, p in out)
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"expected percentages summing to 100, got {total:g} in {text!r}")
    return tuple(out), tuple(hugetlb)


def parse_shadow_mmus(text: str, vm_bytes: int) -> tuple[int, ...]:
    """``--shadow-mmus``: the mapped bytes of each shadow Stage-2 MMU of a nested guest.

    ``N`` (N shadows, each mapping all of guest RAM), ``N:SIZE`` (N shadows of SIZE each), or
    ``SIZE,SIZE,...`` (one shadow per size); N from 0 to 64, sizes as in parse_size.
    """
    raw = text.strip()
    try:
        if ":" in raw:
            n_s, size_s = raw.split(":", 1)
            n, sizes = int(n_s), [parse_size(size_s)] * max(int(n_s), 0)
        elif raw.isdigit():
            n, sizes = int(raw), [vm_bytes] * int(raw)
        else:
            sizes = [parse_size(x) for x in raw.split(",")]
            n = len(sizes)
    except ValueError:
        raise ValueError(f"expected N, N:SIZE or SIZE,SIZE,... such as 2, 2:512M or 1G,256M, got {text!r}") from None
    if not 0 <= n <= 64:
        raise ValueError(f"expected 0 to 64 shadow MMUs, got {n}")
    return tuple(sizes)


def parse_range(text: str) -> tuple[int, int]:
    """``OFFSET:SIZE`` (sizes as in parse_size) -> (offset, size)."""
    if text.count(":") != 1:
        raise ValueError(f"expected OFFSET:SIZE such as 0:1G or 3M:10G, got {text!r}")
    off_s, size_s = text.split(":")
    return parse_size(off_s), parse_size(size_s)


def short_size(n: int) -> str:
    """``2097152`` -> ``2M``: the largest binary prefix that divides exactly (as the CLI reads)."""
    for k, unit in ((5, "P"), (4, "T"), (3, "G"), (2, "M"), (1, "K")):
        if n and n % (1 << (10 * k)) == 0:
            return f"{n >> (10 * k)}{unit}"
    return str(n)


def backing_label(b: Backing, hugetlb: tuple[int, ...] = ()) -> str:
    """``((2M, 100),)`` -> ``2M``; a mix -> ``2M:90,4K:10`` (the --backing syntax); a
    hugetlbfs-backed leaf size reads ``hugetlb-2M``."""
    def name(leaf: int) -> str:
        return (HUGETLB_PREFIX if leaf in hugetlb else "") + short_size(leaf)
    if len(b) == 1:
        return name(b[0][0])
    return ",".join(f"{name(leaf)}:{pct:g}" for leaf, pct in b)
