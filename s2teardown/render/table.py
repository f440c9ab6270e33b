"""Human views of an Estimate (rich): the per-phase table and the formulas.

Rounding happens here only.  A time that rests on an assumed parameter carries ``*``; a phase
the variant elides shows ``0`` with the reason.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.text import Text

from s2teardown.core.model import shown_phases
from s2teardown.core.vocabulary import OP_INDEX, PHASE_INDEX, PHASES
from s2teardown.features.estimate import Estimate
from s2teardown.inputs.units import format_int, format_ns, format_size
from s2teardown.render.format import format_speedup

_LABEL = {"host_zap": "host zap†", "host_free": "host free†", "wait": "wait‡"}


def estimate_table(e: Estimate, width: int = 200) -> Group:
    """The per-phase table.  Variants identical in every row are shown once (a footnote names
    them); a table wider than ``width`` is wrapped into blocks of variants, never cut."""
    b = e.breakdown
    names = [v.name for v in e.variants]
    title = Text.assemble(
        ("s2teardown estimate", "bold"), "  ", (e.machine.name, "bold cyan"), " — ",
        e.machine.description,
    )
    head = Text(e.header)
    path = Text(f"path: {e.extra.get('path', '')}", style="dim")
    mapped = ", ".join(f"{format_size(v)} in {format_size(k)} leaves" for k, v in sorted(e.mapped_by_leaf.items(), reverse=True))
    if e.device_bytes:
        mapped += f", {format_size(e.device_bytes)} device pages"
    pl = e.placement
    mapped_t = Text(
        f"mapped: {mapped or 'nothing'};  placement: local node {pl.local_node:.0%}, "
        f"same socket {pl.same_socket:.0%}, remote socket {pl.remote_socket:.0%}",
        style="dim",
    )
    rows: list[list[str | Text]] = []
    notes_used: dict[str, str] = {}
    for phase in shown_phases(b.time_ns):
        p = PHASE_INDEX[phase]
        row = []
        for v in range(len(names)):
            note = b.notes.get((v, phase))
            if note:
                key = note.replace("elided by ", "")
                notes_used[key] = note
                row.append(Text(f"0 ({key})", style="green"))
                continue
            val = float(b.time_ns[0, v, p])
            star = "*" if b.assumed[0, v, p] and val else ""
            row.append(Text(format_ns(val) + star, style="dim" if val == 0 else ""))
        rows.append([_LABEL.get(phase, phase), *row])
    rows.append([Text("Stage-2 total", style="bold"),
                 *[Text(format_ns(float(x)), style="bold") for x in b.stage2_ns[0]]])
    rows.append(["host side†", *[format_ns(float(x)) for x in b.host_ns[0]]])
    rows.append([Text("end to end", style="bold"),
                 *[Text(format_ns(float(x)), style="bold") for x in b.end_to_end_ns[0]]])
    rows.append(["wall‡", *[format_ns(float(x)) for x in b.wall_ns[0]]])
    base = names[b.baseline]
    rows.append(["speedup Stage-2§", *[format_speedup(float(x)) for x in b.speedup[0]]])
    rows.append(["speedup e2e§",
                 *[format_speedup(float(x)) for x in b.end_to_end_speedup[0]]])
    rows.append(["dominant", *[PHASES[int(d)] for d in b.dominant_phase[0]]])
    if b.stretch_ns is not None:
        rows.append(["longest stretch", *[format_ns(float(x)) for x in b.stretch_ns[0]]])
    kept, same_as = group_identical(names, rows)
    blocks = wrap_columns(["phase", *[names[i] for i in kept]],
                          [[r[0], *[r[1 + i] for i in kept]] for r in rows], width)
    tables: list[Text] = []
    for i, block in enumerate(blocks):
        if i:
            tables.append(Text(""))
        tables.append(block)
    foot: list[Text] = []
    if len(blocks) > 1:
        foot.append(Text(f"the table is wrapped to {width} columns: its variants in {len(blocks)} "
                         "blocks, each with the phase column (set COLUMNS or widen the terminal)",
                         style="dim"))
    if same_as:
        foot.append(Text("identical in every row, so shown once: "
                         + "; ".join(f"{_span(names, group)} = {names[k]}" for k, group in same_as.items()),
                         style="dim"))
    foot += [Text("† host side: the host mm's own teardown of the guest's memory (zap, then folios and "
                  "page tables freed; docs/model.md §14) — outside Stage-2; end to end = Stage-2 + host side (CPU)",
                  style="dim"),
             Text("‡ wall = end to end + what the teardown waits for without CPU (SRCU grace periods at exit)",
                  style="dim"),
             Text(f"§ speedups are against {base}: the headline is Stage-2's (KVM's own work); e2e (end to end) "
                  "is what a user waiting for the whole teardown sees", style="dim")]
    for key, note in notes_used.items():
        if key != note:
            foot.append(Text(f"0 ({key}): {note}", style="dim"))
    for a in e.assumptions:
        foot.append(Text(a, style="dim"))
    for w in e.warnings:
        foot.append(Text(f"warning: {w}", style="bold yellow"))
    return Group(title, head, path, mapped_t, Text(""), *tables, Text(""), *foot)


def grid(header: list[str], rows: list[list[str | Text]]) -> Text:
    """A borderless table as one Text: a bold header, the first column left-aligned, the others
    right-aligned, two spaces between columns.  (rich's Table lays out every cell as its own
    renderable: tens of ms for an estimate's 200 cells, most of the command's own time.)"""
    table: list[list[str | Text]] = [list(header), *rows]
    cells: list[list[Text]] = [[c if isinstance(c, Text) else Text(c) for c in row] for row in table]
    widths = [max(cell.cell_len for cell in col) for col in zip(*cells, strict=True)]
    out = Text(no_wrap=True)
    for i, row in enumerate(cells):
        if i:
            out.append("\n")
        for j, (cell, width) in enumerate(zip(row, widths, strict=True)):
            pad = " " * (width - cell.cell_len)
            if i == 0:
                cell = Text(cell.plain, style="bold")
            if j == 0:
                out.append_text(cell)
                out.append(pad)
            else:
                out.append("  " + pad)
                out.append_text(cell)
    return out


def group_identical(names: list[str], rows: list[list[str | Text]]) -> tuple[list[int], dict[int, list[int]]]:
    """Variant columns (of ``rows``, after the label column) whose every cell equals an earlier
    column's: the indices kept, and for each kept column the later ones identical to it."""
    kept: list[int] = []
    same_as: dict[int, list[int]] = {}
    seen: dict[tuple[str, ...], int] = {}
    for v in range(len(names)):
        col = tuple(str(r[1 + v]) for r in rows)
        if col in seen:
            same_as.setdefault(seen[col], []).append(v)
        else:
            seen[col] = v
            kept.append(v)
    return kept, same_as


