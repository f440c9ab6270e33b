"""Ranges and sensitivity (s2teardown.features.uncertainty): the linear form reproduces the estimate,
sampling is one matrix product with ordered, reproducible percentiles, and the elasticities
are exact."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from s2teardown.core.vocabulary import PHASE_INDEX, PHASES, STAGE2_PHASES
from s2teardown.errors import UserError
from s2teardown.features import uncertainty as u
from s2teardown.features.estimate import estimate
from s2teardown.inputs.machine import THETA_FIELDS, Machine, load_machine
from s2teardown.inputs.variants import load_variants
from s2teardown.inputs.workload import Workload
from s2teardown.render import uncertainty as views

GIB = 1 << 30
MIB = 1 << 20


@pytest.fixture(scope="module")
def variants() -> list:
    return list(load_variants().variants)


def _est(machine: Machine, variants: list, **kw: object):
    w = Workload(vm_bytes=int(kw.pop("vm", 16 * GIB)), **kw)  # type: ignore[arg-type]
    return estimate(machine, variants, w, with_segments=False)


def _collapsed(m: Machine) -> Machine:
    """Every ranged value made a point (min = max = value)."""
    for f in THETA_FIELDS:
        m = m.replace_parameter(f, m.number(f))
    m = m.replace_parameter("cmo_outstanding", m.number("cmo_outstanding"))
    for op in list(m.prices):
        m = m.replace_parameter(f"prices.{op}", float(m.prices[op].value))
    return m


@pytest.mark.parametrize("machine", ["d05", "grace", "emag", "thunderx", "kunpeng920"])
@pytest.mark.parametrize("backing", [((2 * MIB, 100.0),), ((4096, 100.0),),
                                     ((2 * MIB, 60.0), (4096, 40.0))])
def test_linear_form_reproduces_the_estimate(variants, machine, backing) -> None:
    m = load_machine(machine)
    e = _est(m, variants, backing=backing, mapped=0.7)
    form = u.linear_form(e.breakdown, e.prices, m)
    np.testing.assert_allclose(form.times(), e.breakdown.time_ns, rtol=1e-12, atol=1e-6)


def test_linear_form_with_explicit_prices_and_placement(variants) -> None:
    from s2teardown.core.prices import Placement

    m = load_machine("d05").replace_parameter("prices.hvc", 140.0)
    m = m.replace_parameter("prices.dc_civac_line", 9.0)
    e = _est(m, variants, backing=((4096, 100.0),), placement=Placement(0.5, 0.0, 0.5))
    form = u.linear_form(e.breakdown, e.prices, m)
    assert "prices.hvc" in form.terms and "prices.dc_civac_line" in form.terms
    assert u.RATIO_TERM not in form.terms  # the line is an explicit price: no cmo term
    np.testing.assert_allclose(form.times(), e.breakdown.time_ns, rtol=1e-12, atol=1e-6)


def test_percentiles_are_ordered_reproducible_and_report_the_seed(variants) -> None:
    e = _est(load_machine("d05"), variants, backing=((4096, 100.0),))
    a = u.monte_carlo(e, 2000, seed=7)
    b = u.monte_carlo(e, 2000, seed=7)
    c = u.monte_carlo(e, 2000, seed=8)
    assert a == b and a != c
    assert a["seed"] == 7 and a["samples"] == 2000 and a["distribution"] == "triangular"
    for v in a["variants"]:
        for cell in [*v["phases"].values(), v[u.TOTAL]]:
            assert cell["p5_ns"] <= cell["p50_ns"] <= cell["p95_ns"]
            assert cell["p5_ns"] >= 0
    # the total is sampled as its own row, not the sum of the phases' percentiles
    v0 = a["variants"][0]
    assert v0[u.TOTAL]["p95_ns"] < sum(v0["phases"][p]["p95_ns"] for p in STAGE2_PHASES)
    names = {p["name"] for p in a["parameters"]}
    assert "cmo_outstanding" in names and "interconnect_latency_ns" in names


def test_collapsed_ranges_give_the_typical_estimate(variants) -> None:
    m = _collapsed(load_machine("d05").replace_parameter("prices.hvc", 140.0))
    e = _est(m, variants, backing=((2 * MIB, 50.0), (4096, 50.0)))
    mc = u.monte_carlo(e, 500, seed=1)
    assert mc["parameters"] == []
    for v, name in enumerate(e.breakdown.variants):
        entry = mc["variants"][v]
        assert entry["name"] == name
        for phase in PHASES:
            want = float(e.breakdown.time_ns[0, v, PHASE_INDEX[phase]])
            cell = entry["phases"][phase]
            for k in ("p5_ns", "p50_ns", "p95_ns", "typical_ns", "mean_ns"):
                assert cell[k] == pytest.approx(want, rel=1e-12, abs=1e-9)
        assert entry[u.TOTAL]["p50_ns"] == pytest.approx(float(e.breakdown.stage2_ns[0, v]),
                                                          rel=1e-12)


def test_samples_cover_the_range_and_typical_within(variants) -> None:
    m = load_machine("d05")
    th = u.sample_theta(m, 20_000, seed=3)
    assert th.shape == (20_000, len(THETA_FIELDS))
    lo = np.array([b[0] for b in m.theta_bounds()])
    hi = np.array([b[1] for b in m.theta_bounds()])
    assert np.all(th >= lo) and np.all(th <= hi)
    # triangular: the mode is the typical value; the sample median lies between min and max
    e = _est(m, variants)
    form = u.linear_form(e.breakdown, e.prices, m)
    draws, _ = u.sample_parameters(form, 20_000, seed=3)
    np.testing.assert_array_equal(draws[:, : len(THETA_FIELDS)], th)  # θ drawn first, same seed


@pytest.mark.parametrize("dist", ["uniform", "loguniform"])
def test_other_distributions(variants, dist) -> None:
    e = _est(load_machine("d05"), variants)
    mc = u.monte_carlo(e, 1000, seed=1, distribution=dist)
    assert mc["distribution"] == dist
    if dist == "loguniform":  # dc_civac_node_extra_ns has min 0 on the d05
        assert any("dc_civac_node_extra_ns" in n and "uniformly" in n for n in mc["notes"])
    for v in mc["variants"]:
        assert v[u.TOTAL]["p5_ns"] <= v[u.TOTAL]["p50_ns"] <= v[u.TOTAL]["p95_ns"]


@pytest.mark.parametrize(("kw", "flag"), [({"n": 0}, "--samples"), ({"n": 1.5}, "--samples"),
                                          ({"n": 10, "distribution": "normal"}, "--distribution"),
                                          ({"n": 10, "seed": -1}, "--seed")])
def test_bad_sampling_arguments_are_one_line_user_errors(variants, kw, flag) -> None:
    e = _est(load_machine("d05"), variants, vm=GIB)
    with pytest.raises(UserError) as exc:
        u.monte_carlo(e, **kw)  # type: ignore[arg-type]
    assert str(exc.value).startswith(flag + ":") and "\n" not in str(exc.value)
    assert exc.value.exit_code == 2


def test_many_scenarios_in_blocks_match_one_by_one(variants) -> None:
    """sample_percentiles on a multi-scenario breakdown equals per-scenario runs (blocks)."""
    from s2teardown.features.estimate import evaluate_workloads, machine_inputs

    m = load_machine("d05")
    ws = [Workload(vm_bytes=s * GIB, backing=((2 * MIB, 100.0),)) for s in (1, 2, 4)]
    b = evaluate_workloads(m, variants[:3], ws)
    prices = machine_inputs(m)[0].prices
    form = u.linear_form(b, prices, m)
    pct, mean, _ = u.sample_percentiles(form, 300, seed=5)
    assert pct.shape == (3, 3, 3, len(PHASES) + 1)
    for s, w in enumerate(ws):
        e = estimate(m, variants[:3], w, with_segments=False)
        f1 = u.linear_form(e.breakdown, e.prices, m)
        p1, m1, _ = u.sample_percentiles(f1, 300, seed=5)
        np.testing.assert_allclose(pct[:, s], p1[:, 0], rtol=1e-12)
        np.testing.assert_allclose(mean[s], m1[0], rtol=1e-12)


# --- sensitivity --------------------------------------------------------------------------


def test_elasticities_over_theta_sum_to_one_without_explicit_prices(variants) -> None:
    e = _est(load_machine("d05"), variants, backing=((4096, 100.0),))
    s = u.sensitivity(e)
    for v in s["variants"]:
        el = v["elasticity"]
        assert sum(el[f] for f in THETA_FIELDS) == pytest.approx(1.0, abs=1e-12)
        assert v["explicit_price_share"] == pytest.approx(0.0)
        # cmo_outstanding only divides the cross-socket share of a line
        assert el["cmo_outstanding"] <= 0.0
        assert v["assumed_share"] == pytest.approx(1.0)  # every D05 parameter is assumed
        assert sum(v["share_by_kind"].values()) == pytest.approx(1.0)


def test_elasticities_with_explicit_prices_sum_to_the_share_not_priced(variants) -> None:
    m = load_machine("d05").replace_parameter("prices.hvc", 140.0,
                                              source="sourced: a hypercall loop")
    e = _est(m, variants, backing=((4096, 100.0),))
    s = u.sensitivity(e)
    for v in s["variants"]:
        el = v["elasticity"]
        theta_sum = sum(el[f] for f in THETA_FIELDS)
        assert theta_sum == pytest.approx(1.0 - v["explicit_price_share"], abs=1e-12)
        assert theta_sum + el["prices.hvc"] == pytest.approx(1.0, abs=1e-12)
        if v["total_ns"] and el["prices.hvc"]:
            assert v["share_by_kind"]["sourced"] == pytest.approx(el["prices.hvc"])
            assert v["assumed_share"] < 1.0


@pytest.mark.parametrize("param", ["dc_civac_local_ns", "interconnect_latency_ns", "hvc_ns",
                                   "cmo_outstanding", "put_page_ns"])
def test_elasticity_matches_a_finite_difference(variants, param) -> None:
    m = load_machine("d05")
    e = _est(m, variants, backing=((4096, 100.0),))
    s = u.sensitivity(e)
    h = 1e-6
    m2 = m.replace_parameter(param, m.number(param) * (1 + h))
    e2 = _est(m2, variants, backing=((4096, 100.0),))
    t1, t2 = e.breakdown.stage2_ns[0], e2.breakdown.stage2_ns[0]
    for v, entry in enumerate(s["variants"]):
        fd = (np.log(t2[v]) - np.log(t1[v])) / np.log1p(h)
        assert entry["elasticity"][param] == pytest.approx(fd, abs=1e-5)


def test_sensitivity_of_host_free_and_bad_total(variants) -> None:
    e = _est(load_machine("d05"), variants)
    # 16 GiB of THPs at exit: 8,192 THPs zapped (10 + 10 + 20 ns) and freed (2,000 ns);
    # 8,192 deposited + 16 PMD + 1 PUD table pages freed (300 ns): the folio frees' share is
    # the elasticity of host_folio_free_ns, in the host free and in the whole host side
    # (model version 6: + one flush_tlb_mm for the 17 tables the full-mm gather frees,
    # dsb_ishst 10 + tlbi_is 610 + dsb_ish 20 = 640 ns, in host_zap)
    folios, tables, zaps = 8192 * 2000, (8192 + 16 + 1) * 300, 8192 * 40 + 640
    s = u.sensitivity(e, total="host_free")
    assert s["variants"][0]["elasticity"]["host_folio_free_ns"] == pytest.approx(folios / (folios + tables))
    s = u.sensitivity(e, total="host")
    assert s["variants"][0]["elasticity"]["host_folio_free_ns"] == pytest.approx(
        folios / (folios + tables + zaps))
    with pytest.raises(UserError):
        u.sensitivity(e, total="stage3")


# --- views --------------------------------------------------------------------------------


def _render(group: object) -> str:
    buf = io.StringIO()
    Console(file=buf, width=300, color_system=None).print(group)
    return buf.getvalue()


def test_views_render(variants) -> None:
    e = _est(load_machine("d05"), variants[:3])
    mc = u.monte_carlo(e, 1000, seed=2)
    text = _render(views.render_samples(mc))
    assert "seed 2" in text and "Stage-2 total" in text and "p5–p95" in text
    s = u.sensitivity(e)
    text = _render(views.sensitivity_table(s, top=5))
    assert "dc_civac_local_ns" in text and "resting on assumed values" in text
    csv_text = views.samples_csv(mc)
    assert csv_text.splitlines()[0].startswith("variant,phase,typical_ns,mean_ns,p5_ns,p50_ns")
    assert len(csv_text.splitlines()) == 1 + 3 * (len(PHASES) + 1)
    assert "assumed_share" in views.sensitivity_csv(s)
    assert "| phase |" in views.samples_markdown(mc)
    assert "**resting on assumed values**" in views.sensitivity_markdown(s)
