"""Kernel versions as users type them -> the variant in force, worked by hand (issue 12).

The rows and the releases each one applies from (configs/variants.yaml, docs/model.md §13):

    v5.5   5.5            v5.9   5.9, 5.7.18+, 5.8.4+        v5.10  5.10
    v6.1   6.1, 5.15.154+ v6.2   6.2                         v6.6   6.6
    v6.9   6.9, 6.6.47+   v6.19  6.19                        v7.2   7.2 (newest)

A version takes the newest row that applies.  ``X.Y.0-N-flavour`` (Debian before 13, Ubuntu,
RHEL) does not carry the stable sublevel: it is read as X.Y.0, with a warning when a backport
inside the series would change the answer.
"""

from __future__ import annotations

import pytest

from s2teardown.errors import UserError
from s2teardown.features import calibrate as cal_mod
from s2teardown.inputs.variants import load_variants, parse_kernel

VS = load_variants()


# ----------------------------------------------------------------------------------------------
# parsing: one parser for --kernel and the measurements CSV


@pytest.mark.parametrize(("text", "release", "known"), [
    ("6.1", (6, 1, 0), True),  # a release: its .0
    ("6.1.192", (6, 1, 192), True),
    ("v6.6", (6, 6, 0), True),  # a git tag
    (" 6.6.47\n", (6, 6, 47), True),
    ("6.8.0-47-generic", (6, 8, 0), False),  # Ubuntu: ABI 47, sublevel not in the string
    ("6.1.0-57-cloud-arm64", (6, 1, 0), False),  # Debian 12: the real sublevel (192) is not there
    ("5.15.0-1050-aws", (5, 15, 0), False),  # Ubuntu's AWS kernel
    ("5.14.0-427.13.1.el9_4.aarch64", (5, 14, 0), False),  # RHEL: same convention
    ("6.12.117+deb13-cloud-arm64", (6, 12, 117), True),  # Debian 13 puts the sublevel there
    ("7.2.13+deb14-cloud-arm64", (7, 2, 13), True),
    ("6.1.112-122.189.amzn2023.aarch64", (6, 1, 112), True),  # Amazon Linux: real sublevel
    ("6.9.0-rc1", (6, 9, 0), True),  # a release candidate of 6.9, not an ABI name
    ("6.6.0-custom", (6, 6, 0), True),  # a local version, not an ABI number
])
def test_parse_kernel(text: str, release: tuple[int, int, int], known: bool) -> None:
    k = parse_kernel(text)
    assert k is not None and k.release == release and k.sublevel_known is known
    assert k.text == text.strip()


@pytest.mark.parametrize("text", ["six.eight", "6", "6.8x", "6.8.1.2", "", "v", "6..8", "-6.8"])
def test_parse_kernel_rejects(text: str) -> None:
    assert parse_kernel(text) is None


# ----------------------------------------------------------------------------------------------
# version -> variant, at every boundary the stable backports move

RESOLVE = [
    # v5.9's blockable gating: mainline 5.9; stable 5.7.18 and 5.8.4 ("Linux 5.7.18" / "Linux
    # 5.8.4" shortlogs: Will Deacon's two patches); 5.6.y never got it
    ("5.5", "v5.5"), ("5.6.19", "v5.5"), ("5.7.17", "v5.5"), ("5.7.18", "v5.9"), ("5.7.19", "v5.9"),
    ("5.8", "v5.5"), ("5.8.3", "v5.5"), ("5.8.4", "v5.9"), ("5.8.18", "v5.9"), ("5.9", "v5.9"),
    ("5.10", "v5.10"), ("5.10.200", "v5.10"),
    # v6.1's largest-block chunking: stable 5.15.154 ("Linux 5.15.154" shortlog, Oliver Upton)
    ("5.15.0", "v5.10"), ("5.15.150", "v5.10"), ("5.15.153", "v5.10"), ("5.15.154", "v6.1"),
    ("5.15.160", "v6.1"), ("6.0.19", "v5.10"), ("6.1", "v6.1"), ("6.1.192", "v6.1"),
    # v6.2: parallel faults, RCU-deferred table->block subtree free
    ("6.2", "v6.2"), ("6.5", "v6.2"), ("6.5.13", "v6.2"),
    # v6.9's table TLBIs: stable 6.6.47
    ("6.6", "v6.6"), ("v6.6", "v6.6"), ("6.6.46", "v6.6"), ("6.6.47", "v6.9"), ("6.6.120", "v6.9"),
    ("6.8", "v6.6"), ("6.8.12", "v6.6"), ("6.9", "v6.9"), ("6.18", "v6.9"),
    ("6.19", "v6.19"), ("7.0", "v6.19"), ("7.1.5", "v6.19"), ("7.2", "v7.2"),
    # uname -r strings
    ("6.8.0-47-generic", "v6.6"), ("6.1.0-57-cloud-arm64", "v6.1"),
    ("6.12.117+deb13-cloud-arm64", "v6.9"), ("7.2.13+deb14-cloud-arm64", "v7.2"),
    ("5.15.0-1050-aws", "v5.10"),
]


@pytest.mark.parametrize(("version", "name"), RESOLVE)
def test_version_to_variant(version: str, name: str) -> None:
    m = VS.match_kernel(version)
    assert m.variant.name == name
    assert VS.for_kernel(version).name == name  # the same answer through the old entry point


def test_ordinary_versions_carry_no_warning() -> None:
    for version, _ in RESOLVE:
        if version in ("5.15.0-1050-aws",):
            continue
        assert VS.match_kernel(version).warnings == (), version


