"""Software prices that follow the machine (issue 13 item 4; docs/model.md §7.1).

Every expected number here is worked by hand from the formula
``price = cycles / (freq_ghz × ipc) + lines × dram_latency_ns`` with ``cycles = (D05 price −
lines × 120 ns) × 2.4 GHz``, not read back from the code.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2teardown.api import fleet_from_text, load_machine, plan
from s2teardown.inputs.machine.derive import CORE_CLASSES, SOFTWARE_COSTS, derived_price
from s2teardown.inputs.machine.fields import BY_GROUP
from s2teardown.inputs.machine.load import apply_sets


def test_the_d05_states_what_the_derivation_gives() -> None:
    # the anchor: the D05's stated prices are the derivation at its own core, clock and latency
    m = load_machine("d05")
    assert m.value("core_class") == "cortex-a72" and m.number("freq_ghz") == 2.4
    assert m.number("dram_latency_ns") == 120
    for name in SOFTWARE_COSTS:
        p = m.param(name)
        assert p.line is not None  # stated, not derived
        d = derived_price(name, float(BY_GROUP["parameters"][name].default), freq_ghz=2.4,
                          core_class="cortex-a72", dram_latency_ns=120.0)
        assert math.isclose(float(p.value), d, rel_tol=1e-12), name


def test_graviton3_prices_worked_by_hand() -> None:
    m = load_machine("graviton3")  # Neoverse V1 (ipc 1.6), 2.6 GHz, DRAM 120 ns
    # entry_visit: 1/32 line; cycles (10 − 3.75) × 2.4 = 15; 15 / (2.6 × 1.6) + 3.75
    assert m.number("entry_visit_ns") == pytest.approx(15 / 4.16 + 3.75)
    assert m.param("entry_visit_ns").kind == "derived"
    assert "15 cycles" in m.param("entry_visit_ns").source
    # host_page_free: half a line; cycles (150 − 60) × 2.4 = 216; 216 / 4.16 + 60 = 111.92…
    assert m.number("host_page_free_ns") == pytest.approx(216 / 4.16 + 60)
    # host_folio_free: 8 lines; cycles (2000 − 960) × 2.4 = 2496; 2496 / 4.16 + 960 = 1560
    assert m.number("host_folio_free_ns") == pytest.approx(1560.0)
    # the range is the D05 default's, scaled: entry_visit 5 … 40 around 10
    p = m.param("entry_visit_ns")
    assert p.min == pytest.approx(p.value * 0.5) and p.max == pytest.approx(p.value * 4.0)


def test_a_stated_price_wins_over_the_derivation() -> None:
    m = load_machine("kunpeng920")  # states entry_visit_ns from a measured walk; derives put_page
    assert m.param("entry_visit_ns").line is not None and m.number("entry_visit_ns") == 10
    # put_page: no line; cycles 20 × 2.4 = 48; TaiShan v110 ipc 1.1 at 2.6 GHz: 48 / 2.86
    assert m.number("put_page_ns") == pytest.approx(48 / 2.86)


def test_what_ifs_on_clock_and_latency_re_derive() -> None:
    m = load_machine("graviton3")
    faster = apply_sets(m, ["freq_ghz=3.2"])
    assert faster.number("entry_visit_ns") == pytest.approx(15 / (3.2 * 1.6) + 3.75)
    slower_dram = apply_sets(m, ["dram_latency_ns=200"])
    assert slower_dram.number("table_free_ns") == pytest.approx((300 - 120) * 2.4 / 4.16 + 200)
    # a price pinned by a what-if stays pinned when the clock then changes
    pinned = apply_sets(m, ["entry_visit_ns=9", "freq_ghz=3.2"])
    assert pinned.number("entry_visit_ns") == 9


@given(
    name=st.sampled_from(sorted(SOFTWARE_COSTS)),
    freq=st.floats(0.5, 5.0),
    lat=st.floats(30.0, 400.0),
    core=st.sampled_from(sorted(CORE_CLASSES)),
    k=st.floats(1.01, 3.0),
)
def test_derived_prices_are_positive_and_monotone(name: str, freq: float, lat: float, core: str,
                                                  k: float) -> None:
    anchor = float(BY_GROUP["parameters"][name].default)

    def price(f: float, ns: float) -> float:
        return derived_price(name, anchor, freq_ghz=f, core_class=core, dram_latency_ns=ns)

    base = price(freq, lat)
    assert math.isfinite(base) and base > 0
    assert price(freq * k, lat) < base  # a faster clock never costs more
    assert price(freq, lat * k) >= base  # a slower DRAM never costs less


FLEET = """\
schema_version: 1
name: four
machine: {machine}
kernel: ["6.6"]
teardowns_per_hour: 1000
concurrency: 1
event: exit
vm_sizes:
  - {{vm_bytes: 17179869184, weight: 1}}
backings:
  - {{leaf_bytes: 4096, weight: 1}}
"""


def test_plan_over_four_machines_gives_four_figures() -> None:
    # issue 13's acceptance: d05, altra, graviton3 and grace on v6.6 differ, each by its own
    # derived prices (d05 stated, the other three derived from their core class, clock, DRAM)
    cpu = {}
    for name in ("d05", "altra", "graviton3", "grace"):
        p = plan(fleet_from_text(FLEET.format(machine=name)))
        cpu[name] = float(p.cpu_seconds_per_hour[0])
    assert len({round(v, 6) for v in cpu.values()}) == 4, cpu
    # the V2 at 3.1 GHz (grace) is cheaper per teardown than the V1 at 2.6 GHz (graviton3),
    # which is cheaper than the A72 at 2.4 GHz (d05)
    assert cpu["grace"] < cpu["graviton3"] < cpu["d05"]
