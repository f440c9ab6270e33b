"""API and JSON names agree (issue 15): every per-entry number a JSON document carries is an
attribute of the same name on the object the API returns, so a script can move between them."""

from __future__ import annotations

import json

from click.testing import CliRunner

from s2teardown.cli import cli
from s2teardown.core.model import Breakdown
from s2teardown.features.compare import Comparison
from s2teardown.features.estimate import Estimate
from s2teardown.features.sweep import SweepResult

#: Keys that label an entry rather than carry one of its numbers.
LABELS = {"name", "title", "label", "machine", "variant", "vm_bytes", "backing", "event", "phases",
          "differs_most"}


def _json(*argv: str) -> dict:
    r = CliRunner().invoke(cli, [*argv, "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_estimate_json_names_are_breakdown_attributes() -> None:
    doc = _json("estimate", "--vm", "1G", "--machine", "d05", "--variants", "v5.5,P5")
    keys = set(doc["variants"][0]) - LABELS
    assert {"stage2_ns", "host_free_ns", "dominant_phase", "operations", "events"} <= keys
    # per-variant numbers are Breakdown attributes; the lock holds are the Estimate's (all variants)
    missing = sorted(k for k in keys if not hasattr(Breakdown, k) and k not in Estimate.__dataclass_fields__)
    assert not missing, missing
    assert {"host_ns", "end_to_end_ns", "wall_ns", "end_to_end_speedup"} <= keys


def test_compare_json_names_are_comparison_attributes() -> None:
    doc = _json("compare", "--vm", "1G", "--machine", "d05", "--machine", "altra")
    keys = (set(doc["entries"][0]) - LABELS) | {"most_different_phase", "same"}
    missing = sorted(k for k in keys if not hasattr(Comparison, k))
    assert not missing, missing


def test_sweep_json_names_are_sweep_result_attributes() -> None:
    doc = _json("sweep", "--vm", "1G,2G", "--machine", "d05", "--variants", "v5.5,P5")
    keys = set(doc["records"][0] if "records" in doc else doc["rows"][0]) - LABELS
    missing = sorted(k for k in keys if not hasattr(SweepResult, k))
    assert not missing, missing


def test_compare_names_what_every_entry_shares() -> None:
    # two machines, one variant: the columns are machine names, so the variant is said once
    doc = _json("compare", "--vm", "1G", "--machine", "d05", "--machine", "altra")
    assert doc["same"] == {"variant": "v5.5"} and [e["label"] for e in doc["entries"]] == ["d05", "altra"]
    r = CliRunner().invoke(cli, ["compare", "--vm", "1G", "--machine", "d05", "--machine", "altra"])
    assert "every entry: variant v5.5" in r.stdout
    r = CliRunner().invoke(cli, ["compare", "--vm", "1G", "--machine", "d05", "--variants", "v5.5,P5",
                                 "--format", "markdown"])
    assert "every entry: machine d05" in r.stdout