def test_5_15_154_is_v5_10_plus_v6_1_chunking() -> None:
    # The v6.1 row is v5.10 with one change: the lock-break chunk of the unmap-like kinds is the
    # largest block.  So 5.15.154+ gets exactly that on top of v5.10, and nothing else.
    old, new = VS.for_kernel("5.15.153"), VS.for_kernel("5.15.154")
    assert (old.name, new.name) == ("v5.10", "v6.1")
    for kind, beh in new.behaviours.items():
        changed = {f for f in ("walk", "cmo", "leaf_tlbi", "table_tlbi", "final_flush", "resched",
                               "resched_when", "lock", "free")
                   if getattr(beh, f) != getattr(old.behaviours[kind], f)}
        assert changed == ({"resched"} if kind in ("unmap", "clear", "memslot", "reset") else set()), kind
        if changed:
            assert (old.behaviours[kind].resched, beh.resched) == ("top_level", "largest_block")


def test_5_8_4_gets_blockable_gating_only() -> None:
    old, new = VS.for_kernel("5.8.3"), VS.for_kernel("5.8.4")
    for kind in new.behaviours:
        want = "blockable" if kind in ("unmap", "clear") else "always"
        assert new.behaviours[kind].resched_when == want
        assert old.behaviours[kind].resched_when == "always"


def test_abi_name_with_a_backport_in_its_series_warns() -> None:
    # 5.15.0-1050-aws: the 5.15 stable sublevel is unknown; read as 5.15.0 (v5.10), and the
    # warning names the backport that would change it.
    m = VS.match_kernel("5.15.0-1050-aws")
    assert m.variant.name == "v5.10" and not m.version.sublevel_known
    (w,) = m.warnings
    assert "5.15.0-1050-aws" in w and "5.15.154" in w and "v6.1" in w and "v5.10" in w
    # 6.1.0-57: no modelled backport inside 6.1.y, every 6.1.y is v6.1: nothing to warn about
    assert VS.match_kernel("6.1.0-57-cloud-arm64").warnings == ()
    # 6.6.0-N would be ambiguous around 6.6.47
    (w,) = VS.match_kernel("6.6.0-28-generic").warnings
    assert "6.6.47" in w and "v6.9" in w


def test_newer_than_modelled_names_the_newest_row() -> None:
    m = VS.match_kernel("9.0")
    assert m.variant.name == "v7.2"
    (w,) = m.warnings
    assert w.startswith("kernel 9.0 is newer than the newest modelled behaviour, v7.2")
    assert VS.newer_than_modelled("9.0") == w
    assert VS.newer_than_modelled("7.3") is not None
    for same_series in ("7.2", "7.2.13+deb14-cloud-arm64", "6.19.4"):
        assert VS.newer_than_modelled(same_series) is None
    assert VS.newer_than_modelled("not a version") is None


@pytest.mark.parametrize("version", ["4.19", "4.19.0-26-arm64", "5.4.61"])
def test_older_than_modelled_is_an_input_error(version: str) -> None:
    with pytest.raises(UserError) as exc:
        VS.match_kernel(version)
    assert "from 5.5 on" in str(exc.value)


def test_bad_version_message_is_unchanged() -> None:
    with pytest.raises(UserError) as exc:
        VS.for_kernel("six.eight")
    assert str(exc.value) == "--kernel: expected a kernel version such as 6.8 or 6.6.47, got 'six.eight'"


# ----------------------------------------------------------------------------------------------
# the measurements CSV takes the same strings


def test_csv_kernel_column_takes_uname_strings(tmp_path) -> None:
    csv = tmp_path / "k.csv"
    rows = ["5.15.0-1050-aws", "5.15.160", "6.1.0-57-cloud-arm64", "6.12.117+deb13-cloud-arm64",
            "7.2.13+deb14-cloud-arm64", "v6.6", "5.8.4"]
    csv.write_text("vm,backing,event,kernel,seconds\n"
                   + "".join(f"8G,2M,exit,{k},0.001\n" for k in rows))
    ms, _, _ = cal_mod.read_measurements(csv, VS)
    assert [m.variant.name for m in ms] == ["v5.10", "v6.1", "v6.1", "v6.9", "v7.2", "v6.6", "v5.9"]
    assert cal_mod._kernel_version(" 6.1.0-57-cloud-arm64 ") == "6.1.0-57-cloud-arm64"


def test_backports_of_a_user_file_follow_the_same_rule(tmp_path) -> None:
    # A user's row based on v6.19 with a backport into 6.12.y: 6.12.50+ picks it, 6.12.49 not,
    # 6.13 not (another series), 6.20+ yes (its kernel).
    f = tmp_path / "mine.yaml"
    f.write_text('schema_version: 1\nvariants:\n  - name: mine\n    base: v6.19\n    kernel: "6.20"\n'
                 '    backports: ["6.12.50"]\n    title: "mine"\n')
    vs = load_variants(f)
    got = {v: vs.for_kernel(v).name for v in ("6.12.49", "6.12.50", "6.13", "6.20", "7.2")}
    assert got == {"6.12.49": "v6.9", "6.12.50": "mine", "6.13": "v6.9", "6.20": "mine", "7.2": "v7.2"}


def test_schema_lists_backports_and_the_new_values() -> None:
    from s2teardown.inputs.variants import variants_schema

    props = variants_schema()["properties"]["variants"]["items"]["properties"]
    assert props["backports"] == {"type": "array", "items": {"type": "string"}}
    assert props["block_retry"]["properties"]["free"] == {"enum": ["inline", "rcu"]}
    assert "read" in props["block_retry"]["properties"]["lock"]["enum"]
