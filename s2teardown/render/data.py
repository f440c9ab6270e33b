"""Machine-readable views of an Estimate: one plain-dict document, and JSON/CSV/markdown from it.

Base units (ns, bytes), numbers as numbers, no rounding; ``format_version``, tool and model
versions, and the sha256 of every input file (docs/architecture.md).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from s2teardown.core.detectors import DETECTORS, DetectorSettings
from s2teardown.core.model import shown_phases
from s2teardown.core.vocabulary import EVENTS, OPS, PHASE_INDEX, PHASES, STAGE2_PHASES
from s2teardown.features.estimate import Estimate
from s2teardown.inputs.units import backing_label, format_ns
from s2teardown.render.envelope import envelope, to_json
from s2teardown.render.format import format_speedup

__all__ = ["estimate_csv", "estimate_document", "estimate_markdown", "to_json"]



def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def estimate_document(e: Estimate) -> dict[str, Any]:
    b = e.breakdown
    m = e.machine
    variants = []
    s2 = b.stage2_ns[0]
    speed = b.speedup[0]
    dom = b.dominant_phase[0]
    ops_total = b.operations[0].sum(axis=1)  # (V, OPS)
    listed = shown_phases(b.time_ns)
    for v, var in enumerate(e.variants):
        phases = []
        for phase in listed:
            p = PHASE_INDEX[phase]
            t = float(b.time_ns[0, v, p])
            phases.append(
                {
                    "phase": phase,
                    "time_ns": t,
                    "share": (t / float(s2[v])) if phase in STAGE2_PHASES and s2[v] > 0 else None,
                    "assumed": bool(b.assumed[0, v, p]),
                    "note": b.notes.get((v, phase)),
                    "ops": [
                        {"op": op, "count": n, "unit_ns": price}
                        for op, n, price in b.phase_ops(0, v, phase)
                    ],
                }
            )
        variants.append(
            {
                "name": var.name,
                "title": var.title,
                "stage2_ns": float(s2[v]),
                "host_free_ns": float(b.host_free_ns[0, v]),
                "host_ns": float(b.host_ns[0, v]),
                "end_to_end_ns": float(b.end_to_end_ns[0, v]),
                "wall_ns": float(b.wall_ns[0, v]),
                "speedup": _num(float(speed[v])),
                "end_to_end_speedup": _num(float(b.end_to_end_speedup[0, v])),
                "host_speedup": _num(float(b.host_speedup[0, v])),
                "dominant_phase": PHASES[int(dom[v])],
                "longest_stretch_ns": None if b.stretch_ns is None else float(b.stretch_ns[0, v]),
                "longest_locked_stretch_ns": (
                    None if b.stretch_locked is None else float(b.stretch_locked[0, v])
                ),
                # every detector the stretch trips, earliest first (docs/model.md §11.5)
                "lock_holds": [h.as_dict() for h in e.lock_holds if h.variant == var.name],
                "phases": phases,
                "events": {ev: int(b.events[0, v, i]) for i, ev in enumerate(EVENTS)},
                # instructions and priced operations, all phases: what make validate-kernel
                # compares with the kernel's own counts (docs/validation.md)
                "operations": {op: int(n) for op, n in zip(OPS, ops_total[v], strict=True)},
            }
        )
    inputs: dict[str, Any] = {"machine": {"name": m.name, "path": m.path, "sha256": m.sha256,
                                          "what_if": list(m.what_if)}}
    inputs["variants"] = [{"path": path, "sha256": sha}
                          for path, sha in sorted({(v.source, v.source_sha256) for v in e.variants})]
    return envelope(
        "estimate",
        warnings=e.warnings,
        inputs=inputs,
        workload=_workload(e),
        kernel_path=e.extra.get("path"),
        baseline=e.variants[b.baseline].name,
        prices_overridden=sorted(e.prices.overridden),
        assumptions=list(e.assumptions),
        detectors=detectors_document(e.detectors),
        lock_hold_warnings=[{"variant": h.variant, **h.as_dict()} for h in e.lock_holds],
        variants=variants,
    )


def detectors_document(settings: DetectorSettings) -> list[dict[str, Any]]:
    """The detector table with the thresholds in force (core/detectors.py, docs/model.md §11.5)."""
    return [
        {
            "detector": d.key,
            "name": d.name,
            "threshold_ns": settings.threshold_ns(d.key),
            "threshold": settings.threshold_text(d.key),
            "rule": d.rule,
            "setting": d.setting,
            "since": d.since_text,
            "decides": d.decides,
            "format": d.format,
            "message": settings.message(d.key),
            "sees": d.sees,
            "on_by_default": d.on_by_default,
            "can_fire": d.can_fire,
            "note": d.note,
        }
        for d in DETECTORS
    ]


def _workload(e: Estimate) -> dict[str, Any]:
    g = e.geometry
    common = {
        "mapped_bytes_by_leaf": {str(k): v for k, v in sorted(e.mapped_by_leaf.items())},
        "device_bytes": e.device_bytes,
        "ipa_bits": g.ipa_bits,
        "levels": g.levels,
        "granule_bytes": g.granule,
        "placement": {
            "local_node": e.placement.local_node,
            "same_socket": e.placement.same_socket,
            "remote_socket": e.placement.remote_socket,
        },
        "preempt": e.extra.get("preempt", "none"),
    }
    w = e.workload
    if w is None:
        sc = e.scenario
        return {"scenario": {"name": sc.name, "path": sc.path, "sha256": sc.sha256}, **common,
                "layout": sc.as_dict()}
    return {
        "vm_bytes": w.vm_bytes,
        "backing": [{"leaf_bytes": leaf, "percent": pct, "hugetlb": leaf in w.hugetlb} for leaf, pct in w.backing],
        "mapped_fraction": w.mapped,
        "memslots": w.memslots,
        "ipa_bits_auto": w.ipa_bits is None,
        "ram_base_bytes": w.ram_base,
        "event": w.event,
        "range": None if w.range is None else {"offset_bytes": w.range[0], "size_bytes": w.range[1]},
        # the EL2 paths (docs/model.md §15): kvm-arm.mode in force, a protected VM, shadow MMUs' bytes
        "kvm_mode": e.extra.get("kvm_mode", w.kvm_mode),
        "protected_vm": w.protected_vm,
        "shadow_mmus": list(w.shadow_mmus),
        **common,
    }


def estimate_csv(e: Estimate) -> str:
    """Long form: one row per (variant, phase)."""
    doc = estimate_document(e)
    out = io.StringIO()
    wr = csv.writer(out, lineterminator="\n")
    w = doc["workload"]
    if e.workload is not None:
        workload = [w["event"], w["vm_bytes"], backing_label(e.workload.backing, e.workload.hugetlb), w["memslots"],
                    w["granule_bytes"], w["ipa_bits"]]
    else:
        workload = [e.scenario.event_form or "invocations", e.scenario.layout.mapped_bytes, "scenario",
                    len(e.scenario.layout.memslots), w["granule_bytes"], w["ipa_bits"]]
    what_if = "; ".join(e.machine.what_if)
    wr.writerow(["machine", "event", "vm_bytes", "backing", "memslots", "granule_bytes", "ipa_bits",
                 "variant", "phase", "time_ns", "share", "assumed", "note", "what_if"])
    for v in doc["variants"]:
        for p in v["phases"]:
            share = "" if p["share"] is None else repr(p["share"])
            wr.writerow([e.machine.name, *workload, v["name"], p["phase"], repr(p["time_ns"]), share,
                         int(p["assumed"]), p["note"] or "", what_if])
        wr.writerow([e.machine.name, *workload, v["name"], "stage2_total", repr(v["stage2_ns"]),
                     "1.0", "", "", what_if])
        for total in ("host", "end_to_end", "wall"):
            wr.writerow([e.machine.name, *workload, v["name"], f"{total}_total",
                         repr(v[f"{total}_ns"]), "", "", "", what_if])
        for h in v["lock_holds"]:  # time_ns: when it first fires, from the stretch's start
            gate = "" if h["on_by_default"] else " [only with LATENCY_WARN on; off by default]"
            wr.writerow([e.machine.name, *workload, v["name"], f"lock_hold:{h['threshold']}",
                         repr(h["first_fire_ns"]), "", "", h["message"] + gate, what_if])
    return out.getvalue()


def estimate_markdown(e: Estimate) -> str:
    b = e.breakdown
    names = [v.name for v in e.variants]
    lines = [
        f"**{e.machine.name}** — {e.header}",
        "",
        "| phase | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for phase in shown_phases(b.time_ns):
        p = PHASE_INDEX[phase]
        cells = []
        for v in range(len(names)):
            t = float(b.time_ns[0, v, p])
            note = b.notes.get((v, phase))
            cell = format_ns(t) + ("\\*" if b.assumed[0, v, p] and t else "")
            cells.append(f"0 ({note})" if note else cell)
        label = {"host_zap": "host zap (outside Stage-2)", "host_free": "host free (outside Stage-2)",
                 "wait": "wait (wall only)"}.get(phase, phase)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **Stage-2 total** | " + " | ".join(f"**{format_ns(float(x))}**" for x in b.stage2_ns[0]) + " |")
    lines.append("| host side | " + " | ".join(format_ns(float(x)) for x in b.host_ns[0]) + " |")
    lines.append("| **end to end** | " + " | ".join(f"**{format_ns(float(x))}**" for x in b.end_to_end_ns[0]) + " |")
    lines.append("| wall | " + " | ".join(format_ns(float(x)) for x in b.wall_ns[0]) + " |")
    lines.append("| speedup, Stage-2 (headline) | " + " | ".join(format_speedup(float(x)) for x in b.speedup[0]) + " |")
    lines.append("| speedup, end to end | " + " | ".join(format_speedup(float(x)) for x in b.end_to_end_speedup[0]) + " |")
    lines.append("| dominant | " + " | ".join(PHASES[int(d)] for d in b.dominant_phase[0]) + " |")
    if b.stretch_ns is not None:
        lines.append("| longest stretch | " + " | ".join(format_ns(float(x)) for x in b.stretch_ns[0]) + " |")
    lines.append("")
    for a in e.assumptions:
        lines.append(f"- {a}")
    for wmsg in e.warnings:
        lines.append(f"- **warning:** {wmsg}")
    if e.lock_holds:
        lines += ["", f"Lock-hold detectors (preempt={e.detectors.preempt}; times from the start of "
                  "the stretch):", "",
                  "| variant | detector | threshold | first fires | stretch | the kernel prints |",
                  "|---|---|---|---:|---:|---|"]
        for h in e.lock_holds:
            gate = "" if h.on_by_default else " (if LATENCY_WARN is on; off by default)"
            lock = "holding mmu_lock" if h.mmu_lock_held else "mmu_lock not held"
            lines.append(f"| {h.variant} | {h.name}{gate} | {h.what} | {format_ns(h.first_fire_ns)} | "
                         f"{format_ns(h.stretch_ns)}, {lock} | `{h.message}` |")
    return "\n".join(lines) + "\n"