def _span(names: list[str], idx: list[int]) -> str:
    """``P1–P4`` for consecutive columns, ``v6.1, v6.6`` otherwise."""
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(names[r[0]] if len(r) == 1 else
                     f"{names[r[0]]}{'–' if len(r) > 2 else ', '}{names[r[-1]]}" for r in runs)


def wrap_columns(header: list[str], rows: list[list[str | Text]], width: int) -> list[Text]:
    """The grid split into blocks of columns that each fit ``width`` (the label column repeated
    in every block); one block when it fits.  A single column wider than ``width`` still gets a
    block of its own: cells are never cut."""
    table: list[list[str | Text]] = [list(header), *rows]
    cells = [[str(c) for c in row] for row in table]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    blocks: list[list[int]] = [[]]
    used = widths[0]
    for j in range(1, len(header)):
        if blocks[-1] and used + 2 + widths[j] > width:
            blocks.append([])
            used = widths[0]
        blocks[-1].append(j)
        used += 2 + widths[j]
    return [grid([header[0], *[header[j] for j in b]], [[r[0], *[r[j] for j in b]] for r in rows])
            for b in blocks]


def formulas(e: Estimate) -> Group:
    """Each phase's formula, then with numbers, then the total; and each price's derivation."""
    b = e.breakdown
    pr = e.prices
    out: list[Text] = []
    used_ops: set[str] = set()
    for v, var in enumerate(e.variants):
        out.append(Text(f"{var.name} — {var.title}", style="bold"))
        total = 0.0
        for phase in shown_phases(b.time_ns):
            ops = b.phase_ops(0, v, phase)
            t = float(b.time_ns[0, v, PHASE_INDEX[phase]])
            if not ops:
                note = b.notes.get((v, phase))
                out.append(Text(f"  {phase:<12} = 0" + (f"  ({note})" if note else "")))
                continue
            used_ops.update(op for op, _, _ in ops)
            sym = " + ".join(f"n({op})·price({op})" for op, _, _ in ops)
            num = " + ".join(f"{format_int(n)} × {price:.4g} ns" for op, n, price in ops)
            out.append(Text(f"  {phase:<12} = {sym}"))
            out.append(Text(f"  {'':<12} = {num}"))
            out.append(Text(f"  {'':<12} = {format_ns(t)}"))
            if phase != "host_free":
                total += t
        out.append(Text(f"  Stage-2 total = {format_ns(total)}", style="bold"))
        out.append(Text(""))
    out.append(Text("prices (ns) = D · θ", style="bold"))
    for op in sorted(used_ops, key=lambda o: OP_INDEX[o]):
        r = OP_INDEX[op]
        if op in pr.overridden:
            out.append(Text(f"  price({op}) = {pr.fixed[r]:.4g}  (explicit price in the machine file)"))
            continue
        terms = [(pr.theta_fields[c], float(pr.design[r, c]), float(pr.theta[c]))
                 for c in range(len(pr.theta_fields)) if pr.design[r, c] != 0]
        sym = " + ".join(f.removesuffix("_ns") if d == 1 else f"{d:.4g}·{f.removesuffix('_ns')}" for f, d, _ in terms)
        num = " + ".join(f"{x:.4g}" if d == 1 else f"{d:.4g}×{x:.4g}" for _, d, x in terms)
        out.append(Text(f"  price({op}) = {sym} = {num} = {float(pr.ops[r]):.4g}"))
    return Group(*out)


def print_group(console: Console, g: Group) -> None:
    console.print(g)
