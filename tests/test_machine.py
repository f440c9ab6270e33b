"""Machine descriptions: the bundled files, validation errors, schema, docs and helpers."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from s2teardown.core.vocabulary import OPS
from s2teardown.errors import UserError
from s2teardown.inputs import bundled as resources
from s2teardown.inputs.bundled import bundled_dir, bundled_names, resolve_config
from s2teardown.inputs.machine import (
    CHANGES_SINCE,
    FIELDS,
    GROUPS,
    ONE_TO_ONE,
    OP_DERIVATION,
    SCHEMA_VERSION,
    THETA_FIELDS,
    Machine,
    json_schema,
    load_machine,
    machine_format_markdown,
    machine_from_text,
)
from s2teardown.inputs.machine.derive import SOFTWARE_COSTS

REPO = Path(__file__).resolve().parent.parent
MACHINES = bundled_names("machines")

# A small valid machine; the bad-input table mutates it and names lines by number.
BASE = """\
schema_version: 1
name: test
description: a test machine
topology:
  sockets: {value: 2, source: "sourced: test"}
  cores_per_socket: {value: 32, source: "sourced: test"}
  numa_nodes_per_socket: {value: 2, source: "sourced: test"}
  freq_ghz: {value: 2.4, source: "sourced: test"}
  memory_bytes: {value: 274877906944, source: "sourced: test"}
  llc_bytes: {value: 33554432, source: "sourced: test"}
  cache_line_bytes: {value: 64, source: "sourced: test"}
  coherence: {value: directory, source: assumed}
  cmo_outstanding: {value: 50, source: assumed, min: 20, max: 100}
features:
  vhe: {value: false, source: "sourced: test"}
  s2fwb: {value: unknown, source: "sourced: test"}
placement:
  local_node: {value: 0.25, source: assumed}
  same_socket: {value: 0.25, source: assumed}
  remote_socket: {value: 0.5, source: assumed}
parameters:
  interconnect_latency_ns: {value: 150, source: assumed, min: 80, max: 300}
  dc_civac_local_ns: {value: 5, source: "calibrated: test"}
  tlbi_base_ns: {value: 150, source: "derived: 610 - 160 - 300"}
  tlbi_per_pe_ns: {value: 2.5, source: assumed, min: 1, max: 10}
  hvc_ns: {value: 150, source: assumed, min: 80, max: 400}
