"""The machine format as documents: its JSON Schema and the markdown reference
(docs/machine-format.md); ``python -m s2teardown.inputs.machine.reference`` prints the markdown."""

from __future__ import annotations

from typing import Any

from s2teardown.core.vocabulary import OPS
from s2teardown.inputs.machine.derive import CORE_CLASSES, SOFTWARE_COSTS
from s2teardown.inputs.machine.fields import (
    BY_GROUP,
    CHANGES_SINCE,
    DEFAULT_SOURCE,
    DERIVED,
    GROUPS,
    OP_DERIVATION,
    REQUIRED,
    SCHEMA_VERSION,
    SOURCE_KINDS,
    Field,
    format_number,
)

# ---------------------------------------------------------------------------------------------
# JSON Schema


def _value_schema(f: Field) -> dict[str, Any]:
    if f.type == "feature":
        return {"enum": [True, False, "unknown"]}
    if f.choices is not None:
        return {"enum": list(f.choices)}
    s: dict[str, Any] = {"type": "integer" if f.type == "int" else "number"}
    if f.minimum is not None:
        s["exclusiveMinimum" if f.exclusive_minimum else "minimum"] = f.minimum
    if f.maximum is not None:
        s["maximum"] = f.maximum
    return s


def _entry_schema(f: Field) -> dict[str, Any]:
    props: dict[str, Any] = {
        "value": _value_schema(f),
        "source": {"$ref": "#/$defs/source"},
    }
    if f.numeric:
        bound = _value_schema(f)
        bound["type"] = "number"
        props["min"] = bound
        props["max"] = dict(bound)
    props["note"] = {"type": "string"}
    unit = f" [{f.unit}]" if f.unit else ""
    s: dict[str, Any] = {
        "description": f"{f.meaning}{unit}",
        "type": "object",
        "properties": props,
        "required": ["value", "source"],
        "additionalProperties": False,
    }
    if f.default is not REQUIRED and f.default is not DERIVED:
        s["default"] = {"value": f.default, "source": DEFAULT_SOURCE}
    if f.ranged:
        s["if"] = {"properties": {"source": {"pattern": "^assumed"}}}
        s["then"] = {"required": ["min", "max"]}
    return s


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the machine file format."""
    props: dict[str, Any] = {
        "schema_version": {"const": SCHEMA_VERSION, "description": "Format version."},
        "name": {"type": "string", "minLength": 1, "description": "Short machine name."},
        "description": {"type": "string", "description": "One-line description."},
    }
    for g in GROUPS:
        fields = BY_GROUP[g]
        props[g] = {
            "type": "object",
            "properties": {n: _entry_schema(f) for n, f in fields.items()},
            "required": [n for n, f in fields.items() if f.required],
            "additionalProperties": False,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:s2teardown:machine:{SCHEMA_VERSION}",
        "title": "s2teardown machine description",
        "type": "object",
        "properties": props,
        "required": ["schema_version", "name", "topology", "features", "placement", "parameters"],
        "additionalProperties": False,
        "$defs": {
            "source": {
                "type": "string",
                "pattern": r"^\s*(?:(?:sourced|derived|calibrated)\s*:\s*\S|assumed\b)",
                "description": "; ".join(f"{k}: {v}" for k, v in SOURCE_KINDS.items()),
            }
        },
    }


# ---------------------------------------------------------------------------------------------
# markdown reference


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _default_text(f: Field) -> str:
    if f.default is REQUIRED:
        return "required"
    if f.default is DERIVED:
        return "derived"
    if f.type == "feature":
        return str(f.default)
    if f.default_min is not None and f.default_max is not None:
        return f"{format_number(f.default)} ({format_number(f.default_min)} … {format_number(f.default_max)})"
    return format_number(f.default) if isinstance(f.default, int | float) else str(f.default)


_EXAMPLE = """\
schema_version: 1
name: d05
description: "Huawei D05: 2 x Hi1616 (Cortex-A72)"
topology:
  sockets: {value: 2, source: "sourced: WikiChip Hi1616; hip07.dtsi"}
  coherence: {value: directory, source: assumed, note: "home-node directory; not published"}
  cmo_outstanding: {value: 50, source: assumed, min: 20, max: 100}
  # ...
features:
  vhe: {value: false, source: "sourced: Cortex-A72 is ARMv8.0"}
  # ...
