"""Views of cost tables and their comparison (check, diff): text, markdown, the JSON report, and
the table file's text (docs/ci.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from s2teardown.features.tables import (
    Entry,
    InputChange,
    TableDiff,
    format_delta_ns,
    format_percent,
    key_json,
    percent_change,
)
from s2teardown.inputs.units import format_ns
from s2teardown.render.envelope import envelope

#: Lone surrogates (a non-UTF-8 file name from the command line), escaped on output.
_SURROGATE = re.compile("[\ud800-\udfff]")


def table_json(doc: Mapping[str, Any]) -> str:
    """The document as JSON text: indented, numbers as numbers, no NaN.

    Text stays readable (no ``\\u`` escapes), except lone surrogates — a file name that is not
    UTF-8 arrives from the command line as such — which are escaped, so the text is valid
    UTF-8 and reads back to the same name.
    """
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def tolerance_text(c: TableDiff) -> str:
    return (
        f"a cost is flagged past both {format_ns(c.atol) if c.atol else '0 ns'} (--atol) and "
        f"{c.rtol * 100:g}% (--rtol) of its old value; counts must match exactly"
    )


def _version_lines(c: TableDiff) -> list[str]:
    lines = []
    if c.old_model == c.new_model:
        lines.append(f"model version {c.new_model}, unchanged")
    else:
        lines.append(f"model version changed: {c.old_model} → {c.new_model}")
    if c.old_tool != c.new_tool:
        lines.append(f"tool version {c.old_tool} → {c.new_tool}")
    if c.old_numpy != c.new_numpy:
        lines.append(f"numpy {c.old_numpy} → {c.new_numpy}")
    return lines


def _input_line(ch: InputChange) -> str:
    if ch.status == "changed":
        return (
            f"input changed: {ch.label} ({ch.new_path}): sha256 {(ch.old_sha256 or '')[:12]} → "
            f"{(ch.new_sha256 or '')[:12]}"
        )
    if ch.status == "added":
        return f"input added: {ch.label} ({ch.new_path})"
    if ch.status == "removed":
        return f"input removed: {ch.label} ({ch.old_path})"
    return f"input unchanged: {ch.label}"


def summary_lines(c: TableDiff, *, diffs: bool = False) -> list[str]:
    """What changed, before any number: versions, inputs (with their diffs), rows."""
    lines = _version_lines(c)
    changed = [ch for ch in c.inputs if ch.status != "unchanged"]
    for ch in changed:
        lines.append(_input_line(ch))
        if diffs:
            lines += [f"  {ln}" for ln in ch.diff]
    same = [ch.label for ch in c.inputs if ch.status == "unchanged"]
    if same:
        lines.append("inputs unchanged: " + ", ".join(same))
    if not changed and c.old_model == c.new_model and c.old_tool != c.new_tool:
        lines.append(
            "inputs and model version as in the table: differences come from the code "
            f"(s2teardown {c.old_tool} → {c.new_tool})"
        )
    lines.append(
        f"rows: {c.rows_common} in common, {len(c.rows_added)} added, {len(c.rows_removed)} removed"
    )
    lines += [f"  added: {r}" for r in c.rows_added]
    lines += [f"  removed: {r}" for r in c.rows_removed]
    lines += [f"note: {n}" for n in c.notes]
    return lines


def entry_cells(e: Entry) -> list[str]:
    """row, variant, status, old, new, change, percent, why."""
    return [
        e.row,
        e.variant,
        e.status,
        "—" if e.old_ns is None else format_ns(e.old_ns),
        "—" if e.new_ns is None else format_ns(e.new_ns),
        "—" if e.delta_ns is None else format_delta_ns(e.delta_ns),
        "—" if e.delta_ns is None else format_percent(e.percent),
        "; ".join(e.reasons),
    ]


ENTRY_HEADERS: Final = ("row", "variant", "status", "Stage-2 old", "new", "change", "%", "why")


def total_lines(c: TableDiff, per_variant: bool) -> list[str]:
    per, (o, n) = c.totals()
    lines = []
    if per_variant:
        for v, a, b in per:
            lines.append(
                f"total {v}: {format_ns(a)} → {format_ns(b)} ({format_delta_ns(b - a)}, "
                f"{format_percent(percent_change(a, b))})"
            )
    lines.append(
        f"total Stage-2 over {len(c.compared)} compared row×variant entries: {format_ns(o)} → "
        f"{format_ns(n)} ({format_delta_ns(n - o)}, {format_percent(percent_change(o, n))})"
    )
    return lines


def verdict_lines(c: TableDiff) -> list[str]:
    reg = c.regressions
    if not reg:
        better = sum(1 for e in c.entries if e.status == "better")
        tail = f"; {better} better" if better else ""
        return [
            f"result: OK — no change beyond tolerance{tail} ({len(c.compared)} entries compared)"
        ]
    rows: dict[str, list[str]] = {}
    for e in reg:
        rows.setdefault(e.row, []).append(e.variant)
    lines = [
        f"result: REGRESSION — {len(reg)} of {len(c.compared)} entries worse, in {len(rows)} rows:"
    ]
    lines += [f"  {r} ({', '.join(vs)})" for r, vs in rows.items()]
    return lines


def render_text(c: TableDiff, *, show_unchanged: bool) -> str:
    """Plain text: the classification, one line per shown entry, totals and the verdict."""
    out = [f"{c.old_name} → {c.new_name}", *summary_lines(c, diffs=True)]
    out.append(tolerance_text(c))
    shown = [e for e in c.entries if show_unchanged or e.status != "unchanged"]
    if shown:
        cells = [list(ENTRY_HEADERS), *(entry_cells(e) for e in shown)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(ENTRY_HEADERS) - 1)]
        for r in cells:
            out.append(
                "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=False)) + "  " + r[-1]
            )
    out += total_lines(c, per_variant=show_unchanged)
    out += verdict_lines(c)
    return "\n".join(out) + "\n"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#"} | {"<": "&lt;", ">": "&gt;", "\n": " "})


def _md(text: str) -> str:
    """Text as markdown renders it literally: emphasis, code, links, tables and HTML-like
    ``<bundled>`` escaped; one line."""
    return text.translate(_MD_SPECIAL)


def render_markdown(c: TableDiff, *, title: str, show_unchanged: bool, limit: int = 100) -> str:
    """A pull-request comment: verdict first, what changed, the input diffs folded, the rows."""
    reg = c.regressions
    better = sum(1 for e in c.entries if e.status == "better")
    verdict = (
        "regression"
        if reg
        else f"OK, {better} entries better"
        if better
        else "no change beyond tolerance"
    )
    out = [
        f"### {title}: {verdict}",
        "",
        f"`{c.old_name}` → `{c.new_name}` · {_md(tolerance_text(c))}",
        "",
        "**What changed**",
        "",
    ]
    out += [f"- {_md(s)}" for s in summary_lines(c)]
    for ch in c.inputs:
        if ch.diff:
            fence = "````" if any("```" in ln for ln in ch.diff) else "```"
            out += [
                "",
                f"<details><summary>diff of {_md(ch.label)}</summary>",
                "",
                f"{fence}diff",
                *ch.diff,
                fence,
                "",
                "</details>",
            ]
    shown = [e for e in c.entries if show_unchanged or e.status != "unchanged"]
    out.append("")
    if shown:
        out += ["| " + " | ".join(ENTRY_HEADERS) + " |", "|---|---|---|---:|---:|---:|---:|---|"]
        for e in shown[:limit]:
            cells = [_md(x) for x in entry_cells(e)]
            if e.status == "worse":
                cells[2] = "**worse**"
            out.append("| " + " | ".join(cells) + " |")
        if len(shown) > limit:
            out.append(
                f"\n… and {len(shown) - limit} more entries (`--format json` lists them all)."
            )
        out.append("")
    out += [f"{_md(s)}  " for s in total_lines(c, per_variant=True)]
    out.append("")
    if reg:
        rows: dict[str, list[str]] = {}
        for e in reg:
            rows.setdefault(e.row, []).append(e.variant)
        out.append(
            f"**Regression:** {len(reg)} of {len(c.compared)} entries worse, in {len(rows)} rows:"
        )
        out += [f"- {_md(r)} ({', '.join(vs)})" for r, vs in rows.items()]
    else:
        tail = f"; {better} entries better" if better else ""
        out.append(f"**OK:** no regression{tail} ({len(c.compared)} entries compared).")
    return "\n".join(out) + "\n"


def comparison_document(c: TableDiff, *, command: str, exit_code: int) -> dict[str, Any]:
    per, (o, n) = c.totals()

    def tot(old: float, new: float) -> dict[str, Any]:
        return {"old_ns": old, "new_ns": new, "delta_ns": new - old, "percent": percent_change(old, new)}

    return envelope(
        command,
        warnings=(),
        **{
        "old": c.old_name,
        "new": c.new_name,
        "result": "regression" if c.regression else "ok",
        "exit_code": exit_code,
        "tolerance": {"rtol": c.rtol, "atol_ns": c.atol},
        "tables": {
            "model_version": {"old": c.old_model, "new": c.new_model},
            "tool_version": {"old": c.old_tool, "new": c.new_tool},
            "numpy_version": {"old": c.old_numpy, "new": c.new_numpy},
        },
        "inputs": [
            {
                "kind": ch.kind,
                "ref": ch.ref,
                "status": ch.status,
                "old_path": ch.old_path,
                "new_path": ch.new_path,
                "old_sha256": ch.old_sha256,
                "new_sha256": ch.new_sha256,
                "diff": "\n".join(ch.diff),
            }
            for ch in c.inputs
        ],
        "notes": list(c.notes),
        "rows": {
            "common": c.rows_common,
            "added": list(c.rows_added),
            "removed": list(c.rows_removed),
            "status": c.row_status(),
        },
        "entries": [
            {
                "row": e.row,
                "key": key_json(e.key),
                "variant": e.variant,
                "status": e.status,
                "old_ns": e.old_ns,
                "new_ns": e.new_ns,
                "delta_ns": e.delta_ns,
                "percent": e.percent,
                "reasons": list(e.reasons),
            }
            for e in c.entries
        ],
        "totals": {"variants": [{"variant": v, **tot(a, b)} for v, a, b in per], "all": tot(o, n)},
        "regressions": [
            {"row": e.row, "variant": e.variant, "reasons": list(e.reasons)} for e in c.regressions
        ],
        },
    )


def summary_of_table(doc: Mapping[str, Any]) -> str:
    rows = doc["rows"]
    nv = len(doc["variants"])
    warn = sum(1 for r in rows for v in r["variants"] if v["lock_hold"] is not None)
    return f"{len(rows)} rows × {nv} variants, model_version {doc['model_version']}" + (
        f", {warn} lock-hold warnings" if warn else ""
    )


def lock_hold_lines(doc: Mapping[str, Any]) -> list[str]:
    """Every detector each row's variants trip, one line each, as the estimate warns of it
    (``row label: variant: detector (threshold) at T into the stretch …: kernel message``)."""
    out = []
    for r in doc["rows"]:
        for v in r["variants"]:
            holds = v.get("lock_holds")
            lines = [h["warning"] for h in holds] if holds is not None else list(v["warnings"])
            out += [f"{r['label']}: {line}" for line in lines]
    return out
