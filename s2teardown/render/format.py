"""Small number formats shared by the views (speedups, signed deltas)."""

from __future__ import annotations

from s2teardown.inputs.units import format_ns


def format_speedup(x: float) -> str:
    if x != x or x == float("inf"):
        return "—"
    return f"{x:,.0f}×" if x >= 100 else f"{x:.2g}×" if x < 1 else f"{x:.1f}×"


def format_delta(ns: float) -> str:
    return ("+" if ns > 0 else "−" if ns < 0 else "") + format_ns(abs(ns))