placement:
  local_node: {value: 0.25, source: "assumed: spread over 4 nodes"}
  same_socket: {value: 0.25, source: "assumed: spread over 4 nodes"}
  remote_socket: {value: 0.5, source: "assumed: spread over 4 nodes"}
parameters:
  interconnect_latency_ns: {value: 150, source: assumed, min: 80, max: 300}
  dc_civac_local_ns: {value: 5, source: assumed, min: 3, max: 8}
  # ...
prices:            # optional
  hvc: {value: 140, source: "calibrated: kvm-unit-tests hypercall loop"}
"""


def machine_format_markdown() -> str:
    """docs/machine-format.md (generated; a test keeps the committed file equal to this)."""
    out: list[str] = []
    w = out.append
    w(f"# Machine description format (schema_version {SCHEMA_VERSION})")
    w("")
    w(
        "<!-- Generated by `python -m s2teardown.inputs.machine.reference > docs/machine-format.md` from the field "
        "table in s2teardown/machine.py. Do not edit by hand. -->"
    )
    w("")
    w("A machine file (`configs/machines/*.yaml`, or any path given to `--machine`) describes")
    w("the hardware a teardown runs on: its topology, the CPU features that change the kernel's")
    w("code path, where guest memory lives by default, and the physical parameters θ that")
    w("price each primitive operation. Bundled machines are named without the suffix")
    w("(`--machine d05`).")
    w("")
    w("## Layout")
    w("")
    w("An illustrative excerpt (the bundled `configs/machines/d05.yaml` is complete):")
    w("")
    w("```yaml")
    w(_EXAMPLE.rstrip("\n"))
    w("```")
    w("")
    w(f"Top-level keys: `schema_version` (a plain integer, must be {SCHEMA_VERSION}), `name`")
    w("(a plain, non-empty string), `description` (a plain string, optional), then the sections")
    w("`topology`, `features`, `placement`, `parameters` and the optional `prices`. Nothing")
    w("else is allowed.")
    w("")
    w("## Every value: value, source, range, note")
    w("")
    w("Every value in a section is a mapping:")
    w("")
    w("| key | meaning |")
    w("|---|---|")
    w(
        "| `value` | the value (required); plain numbers, base units as the key says (`_ns`, "
        "`_bytes`) |"
    )
    w("| `source` | where it comes from (required); starts with one of the kinds below |")
    w(
        "| `min`, `max` | the range the value may take (numbers only; min ≤ value ≤ max); "
        "required when an `assumed` value is a physical parameter (sampled by the uncertainty "
        "analysis) |"
    )
    w("| `note` | free text: what the number rests on |")
    w("")
    w("| source kind | meaning |")
    w("|---|---|")
    for k, v in SOURCE_KINDS.items():
        w(f"| `{k}` | {_md(v)} |")
    w("")
    w(
        "A field left out takes its default, marked `assumed` (source "
        f"`{DEFAULT_SOURCE}`); every human view marks numbers that rest on an assumption."
    )
    w("")
    w("## Fields")
    headings = {
        "topology": "Topology",
        "features": "Features",
        "placement": "Placement",
        "parameters": "Parameters θ (all in ns, finite, ≥ 0)",
        "prices": "Prices (optional explicit overrides, ns)",
    }
    intros = {
        "topology": "",
        "features": "Each feature is `true`, `false` or `unknown`. An unknown feature is taken "
        "as absent (`false`) and every estimate says so.",
        "placement": "The machine's default placement of guest memory relative to the "
        "tearing-down CPU. A workload may give its own.",
        "parameters": "The physical parameters θ, in this fixed order (the model's vector). "
        "An `assumed` parameter needs `min` and `max`; the default column gives a default's "
        "range in brackets. The software prices (" + ", ".join(f"`{n}`" for n in SOFTWARE_COSTS)
        + ") follow the machine: a file that states `topology.core_class` and "
        "`topology.dram_latency_ns` and leaves one of them out gets it derived, cycles / "
        "(freq_ghz × the core class's ipc) + DRAM lines × dram_latency_ns, the cycles and lines "
        "anchored to the D05 (docs/model.md §7.1), with the default's range scaled alike and "
        "source `derived: …`; `--set freq_ghz=…` or `--set dram_latency_ns=…` re-derives them. "
        "Core classes and their ipc: " + ", ".join(f"`{k}` {v.ipc:g}" for k, v in CORE_CLASSES.items())
        + ".",
        "prices": "A price given here replaces its derivation from θ (every view says so). "
        "Keys are the operation names of `s2teardown/ops.py`; absent means derived. An "
        "`assumed` price needs `min` and `max`.",
    }
    for g in GROUPS:
        w("")
        w(f"### {headings[g]}: `{g}:`")
        w("")
        if intros[g]:
            w(intros[g])
            w("")
        w("| field | type | unit | allowed | default | meaning |")
        w("|---|---|---|---|---|---|")
        for f in BY_GROUP[g].values():
            typ = {
                "int": "integer",
                "float": "number",
                "choice": "string",
                "feature": "bool/unknown",
            }[f.type]
            w(
                f"| `{f.name}` | {typ} | {f.unit or '–'} | {_md(f.short_range())} "
                f"| {_md(_default_text(f))} | {_md(f.meaning)} |"
            )
    w("")
    w("## Rules across fields")
    w("")
    w("- `placement`: `local_node + same_socket + remote_socket = 1` (± 1e-9);")
    w("  on a 1-socket machine `remote_socket` must be 0; with one NUMA node per socket")
    w("  `same_socket` must be 0.")
    w("- `interconnect_latency_ns` may be 0 only on a single socket.")
    w("- `min ≤ value ≤ max`, and `min`/`max` obey the field's own range.")
    w('- Unknown keys (with a "did you mean"), duplicate keys, YAML tags, anchors and aliases')
    w("  are errors; booleans are not numbers; `.nan`/`.inf` are rejected.")
    w("")
    w("## From parameters to prices")
    w("")
    w("Each primitive operation's price (ns) is a fixed linear map of θ, set by the topology,")
    w("the placement and the coherence; brackets `[…]` are 1 when the condition holds, else 0.")
    w("A price under `prices:` replaces its row.")
    w("")
    w("| operation | price (ns) |")
    w("|---|---|")
    for op in OPS:
        w(f"| `{op}` | {_md(OP_DERIVATION[op])} |")
    w("")
    w("How to read the two derived rows:")
    w("")
    w("- **DC CIVAC line.** A large guest's lines are almost never cached, but the maintenance")
    w("  must still be resolved by the line's home. A line homed on the CPU's own node costs")
    w("  `dc_civac_local_ns`; on another node of the socket, `dc_civac_node_extra_ns` more; on")
    w("  another socket it pays a round trip `2 · interconnect_latency_ns`, divided by the")
    w("  `cmo_outstanding` operations a CPU keeps in flight. With `coherence: snoop` on several")
    w("  sockets even a locally homed line must snoop the other socket and pays it too.")
    w("- **Broadcast TLBI** (completion included): a base, a term per PE that must acknowledge,")
    w("  and on several sockets one round trip across the interconnect. VMALLS12E1IS and a range")
    w("  TLBI add their own extra. `tlbi_repeat` doubles the count of TLBIs, not their price.")
    w("- Features change counts, not prices: with `s2fwb` there is no DC CIVAC, with `vhe` no")
    w("  HVC per hyp call, with `tlbi_range` range TLBIs replace per-entry ones.")
    w("")
    w("Worked example, the bundled D05 (2 sockets, directory coherence, placement 0.25 / 0.25 /")
    w("0.5, `dc_civac_local_ns` 5, `dc_civac_node_extra_ns` 2, `interconnect_latency_ns` 150,")
    w("`cmo_outstanding` 50, 64 PEs, `tlbi_base_ns` 150, `tlbi_per_pe_ns` 2.5):")
    w("")
    w("    DC CIVAC line = 5 + 2 × 0.25 + (2 · 150 / 50) × 0.5 = 5 + 0.5 + 3 = 8.5 ns")
    w("                  (= 0.25 × 5 + 0.25 × 7 + 0.5 × 11: local, other node, other socket)")
    w("    broadcast TLBI = 150 + 2.5 × 64 + 2 · 150 = 610 ns")
    w("")
    w("## Schema versions")
    w("")
    w("A file whose `schema_version` differs is refused with what changed since its version.")
    w("")
    for n, text in sorted(CHANGES_SINCE.items()):
        w(f"- {n}: {_md(text)}")
    w("")
    w("A JSON Schema (draft 2020-12) of this format is `s2teardown.inputs.machine.json_schema()`.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(machine_format_markdown())
