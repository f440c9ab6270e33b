"""The strict YAML loader (s2teardown.inputs.yamlio) and the one-line UserError."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from s2teardown.errors import NothingComparable, UserError, describe
from s2teardown.inputs.yamlio import (
    MAX_BYTES,
    YamlList,
    YamlMap,
    did_you_mean,
    line_of,
    load_yaml,
    load_yaml_text,
    read_yaml,
    read_yaml_text,
    sha256_of,
    suggest,
)


def err_of(text: str, name: str = "f.yaml") -> str:
    with pytest.raises(UserError) as info:
        load_yaml_text(text, name)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- UserError ------------------------------------------------------------------------------


def test_user_error_renders_one_line_with_all_parts() -> None:
    e = UserError(
        "m.yaml", 3, "topology.sokets", "a topology field", "unknown key", "did you mean 'sockets'?"
    )
    assert (
        str(e)
        == "m.yaml:3: topology.sokets: expected a topology field, got unknown key (did you mean 'sockets'?)"
    )
    assert e.exit_code == 2


def test_user_error_omits_missing_parts() -> None:
    assert str(UserError("--vm", None, None, "a size such as 64G", "'lots'")) == (
        "--vm: expected a size such as 64G, got 'lots'"
    )
    assert str(UserError(None, None, "x", "1", "2")) == "x: expected 1, got 2"
    assert str(UserError(expected="a thing")) == "expected a thing"


def test_user_error_never_spans_lines() -> None:
    e = UserError("f", 1, None, "a\nb", "c\r\nd")
    assert "\n" not in str(e) and "\\n" in str(e)


def test_nothing_comparable_exit_code_and_replace_and_pickle() -> None:
    e = NothingComparable("base.json", None, "format_version", "2", "1")
    assert e.exit_code == 3 and isinstance(e, UserError)
    moved = e.replace(file="other.json", line=4)
    assert type(moved) is NothingComparable
    assert str(moved) == "other.json:4: format_version: expected 2, got 1"
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is NothingComparable and str(again) == str(e)


def test_describe() -> None:
    assert describe(True) == "true (a boolean)"
    assert describe(None) == "null (an empty value)"
    assert describe(float("nan")) == "nan"
    assert describe(float("-inf")) == "-inf"
    assert describe("x" * 100).endswith("...'")
    assert describe({}) == "a mapping" and describe([]) == "a list"


# --- values and line numbers ----------------------------------------------------------------


def test_plain_values_and_lines_at_every_depth() -> None:
    data = load_yaml_text(
        "a: 1\nb:\n  c:\n    - {d: 2.5}\n    - x\n  e: {f: true}\n",
        "f.yaml",
    )
    assert data == {"a": 1, "b": {"c": [{"d": 2.5}, "x"], "e": {"f": True}}}
    assert isinstance(data, YamlMap) and isinstance(data, dict)
    assert data.lines == {"a": 1, "b": 2}
    assert data["b"].lines == {"c": 3, "e": 6}
    assert isinstance(data["b"]["c"], YamlList) and data["b"]["c"].lines == [4, 5]
    assert data["b"]["c"][0].lines == {"d": 4}
    assert line_of(data["b"]["e"], "f") == 6
    assert line_of(data["b"]["c"], 1) == 5
    assert line_of({"plain": 1}, "plain") is None
    assert json.loads(json.dumps(data)) == data


def test_yaml_1_2_scalars() -> None:
    data = load_yaml_text(
        "[1, -2, 2.5, 1e-9, 1E3, .5, 1_000, 0x1F, 0o17, yes, no, on, 0777, ~, null, '', "
        "true, False, .inf, -.inf, .nan, 2001-01-01, '1', 12:30]",
        "f.yaml",
    )
    expected = [
        1,
        -2,
        2.5,
        1e-9,
        1000.0,
        0.5,
        1000,
        31,
        15,
        "yes",
        "no",
        "on",
        "0777",
        None,
        None,
        "",
    ]
    assert data[: len(expected)] == expected
    rest = data[len(expected) :]
    assert rest[0] is True and rest[1] is False
    assert rest[2] == math.inf and rest[3] == -math.inf and math.isnan(rest[4])
    assert rest[5:] == ["2001-01-01", "1", "12:30"]
    assert isinstance(data[4], float) and isinstance(data[6], int)


def test_bom_is_ignored() -> None:
    assert load_yaml_text("\ufeffa: 1", "f.yaml") == {"a": 1}


# --- rejected input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefix", "got"),
    [
        ("a: !!str x", "f.yaml:1: a: ", "tag '!!str'"),
        (
            "a: 1\nb: !!python/object:os.system x",
            "f.yaml:2: b: ",
            "tag '!!python/object:os.system'",
        ),
        (
            "!!python/object/apply:os.system [ls]",
            "f.yaml:1: expected",
            "tag '!!python/object/apply:os.system'",
        ),
        ("a:\n  b: !foo x", "f.yaml:2: a.b: ", "tag '!foo'"),
        ("a: ! x", "f.yaml:1: a: ", "tag '!'"),
        ("a: !!map {b: 1}", "f.yaml:1: a: ", "tag '!!map'"),
        ("a:\n  - 1\n  - !!int 2", "f.yaml:3: a[1]: ", "tag '!!int'"),
    ],
)
def test_tags_are_rejected(text: str, prefix: str, got: str) -> None:
    msg = err_of(text)
    assert msg.startswith(prefix), msg
    assert "YAML tags are not supported" in msg and msg.endswith(got)


def test_anchors_and_aliases_are_rejected() -> None:
    assert err_of("a: &x 1\nb: *x").startswith("f.yaml:1: a: expected a value written out")
    msg = err_of("a: 1\nb: *undefined")
    assert msg.startswith("f.yaml:2: b: ") and msg.endswith("got alias '*undefined'")
    assert "anchors and aliases are not supported" in msg
    assert err_of("a: 1\nb:\n  c: &big [1, 2]").endswith("got anchor '&big'")


def test_duplicate_keys_name_the_second_line() -> None:
    msg = err_of("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n")
    assert msg == "f.yaml:5: b.c: expected each key once, got a second 'c' (first on line 3)"
    assert err_of("x: 1\nx: 1").startswith("f.yaml:2: x: ")
    # 1 and 1.0 are the same key
    assert err_of("1: a\n1.0: b").startswith("f.yaml:2: ")


def test_complex_keys_are_rejected() -> None:
    assert err_of("? [a, b]\n: 1") == "f.yaml:1: expected a plain scalar mapping key, got a list"


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("", "f.yaml:1: expected a YAML document, got an empty file"),
        ("# only a comment\n\n", "f.yaml:1: expected a YAML document, got an empty file"),
        ("---\n...\n", "f.yaml:1: expected a YAML document, got an empty file"),
        ("a: [1, 2\nb: 3\n", "f.yaml:2: expected valid YAML, got a syntax error"),
        ("a: 1\n  b: 2\n", "f.yaml:2: expected valid YAML, got a syntax error"),
        ("a:\n\tb: 1\n", "f.yaml:2: expected valid YAML, got a syntax error"),
        (
            "a: 1\n---\nb: 2\n",
            "f.yaml:2: expected valid YAML, got a syntax error: expected a single document",
        ),
        ("a: 1\nb: 'x\x01'\n", "f.yaml:2: expected printable text, got character U+0001"),
        ("a: 1\n" + "[" * 200, "f.yaml"),
    ],
)
def test_bad_documents(text: str, prefix: str) -> None:
    assert err_of(text).startswith(prefix)


def test_deep_nesting_is_refused() -> None:
    msg = err_of("[" * 100 + "]" * 100)
    assert msg.startswith("f.yaml:1: expected nesting at most 64 levels deep")


# --- files ----------------------------------------------------------------------------------


def test_read_yaml_returns_text_and_sha256(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    raw = "a: 1  # é\n".encode()
    p.write_bytes(raw)
    doc = read_yaml(p)
    assert doc.data == {"a": 1} and doc.text == raw.decode() and doc.name == str(p)
    assert doc.sha256 == hashlib.sha256(raw).hexdigest() == sha256_of(p)
    assert load_yaml(str(p)) == {"a": 1}
    assert read_yaml_text(raw.decode(), "t").sha256 == doc.sha256


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as info:
        load_yaml(p)
    assert str(info.value) == f"{p}: expected an existing file, got no such file"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_yaml(tmp_path)
    assert str(info.value) == f"{tmp_path}: expected a YAML file, got a directory"


def test_oversize_file(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(UserError) as info:
        load_yaml(p)
    assert str(info.value) == (
        f"{p}: expected a file of at most 1 MiB (1048576 bytes), got {MAX_BYTES + 3} bytes"
    )
    with pytest.raises(UserError, match=r"^t: expected a file of at most 1 MiB"):
        load_yaml_text("#" * (MAX_BYTES + 1), "t")


def test_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"a: 1\nb: \x00\x01\x02")
    with pytest.raises(UserError) as info:
        load_yaml(p)
    assert (
        str(info.value)
        == f"{p}:2: expected a UTF-8 text file, got binary data (NUL byte at offset 8)"
    )


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("a: 1\nb: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError) as info:
        load_yaml(p)
    assert str(info.value) == f"{p}:2: expected UTF-8 text, got invalid byte 0xe9 at offset 11"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.yaml"
    p.write_text("a: 1\n")

    def deny(file: object, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(io, "open", deny)  # the one reader (inputs.files) opens with io.open
    with pytest.raises(UserError) as info:
        load_yaml(p)
    assert str(info.value) == f"{p}: expected a readable file, got permission denied"


def test_other_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "eio.yaml"
    p.write_text("a: 1\n")

    def broken(file: object, *args: object, **kwargs: object) -> object:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(io, "open", broken)
    with pytest.raises(UserError) as info:
        load_yaml(p)
    assert str(info.value) == f"{p}: expected a readable file, got input/output error"


# --- suggestions ----------------------------------------------------------------------------


def test_suggest() -> None:
    names = ["sockets", "cores_per_socket", "freq_ghz"]
    assert suggest("sokets", names) == "sockets"
    assert suggest("SOCKETS", names) == "sockets"
    assert suggest("zzz", names) is None
    assert suggest("x", []) is None
    assert did_you_mean("freq_hgz", names) == "did you mean 'freq_ghz'?"
    assert did_you_mean(42, names) is None


# --- property: whatever safe_dump writes, we read back ------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=True, width=64)
    | st.text(alphabet=st.characters(categories=["L"], max_codepoint=0x24F), max_size=8)
)
_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _values, min_size=1, max_size=5))
def test_round_trip_of_safe_dump(data: dict[str, object]) -> None:
    for style in (None, False, True):
        text = yaml.safe_dump(data, default_flow_style=style, allow_unicode=True)
        assert load_yaml_text(text, "p.yaml") == data


# ---------------------------------------------------------------------------------------------
# libyaml fast path: the same tree, the same refusals


def _tree(x: object) -> object:
    """Values and the line of every key and item (what error messages are built from)."""
    if isinstance(x, YamlMap):
        return ("map", x.line, dict(x.lines), {k: _tree(v) for k, v in x.items()})
    if isinstance(x, YamlList):
        return ("list", x.line, list(x.lines), [_tree(v) for v in x])
    return x


BUNDLED = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_fast_path_builds_the_same_tree(path: Path) -> None:
    from s2teardown.inputs import yamlio

    if yamlio._CParser is None:
        pytest.skip("PyYAML without libyaml")
    text = path.read_text()
    fast = yamlio._fast_compose(text, path.name)
    assert fast is not None
    loader = yamlio._StrictLoader(text, path.name)
    slow = loader.get_single_node()
    loader.dispose()
    assert _tree(yamlio._check_document(fast, path.name)) == _tree(yamlio._check_document(slow, path.name))


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n",  # anchor and alias
    "a: !!str 1\n",  # explicit tag
    "a: !custom 1\n",
    "a: [1\n",  # syntax error
    "a: 1\n---\nb: 2\n",  # two documents
    "a: 1\na: 2\n" + "x: " + "[" * 70 + "]" * 70 + "\n",  # nesting beyond the limit
])
def test_fast_path_declines_what_the_strict_loader_refuses(text: str) -> None:
    """The fast path never accepts a document the pure-Python loader refuses: it declines, and
    the pure-Python loader's one-line message is the one reported."""
    from s2teardown.inputs import yamlio

    if yamlio._CParser is None:
        pytest.skip("PyYAML without libyaml")
    if "[[" not in text:
        assert yamlio._fast_compose(text, "f.yaml") is None
    with pytest.raises(UserError):
        load_yaml_text(text, "f.yaml")