"""


def mutate(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def error_of(text: str, name: str = "m.yaml") -> str:
    with pytest.raises(UserError) as info:
        machine_from_text(text, name)
    msg = str(info.value)
    assert "\n" not in msg
    assert info.value.exit_code == 2
    return msg


# --- the bundled machines -------------------------------------------------------------------


def test_there_are_bundled_machines() -> None:
    expected = {"d05", "rpi4", "emag", "kunpeng920", "thunderx2", "thunderx", "altra", "graviton3"}
    assert expected <= set(MACHINES)


@pytest.mark.parametrize("name", MACHINES)
def test_every_bundled_machine_loads(name: str) -> None:
    m = load_machine(name)
    assert m.name == name
    assert m.path is not None and Path(m.path).name == f"{name}.yaml"
    assert m.text is not None and m.sha256 is not None and len(m.sha256) == 64
    assert tuple(m.parameters) == THETA_FIELDS
    assert all(math.isfinite(v) and v >= 0 for v in m.theta())
    # every value in a shipped file is stated or derived from the machine (docs/model.md
    # §7.1), none rests on a format default
    assert all(p.line is not None or (p.kind == "derived" and p.name in SOFTWARE_COSTS)
               for g in GROUPS for p in m.section(g).values())
    for p in m.parameters.values():
        if p.kind == "assumed":
            assert p.min is not None and p.max is not None and p.min <= p.value <= p.max
    if m.number("sockets") == 1:
        assert m.number("interconnect_latency_ns") == 0
        assert m.number("local_node") == 1.0


def test_d05_average_line_price_by_hand() -> None:
    m = load_machine("d05")
    local = m.number("dc_civac_local_ns")
    other_node = local + m.number("dc_civac_node_extra_ns")
    round_trip = 2 * m.number("interconnect_latency_ns")
    remote = local + round_trip / m.number("cmo_outstanding")
    assert (local, other_node, remote) == (5.0, 7.0, 11.0)  # 5 + 300/50 = 11
    assert m.value("coherence") == "directory"  # so a local line does not cross
    weights = (m.number("local_node"), m.number("same_socket"), m.number("remote_socket"))
    assert weights == (0.25, 0.25, 0.5)
    average = weights[0] * local + weights[1] * other_node + weights[2] * remote
    assert average == pytest.approx(8.5)  # 0.25*5 + 0.25*7 + 0.5*11
    # the same number through the formula of docs/machine-format.md
    formula = (
        local
        + m.number("dc_civac_node_extra_ns") * weights[1]
        + (round_trip / m.number("cmo_outstanding")) * weights[2]
    )
    assert formula == pytest.approx(8.5)
    # broadcast TLBI ~0.6 us: 150 + 2.5 x 64 PEs + 300 ns round trip
    assert m.pes == 64
    tlbi = m.number("tlbi_base_ns") + m.number("tlbi_per_pe_ns") * m.pes + round_trip
    assert tlbi == pytest.approx(610.0)


def test_d05_features_and_kinds() -> None:
    m = load_machine("d05.yaml")
    # Cortex-A72: no VHE/FWB/TLBIRANGE, but erratum 1319367 (ARM64_WORKAROUND_SPECULATIVE_AT)
    assert [f for f in m.features if m.feature(f)] == ["speculative_at"]
    assert m.unknown_features() == []
    assert m.param_kind("sockets") == "sourced"
    assert m.param_kind("interconnect_latency_ns") == "assumed"
    assert m.value("cache_line_bytes") == 64 and isinstance(m.value("cache_line_bytes"), int)


def test_graviton3_and_kunpeng_features() -> None:
    g = load_machine("graviton3")
    assert g.feature("vhe") and g.feature("s2fwb") and g.feature("tlbi_range")
    k = load_machine("kunpeng920")
    assert k.unknown_features() == ["s2fwb"] and k.feature("s2fwb") is False
    assert load_machine("thunderx").value("cache_line_bytes") == 128
    assert load_machine("altra").number("sockets") == 1


# --- the bad-input table --------------------------------------------------------------------

CASES: list[tuple[str, str, str]] = [
    # (case, text, the exact start of the one-line message)
    (
        "unknown key with suggestion",
        mutate("  sockets:", "  sokets:"),
        "m.yaml:5: topology.sokets: expected a topology field, got unknown key 'sokets' (did you mean 'sockets'?)",
    ),
    (
        "duplicate key with its line",
        mutate("  freq_ghz:", '  sockets: {value: 2, source: "sourced: x"}\n  freq_ghz:'),
        "m.yaml:8: topology.sockets: expected each key once, got a second 'sockets' (first on line 5)",
    ),
    (
        "YAML tag",
        mutate("{value: 2.4,", "{value: !!float 2.4,"),
        "m.yaml:8: topology.freq_ghz.value: expected a plain value (YAML tags are not supported), got tag '!!float'",
    ),
    (
        "python object tag",
        mutate("name: test", "name: !!python/object/apply:os.system [ls]"),
        "m.yaml:2: name: expected a plain value (YAML tags are not supported), got tag '!!python/object/apply:os.system'",
    ),
    (
        "anchor",
        mutate("name: test", "name: &n test"),
        "m.yaml:2: name: expected a value written out (YAML anchors and aliases are not supported), got anchor '&n'",
    ),
    (
        "alias",
        mutate("description: a test machine", "description: *n"),
        "m.yaml:3: description: expected a value written out (YAML anchors and aliases are not supported), got alias '*n'",
    ),
    (
        "bool as int",
        mutate("sockets: {value: 2,", "sockets: {value: true,"),
        "m.yaml:5: topology.sockets: expected an integer >= 1, got true (a boolean)",
    ),
    (
        "float as int",
        mutate("{value: 32,", "{value: 32.0,"),
        "m.yaml:6: topology.cores_per_socket: expected an integer >= 1, got 32.0 (write 32 without a decimal point)",
    ),
    (
        "NaN",
        mutate("{value: 5,", "{value: .nan,"),
        "m.yaml:23: parameters.dc_civac_local_ns: expected a finite number >= 0, got nan",
    ),
    (
        "infinity",
        mutate("{value: 5,", "{value: .inf,"),
        "m.yaml:23: parameters.dc_civac_local_ns: expected a finite number >= 0, got inf",
    ),
    (
        "negative",
        mutate("hvc_ns: {value: 150,", "hvc_ns: {value: -1,"),
        "m.yaml:26: parameters.hvc_ns: expected a finite number >= 0, got -1",
    ),
    (
        "zero where positive",
        mutate("{value: 2.4,", "{value: 0,"),
        "m.yaml:8: topology.freq_ghz: expected a finite number > 0, got 0",
    ),
    (
        "missing source",
        mutate(
            'tlbi_base_ns: {value: 150, source: "derived: 610 - 160 - 300"}',
            "tlbi_base_ns: {value: 150}",
        ),
        "m.yaml:24: parameters.tlbi_base_ns.source: expected a source: 'sourced: <where>', 'derived: <how>', "
        "'calibrated: <against what>' or 'assumed', got none",
    ),
    (
        "unknown source kind",
        mutate('"calibrated: test"', '"guessed"'),
        "m.yaml:23: parameters.dc_civac_local_ns.source: expected a source:",
    ),
    (
        "sourced without a place",
        mutate('"calibrated: test"', '"sourced:"'),
        "m.yaml:23: parameters.dc_civac_local_ns.source: expected a source:",
    ),
    (
        "assumed without range",
        mutate(
            "hvc_ns: {value: 150, source: assumed, min: 80, max: 400}",
            "hvc_ns: {value: 150, source: assumed}",
        ),
        "m.yaml:26: parameters.hvc_ns: expected min and max for an assumed value (the range it may take), "
        "got neither min nor max",
    ),
    (
        "assumed with only min",
        mutate(
            "hvc_ns: {value: 150, source: assumed, min: 80, max: 400}",
            "hvc_ns: {value: 150, source: assumed, min: 80}",
        ),
        "m.yaml:26: parameters.hvc_ns: expected min and max for an assumed value (the range it may take), got no max",
    ),
    (
        "value outside its own range",
        mutate(
            "{value: 150, source: assumed, min: 80, max: 300}",
            "{value: 350, source: assumed, min: 80, max: 300}",
        ),
        "m.yaml:22: parameters.interconnect_latency_ns: expected a value <= max (300), got 350",
    ),
    (
        "min above max",
        mutate("min: 1, max: 10}", "min: 10, max: 1}"),
        "m.yaml:25: parameters.tlbi_per_pe_ns.min: expected min <= max (1), got 10",
    ),
    (
        "range on a non-number",
        mutate(
            "{value: directory, source: assumed}", "{value: directory, source: assumed, min: 1}"
        ),
        "m.yaml:12: topology.coherence.min: expected no min (only numbers have ranges), got 1",
    ),
    (
        "placement not summing to 1",
        mutate("{value: 0.5, source: assumed}", "{value: 0.4, source: assumed}"),
        "m.yaml:17: placement: expected fractions summing to 1, got 0.25 + 0.25 + 0.4 = 0.9",
    ),
    (
        "remote placement on one socket",
        mutate("sockets: {value: 2,", "sockets: {value: 1,"),
        "m.yaml:20: placement.remote_socket: expected 0 on a single-socket machine, got 0.5",
    ),
    (
        "same-socket placement with one node per socket",
        mutate("numa_nodes_per_socket: {value: 2,", "numa_nodes_per_socket: {value: 1,"),
        "m.yaml:19: placement.same_socket: expected 0 with one NUMA node per socket, got 0.25",
    ),
    (
        "no interconnect on two sockets",
        mutate(
            "{value: 150, source: assumed, min: 80, max: 300}", '{value: 0, source: "sourced: x"}'
        ),
        "m.yaml:22: parameters.interconnect_latency_ns: expected a latency > 0 on a 2-socket machine, got 0",
    ),
    (
        "wrong schema_version",
        mutate("schema_version: 1", "schema_version: 2"),
        "m.yaml:1: schema_version: expected 1, got 2 (the file is for a newer s2teardown; this one reads version 1",
    ),
    (
        "old schema_version",
        mutate("schema_version: 1", "schema_version: 0"),
        "m.yaml:1: schema_version: expected 1, got 0 (changed since version 0: v1: first version",
    ),
    (
        "schema_version as a string",
        mutate("schema_version: 1", 'schema_version: "1"'),
        "m.yaml:1: schema_version: expected the integer 1, got string '1'",
    ),
    (
        "missing schema_version",
        mutate("schema_version: 1\n", ""),
        "m.yaml:1: schema_version: expected schema_version: 1 (required), got no schema_version",
    ),
    (
        "missing required field",
        mutate('  cores_per_socket: {value: 32, source: "sourced: test"}\n', ""),
        "m.yaml:4: topology.cores_per_socket: expected a value (an integer >= 1; required), "
        "got no 'cores_per_socket' in topology",
    ),
    (
        "missing section",
        mutate(
            'features:\n  vhe: {value: false, source: "sourced: test"}\n  s2fwb: {value: unknown, source: "sourced: test"}\n',
            "",
        ),
        "m.yaml:1: features: expected a features: section (required), got no 'features'",
    ),
    (
        "unknown top-level key",
        mutate("parameters:", "paramters:"),
        "m.yaml:21: paramters: expected one of schema_version, name, description, topology, features, "
        "placement, parameters, prices, got unknown key 'paramters' (did you mean 'parameters'?)",
    ),
    (
        "unknown key inside a value",
        mutate("hvc_ns: {value: 150,", "hvc_ns: {vlaue: 150,"),
        "m.yaml:26: parameters.hvc_ns.vlaue: expected one of value, source, min, max, note, "
        "got unknown key 'vlaue' (did you mean 'value'?)",
    ),
    (
        "bare value instead of a mapping",
        mutate('  sockets: {value: 2, source: "sourced: test"}', "  sockets: 2"),
        "m.yaml:5: topology.sockets: expected a mapping {value: ..., source: ...}, got 2 "
        "(write {value: 2, source: ...})",
    ),
    (
        "feature not a boolean",
        mutate("vhe: {value: false,", "vhe: {value: yes,"),
        "m.yaml:15: features.vhe: expected true, false or 'unknown', got string 'yes'",
    ),
    (
        "cache line not a power of two",
        mutate("{value: 64,", "{value: 48,"),
        "m.yaml:11: topology.cache_line_bytes: expected one of 32, 64, 128, 256, got 48",
    ),
    (
        "misspelt choice",
        mutate("{value: directory,", "{value: snop,"),
        "m.yaml:12: topology.coherence: expected one of 'snoop', 'directory', got string 'snop' "
        "(did you mean 'snoop'?)",
    ),
    (
        "name not a string",
        mutate("name: test", "name: 5"),
        "m.yaml:2: name: expected a non-empty string, got 5",
    ),
    (
        "unknown price with suggestion",
        BASE + 'prices:\n  hvcc: {value: 100, source: "calibrated: x"}\n',
        "m.yaml:28: prices.hvcc: expected a prices field, got unknown key 'hvcc' (did you mean 'hvc'?)",
    ),
    (
        "assumed price without range",
        BASE + "prices:\n  hvc: {value: 100, source: assumed}\n",
        "m.yaml:28: prices.hvc: expected min and max for an assumed value",
    ),
    (
        "YAML syntax error",
        mutate("  freq_ghz: {value: 2.4,", "  freq_ghz: {value: 2.4"),
        "m.yaml:8: expected valid YAML, got a syntax error",
    ),
    (
        "top level not a mapping",
        "- a\n- b\n",
        "m.yaml:1: expected a mapping of machine fields, got a list",
    ),
    ("empty file", "", "m.yaml:1: expected a YAML document, got an empty file"),
    (
        "comment-only file",
        "# nothing here\n",
        "m.yaml:1: expected a YAML document, got an empty file",
    ),
]


@pytest.mark.parametrize(("case", "text", "start"), CASES, ids=[c[0] for c in CASES])
def test_bad_machine_text(case: str, text: str, start: str) -> None:
    msg = error_of(text)
    assert msg.startswith(start), f"{case}: {msg}"


def test_bad_input_table_is_large_enough() -> None:
    assert len(CASES) >= 15


def test_base_text_is_valid() -> None:
    m = machine_from_text(BASE, "m.yaml")
    assert m.path is None and m.text == BASE
    assert m.param("sockets").line == 5
    assert m.param("topology.sockets").value == 2
    # left-out fields take their defaults, marked assumed with the default's range
    extra = m.parameters["dc_civac_node_extra_ns"]
    assert extra.kind == "assumed" and extra.line is None and extra.value == 2.0
    assert (extra.min, extra.max) == (0.0, 10.0)
    assert m.value("tlbi_repeat") == "unknown"
    assert m.unknown_features() == ["s2fwb", "tlbi_range", "tlbi_repeat", "tlbi_sync_erratum", "speculative_at"]
    assert "parameters.dc_civac_node_extra_ns" in m.assumed_fields()
    assert m.prices == {}


@pytest.mark.parametrize(
    ("case", "content", "suffix"),
    [
        (
            "binary file",
            b"schema_version: 1\nname: \x00\x01",
            ":2: expected a UTF-8 text file, got binary data",
        ),
        (
            "non-UTF-8 file",
            "schema_version: 1\nname: caf\xe9\n".encode("latin-1"),
            ":2: expected UTF-8 text",
        ),
        (
            "oversize file",
            b"#" * (1 << 20) + b"\n",
            ": expected a file of at most 1 MiB (1048576 bytes), got 1048577 bytes",
        ),
        ("empty file", b"", ":1: expected a YAML document, got an empty file"),
    ],
)
def test_bad_machine_files(tmp_path: Path, case: str, content: bytes, suffix: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_machine(p)
    assert str(info.value).startswith(f"{p}{suffix}"), case


def test_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "machines.yaml"
    d.mkdir()
    with pytest.raises(UserError) as info:
        load_machine(d)
    assert str(info.value) == f"{d}: expected a YAML file, got a directory"


def test_unreadable_machine_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "locked.yaml"
    p.write_text(BASE)

    def deny(file: object, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(io, "open", deny)  # the one reader (inputs.files) opens with io.open
    with pytest.raises(UserError) as info:
        load_machine(p)
    assert str(info.value) == f"{p}: expected a readable file, got permission denied"


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(mutate("  sockets:", "  sokets:"))
    with pytest.raises(UserError) as info:
        load_machine(p)
    assert str(info.value).startswith(f"{p}:5: topology.sokets: ")
    assert str(info.value).endswith("(did you mean 'sockets'?)")


# --- prices ---------------------------------------------------------------------------------


def test_explicit_prices() -> None:
    text = BASE + (
        "prices:\n"
        "  tlbi_is: {value: 700, source: assumed, min: 300, max: 1500}\n"
        '  hvc: {value: 140, source: "calibrated: hypercall loop"}\n'
    )
    m = machine_from_text(text, "m.yaml")
    assert list(m.prices) == ["hvc", "tlbi_is"]  # OPS order
    assert m.prices["hvc"].value == 140.0 and m.prices["hvc"].kind == "calibrated"
    assert m.param("prices.tlbi_is").line == 28
    assert m.value("tlbi_range") == "unknown"  # the feature, not the price


def test_op_derivation_covers_ops() -> None:
    assert set(OP_DERIVATION) == set(OPS)
    assert set(ONE_TO_ONE.values()) <= set(THETA_FIELDS)
    assert "dc_civac_line" not in ONE_TO_ONE and "tlbi_is" not in ONE_TO_ONE


# --- what-if --------------------------------------------------------------------------------


def test_replace_parameter() -> None:
    m = load_machine("d05")
    slow = m.replace_parameter("interconnect_latency_ns", 300)
    assert slow is not m and m.number("interconnect_latency_ns") == 150
    p = slow.parameters["interconnect_latency_ns"]
    assert p.value == 300.0 and p.kind == "assumed" and (p.min, p.max) == (300.0, 300.0)
    assert "what-if" in p.source and "was 150" in p.source
    assert tuple(slow.parameters) == THETA_FIELDS
    assert (
        slow.replace_parameter("parameters.hvc_ns", 90, "calibrated: lab").param_kind("hvc_ns")
        == "calibrated"
    )
    assert m.replace_parameter("cmo_outstanding", 25).number("cmo_outstanding") == 25.0
    priced = m.replace_parameter("prices.hvc", 120)
    assert priced.prices["hvc"].value == 120.0 and m.prices == {}


@pytest.mark.parametrize(
    ("name", "value", "start"),
    [
        ("interconect_latency_ns", 1.0, "expected a parameter"),
        ("hvc_ns", -5.0, "parameters.hvc_ns: expected a finite number >= 0, got -5.0"),
        ("hvc_ns", math.nan, "parameters.hvc_ns: expected a finite number >= 0, got nan"),
        ("sockets", 4.0, "expected a parameter"),
    ],
)
def test_replace_parameter_errors(name: str, value: float, start: str) -> None:
    with pytest.raises(UserError) as info:
        load_machine("d05").replace_parameter(name, value)
    assert str(info.value).startswith(start)


def test_replace_parameter_suggests() -> None:
    with pytest.raises(UserError, match=r"did you mean 'interconnect_latency_ns'\?"):
        load_machine("d05").replace_parameter("interconect_latency_ns", 1.0)


def test_what_if_keeps_cross_field_rules() -> None:
    with pytest.raises(UserError) as info:
        load_machine("d05").replace_parameter("interconnect_latency_ns", 0)
    assert "expected a latency > 0 on a 2-socket machine" in str(info.value)
    assert (
        load_machine("altra").replace_parameter("interconnect_latency_ns", 0).number("sockets") == 1
    )


def test_machine_is_frozen_and_serialisable() -> None:
    m = load_machine("d05")
    with pytest.raises(AttributeError):
        m.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.parameters["hvc_ns"] = m.parameters["isb_ns"]  # type: ignore[index]
    d = json.loads(json.dumps(m.as_dict()))
    assert d["parameters"]["interconnect_latency_ns"]["value"] == 150
    assert d["sha256"] == m.sha256
    assert isinstance(m, Machine)
    assert len(m.theta_bounds()) == len(THETA_FIELDS)


# --- schema, docs, table --------------------------------------------------------------------


def test_field_table_is_consistent() -> None:
    names = [(f.group, f.name) for f in FIELDS]
    assert len(names) == len(set(names))
    assert {f.group for f in FIELDS} == set(GROUPS)
    assert tuple(f.name for f in FIELDS if f.group == "parameters") == THETA_FIELDS
    assert all(f.unit == "ns" and f.ranged for f in FIELDS if f.group == "parameters")
    assert [f.name for f in FIELDS if f.group == "prices"] == list(OPS)
    assert SCHEMA_VERSION in CHANGES_SINCE


def test_json_schema_lists_every_field() -> None:
    schema = json.loads(json.dumps(json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    for f in FIELDS:
        entry = schema["properties"][f.group]["properties"][f.name]
        assert set(entry["required"]) == {"value", "source"}
        assert f.meaning in entry["description"]
        if f.required:
            assert f.name in schema["properties"][f.group]["required"]


def test_json_schema_accepts_bundled_and_rejects_bad() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from s2teardown.inputs.yamlio import load_yaml, load_yaml_text

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in MACHINES:
        data = json.loads(json.dumps(load_yaml(bundled_dir("machines") / f"{name}.yaml")))
        assert list(validator.iter_errors(data)) == [], name
    beyond_schema = {  # rules across fields, and number checks JSON cannot express
        "placement not summing to 1",
        "remote placement on one socket",
        "same-socket placement with one node per socket",
        "no interconnect on two sockets",
        "value outside its own range",
        "min above max",
        "float as int",
        "NaN",
        "infinity",
    }
    checked = 0
    for case, text, _start in CASES:
        if case in beyond_schema:
            continue
        try:
            data = json.loads(json.dumps(load_yaml_text(text, "m.yaml")))
        except UserError:
            continue  # refused by the YAML reader already
        assert list(validator.iter_errors(data)), case
        checked += 1
    assert checked >= 20


def test_machine_format_doc_is_generated() -> None:
    committed = (REPO / "docs" / "machine-format.md").read_text(encoding="utf-8")
    assert committed == machine_format_markdown(), (
        "docs/machine-format.md is stale: python -m s2teardown.inputs.machine.reference > docs/machine-format.md"
    )


def test_doc_mentions_every_field_and_formula() -> None:
    doc = machine_format_markdown()
    for f in FIELDS:
        assert f"`{f.name}`" in doc
    assert "2 · interconnect_latency_ns / cmo_outstanding" in doc
    assert "8.5 ns" in doc and "610 ns" in doc


# --- resources ------------------------------------------------------------------------------


def test_resolve_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d05 = bundled_dir("machines") / "d05.yaml"
    assert resolve_config("d05", "machines") == d05
    assert resolve_config("d05.yaml", "machines") == d05
    own = tmp_path / "mine.yaml"
    own.write_text("x: 1\n")
    assert resolve_config(own, "machines") == own
    # an existing file of the same name wins over the bundled one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d05.yaml").write_text("x: 1\n")
    assert resolve_config("d05.yaml", "machines") == Path("d05.yaml")
    assert resolve_config("d05", "machines") == d05


def test_resolve_config_unknown_name() -> None:
    with pytest.raises(UserError) as info:
        resolve_config("d5", "machines", flag="--machine")
    msg = str(info.value)
    assert msg.startswith("--machine: expected an existing file or a bundled machine name (")
    assert "d05" in msg and "graviton3" in msg
    assert msg.endswith("got 'd5', which is neither (did you mean 'd05'?)")
    with pytest.raises(UserError, match=r"^expected an existing file"):
        load_machine("no/such/file.yaml")


def test_bundled_dir_prefers_the_installed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert bundled_dir("machines") == REPO / "configs" / "machines"
    pkg = tmp_path / "site-packages" / "s2teardown"
    (pkg / "configs" / "machines").mkdir(parents=True)
    (pkg / "configs" / "machines" / "only.yaml").write_text("x: 1\n")
    monkeypatch.setattr(resources, "_PACKAGE_DIR", pkg)
    assert bundled_dir("machines") == pkg / "configs" / "machines"
    assert bundled_names("machines") == ["only"]
    assert bundled_names("nothing-here") == []
    with pytest.raises(ValueError):
        bundled_dir("../etc")
