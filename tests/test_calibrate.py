"""Calibration (s2teardown.features.calibrate, `s2teardown calibrate`): measurements generated from a
known parameter vector with noise (fixed seed) are fitted back; the parameters the data
determine are recovered inside their reported intervals, the others are named and kept at
their priors; the written machine file loads; bad CSVs are one-line errors with exit 2."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from s2teardown import cli
from s2teardown.errors import UserError
from s2teardown.features import calibrate as cal_mod
from s2teardown.inputs.machine import THETA_FIELDS, load_machine
from s2teardown.inputs.variants import load_variants
from s2teardown.inputs.workload import Workload

pytest.importorskip("scipy")

GIB = 1 << 30
MIB = 1 << 20
BACKINGS = {"2M": ((2 * MIB, 100.0),), "4K": ((4096, 100.0),),
            "2M:50,4K:50": ((2 * MIB, 50.0), (4096, 50.0))}
#: Parameters these measurements determine on the d05 (relative noise 1%), and their truth.
TRUTH = {"interconnect_latency_ns": 105.0, "tlbi_per_pe_ns": 3.75, "entry_visit_ns": 15.0,
         "entry_clear_ns": 13.0, "put_page_ns": 14.0, "dsb_ishst_ns": 7.0}
NOISE = 0.01
SEED = 20240601


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _grid() -> list[tuple[str, str, str, str, float]]:
    return list(itertools.product(("1G", "4G"), BACKINGS, ("v5.5", "P5", "v5.10"),
                                  ("exit", "munmap"), (1.0, 0.5)))


@pytest.fixture(scope="module")
def setup() -> dict:
    m = load_machine("d05")
    vs = load_variants()
    rows = []
    for i, (vm, back, var, ev, mapped) in enumerate(_grid()):
        w = Workload(vm_bytes=int(vm[:-1]) * GIB, backing=BACKINGS[back], event=ev, mapped=mapped)
        rows.append(cal_mod.Measurement(i + 2, w, vs.lookup(var), 1.0, False,
                                        f"{vm} {back} {ev} {var} mapped {mapped}"))
    d = cal_mod.design(m, rows)
    truth = np.array(m.theta())
    for k, v in TRUTH.items():
        truth[THETA_FIELDS.index(k)] = v
    rng = np.random.default_rng(SEED)
    t = (d.a @ truth + d.fixed) * (1.0 + NOISE * rng.standard_normal(len(rows)))
    return {"machine": m, "rows": rows, "design": d, "truth": truth, "t": t,
            "labels": [(r.line, r.label) for r in rows]}


def test_design_rows_reproduce_the_estimate(setup) -> None:
    """A θ + fixed at the prior equals each row's modelled Stage-2 time."""
    from s2teardown.features.estimate import estimate

    m, d = setup["machine"], setup["design"]
    prior = d.a @ np.array(m.theta()) + d.fixed
    for i in (0, 7, 30, 71):
        r = setup["rows"][i]
        e = estimate(m, [r.variant], r.workload, with_segments=False)
        assert prior[i] == pytest.approx(float(e.breakdown.stage2_ns[0, 0]), rel=1e-12)


def test_recovers_identifiable_parameters_within_their_intervals(setup) -> None:
    d = cal_mod.Design(setup["design"].a, setup["design"].fixed, setup["t"])
    c = cal_mod.fit(setup["machine"], d, setup["labels"], confidence=0.99)
    fitted = {f.name: f for f in c.fitted}
    assert set(TRUTH) <= set(fitted), sorted(fitted)
    for f in c.fitted:
        want = float(setup["truth"][THETA_FIELDS.index(f.name)])
        assert f.lo <= want <= f.hi, (f.name, f.lo, f.value, f.hi, want)
        assert f.lo <= f.value <= f.hi
    for name, want in TRUTH.items():  # and the prior was wrong by 30-50%
        assert fitted[name].prior != pytest.approx(want, rel=0.2)
    assert c.dof == len(setup["rows"]) - len(c.fitted)
    assert c.sigma == pytest.approx(NOISE, rel=0.35)  # relative residual ≈ the noise
    assert c.condition <= cal_mod.MAX_CONDITION
    # the calibrated model fits the rows to about the noise
    rel = np.array([abs(r.residual_rel) for r in c.rows])
    assert rel.max() < 5 * NOISE


def test_names_the_parameters_the_data_cannot_separate(setup) -> None:
    d = cal_mod.Design(setup["design"].a, setup["design"].fixed, setup["t"])
    c = cal_mod.fit(setup["machine"], d, setup["labels"], confidence=0.99)
    why = {u.name: u.reason for u in c.unidentified}
    # every TLB-flush call has one of each: on one machine (fixed PE count) they move together
    for name in ("tlbi_base_ns", "dsb_ish_ns", "sysreg_write_ns"):
        assert why[name].startswith("cannot be separated from"), why[name]
    # the D05's line cost: local, other-node and cross-socket always come in the same mix here
    assert "cannot be separated" in why["dc_civac_node_extra_ns"]
    # nothing in these rows runs them
    for name in ("host_page_free_ns", "host_folio_free_ns", "tlbi_range_extra_ns"):
        assert why[name].startswith("no measurement exercises it")
    assert set(why) | {f.name for f in c.fitted} == set(THETA_FIELDS)
    for name in why:  # kept at the prior
        assert c.theta[name] == setup["machine"].number(name)


def test_selected_parameters_only(setup) -> None:
    """With --params, the others stay at their priors (their time is subtracted first)."""
    m, d0 = setup["machine"], setup["design"]
    truth = np.array(m.theta())
    truth[THETA_FIELDS.index("dc_civac_local_ns")] = 6.5
    truth[THETA_FIELDS.index("tlbi_base_ns")] = 250.0
    rng = np.random.default_rng(1)
    t = (d0.a @ truth + d0.fixed) * (1.0 + NOISE * rng.standard_normal(len(setup["rows"])))
    c = cal_mod.fit(m, cal_mod.Design(d0.a, d0.fixed, t), setup["labels"],
                    params=["dc_civac_local_ns", "tlbi_base_ns"], confidence=0.99)
    got = {f.name: f for f in c.fitted}
    assert set(got) == {"dc_civac_local_ns", "tlbi_base_ns"}
    assert got["dc_civac_local_ns"].lo <= 6.5 <= got["dc_civac_local_ns"].hi
    assert got["tlbi_base_ns"].lo <= 250.0 <= got["tlbi_base_ns"].hi
    assert c.candidates == ("dc_civac_local_ns", "tlbi_base_ns")
    for f in THETA_FIELDS:
        if f not in got:
            assert c.theta[f] == m.number(f)


def test_too_few_rows_is_named(setup) -> None:
    d0 = setup["design"]
    idx = [0, 12, 24]
    d = cal_mod.Design(d0.a[idx], d0.fixed[idx], setup["t"][idx])
    c = cal_mod.fit(setup["machine"], d, [setup["labels"][i] for i in idx])
    assert len(c.fitted) <= 2 and c.dof >= 1
    assert any("not enough rows" in u.reason for u in c.unidentified)


# --- the CLI, end to end ------------------------------------------------------------------


def _write_csv(path: Path, setup: dict, idx: list[int], header: str | None = None) -> None:
    lines = [header or "vm,backing,event,variant,mapped,seconds,note"]
    for i in idx:
        vm, back, var, ev, mapped = _grid()[i]
        lines.append(f'{vm},"{back}",{ev},{var},{mapped},{float(setup["t"][i]) / 1e9!r},synthetic')
    path.write_text("# synthetic: generated from a known parameter vector with 1% noise\n"
                    + "\n".join(lines) + "\n")


def test_cli_calibrate_writes_a_machine_that_loads(setup, capsys, tmp_path) -> None:
    csv = tmp_path / "measurements.csv"
    _write_csv(csv, setup, list(range(len(_grid()))))
    out = tmp_path / "d05-mine.yaml"
    code, stdout, err = run(capsys, "calibrate", "--machine", "d05", str(csv), "-o", str(out),
                            "--date", "2026-01-02", "--confidence", "0.99")
    assert code == 0, err
    assert "kept at their prior values" in stdout and "residuals per row" in stdout
    m0 = load_machine("d05")
    m1 = load_machine(out)
    text = out.read_text()
    assert text.startswith("# calibrated by s2teardown calibrate from measurements.csv")
    assert "# Huawei D05" in text  # the original comments are kept
    sha = cal_mod.hashlib.sha256(csv.read_bytes()).hexdigest()
    fitted = [f for f in THETA_FIELDS if m1.param_kind(f) == "calibrated"]
    assert set(TRUTH) <= set(fitted)
    for f in THETA_FIELDS:
        p0, p1 = m0.parameters[f], m1.parameters[f]
        if f in fitted:
            assert p1.source == f"calibrated: from measurements.csv (sha256 {sha}) on 2026-01-02"
            assert p1.min is not None and p1.max is not None
            assert p1.min <= float(p1.value) <= p1.max
            want = float(setup["truth"][THETA_FIELDS.index(f)])
            assert p1.min <= want * (1 + 1e-5) and want * (1 - 1e-5) <= p1.max
        else:
            assert (p1.value, p1.source, p1.min, p1.max) == (p0.value, p0.source, p0.min, p0.max)
    for g in ("topology", "features", "placement", "prices"):
        assert {n: p.value for n, p in m0.section(g).items()} == \
               {n: p.value for n, p in m1.section(g).items()}
    assert m1.name == m0.name


def test_cli_calibrate_json_and_report_only(setup, capsys, tmp_path) -> None:
    import json

    csv = tmp_path / "m.csv"
    _write_csv(csv, setup, list(range(0, len(_grid()), 2)))
    code, stdout, err = run(capsys, "calibrate", "--machine", "d05", str(csv), "--format", "json",
                            "--params", "entry_visit_ns,put_page_ns")
    assert code == 0, err
    doc = json.loads(stdout)
    assert {f["name"] for f in doc["fitted"]} <= {"entry_visit_ns", "put_page_ns"}
    assert doc["measurements"]["sha256"] == cal_mod.hashlib.sha256(csv.read_bytes()).hexdigest()
    assert len(doc["rows"]) == len(range(0, len(_grid()), 2)) and doc["output"] is None
    assert not list(tmp_path.glob("*.yaml"))


def test_default_parameter_absent_from_the_file_is_inserted(setup, tmp_path) -> None:
    """A fitted parameter the machine file leaves to its default is added to `parameters:`."""
    m = load_machine("d05")
    text = "\n".join(line for line in (m.text or "").splitlines()
                     if not line.lstrip().startswith("resched_point_ns:")
                     and "cond_resched_lock() without" not in line) + "\n"
    path = tmp_path / "d05-short.yaml"
    path.write_text(text)
    m2 = load_machine(path)
    assert m2.parameters["resched_point_ns"].line is None  # a default now
    c = cal_mod.Calibration(
        fitted=(cal_mod.FittedParameter("resched_point_ns", 20.0, "assumed", 5.0, 200.0, 31.5,
                                        1.0, 29.0, 34.0, False),),
        unidentified=(), theta={}, rows=(), condition=1.0, dof=3, sigma=0.01,
        weights="relative", confidence=0.95, candidates=("resched_point_ns",))
    out = cal_mod.calibrated_machine_text(m2, c, "x.csv", "0" * 64, "2026-01-01")
    m3 = load_machine_text(out)
    assert m3.parameters["resched_point_ns"].value == 31.5
    assert m3.parameters["resched_point_ns"].kind == "calibrated"
    assert "# Huawei D05" in out


def load_machine_text(text: str):
    from s2teardown.inputs.machine import machine_from_text

    return machine_from_text(text, "<test>")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "needle"), [
    ("vm,backing,event,variant\n64G,2M,exit,v5.5\n", "no column 'seconds'"),
    ("backing,event,variant,seconds\n2M,exit,v5.5,9\n", "no column 'vm' or 'vm_bytes'"),
    ("vm,backing,event,variant,seconds\n64G,2M,exit,v5.5,fast\n", ":2: seconds: expected a pos"),
    ("vm,backing,event,variant,seconds\n64G,2M,exit,v5.5,-1\n", ":2: seconds: expected a pos"),
    ("vm,backing,event,variant,secnds\n64G,2M,exit,v5.5,1\n", "did you mean 'seconds'"),
    ("vm,backing,event,variant,seconds\n64G,2M,exit,v9.9,1\n", ":2: variant: expected a variant"),
    ("vm,backing,event,kernel,seconds\n64G,2M,exit,2.6.32,1\n", ":2: kernel: expected"),
    ("vm,backing,event,variant,seconds\n64G,2M,exti,v5.5,1\n", "did you mean 'exit'"),
    ("vm,backing,event,variant,seconds\nlots,2M,exit,v5.5,1\n", ":2: vm: expected a size"),
    ("vm,backing,event,variant,seconds\n64G,3M,exit,v5.5,1\n", ":2: backing:"),
    ("vm,backing,event,variant,seconds\n64G,2M,exit,v5.5\n", ":2: expected 5 cells"),
    ("vm,backing,event,variant,seconds\n", "expected at least one measurement row"),
    ("", "an empty file"),
    ("vm,vm,backing,event,variant,seconds\n", "vm: expected each column once"),
    ("vm,backing,event,variant,kernel,seconds\n64G,2M,exit,v5.5,6.8,1\n", "got both"),
])
def test_csv_errors_are_one_line_exit_2(capsys, tmp_path, content, needle) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    code, out, err = run(capsys, "calibrate", "--machine", "d05", str(csv))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s2teardown: error: "), err
    assert needle in lines[0], lines[0]
    assert str(csv) in lines[0]


def test_kernel_column_takes_a_uname(tmp_path) -> None:
    csv = tmp_path / "k.csv"
    csv.write_text("vm,backing,event,kernel,seconds,host_free_included\n"
                   "8G,2M,exit,6.8.0-47-generic,0.001,false\n8G,4K,munmap,5.5.0,2.5,yes\n")
    ms, sha, _ = cal_mod.read_measurements(csv, load_variants())
    assert [m.variant.name for m in ms] == ["v6.6", "v5.5"]
    assert [m.host_free_included for m in ms] == [False, True]
    assert len(sha) == 64


def test_bad_params_and_missing_file(capsys, tmp_path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("vm,backing,event,variant,seconds\n1G,2M,exit,v5.5,0.2\n")
    code, _, err = run(capsys, "calibrate", "--machine", "d05", str(csv), "--params", "hvc")
    assert code == 2 and "--params: expected physical parameter names" in err
    assert "did you mean 'hvc_ns'" in err
    code, _, err = run(capsys, "calibrate", "--machine", "d05", str(tmp_path / "none.csv"))
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1


def test_missing_scipy_is_a_one_line_exit_2(capsys, tmp_path, monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *a: object, **k: object):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real(name, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(cal_mod.importlib, "import_module", fake)
    csv = tmp_path / "m.csv"
    csv.write_text("vm,backing,event,variant,seconds\n1G,2M,exit,v5.5,0.2\n")
    code, _, err = run(capsys, "calibrate", "--machine", "d05", str(csv))
    assert code == 2
    assert err.strip() == ("s2teardown: error: calibrate: expected scipy for the NNLS fit (install "
                           "the extra: pip install 's2teardown[fit]'), got no module named 'scipy'")


def test_nothing_identifiable_is_an_error(setup) -> None:
    d0 = setup["design"]
    with pytest.raises(UserError) as exc:
        cal_mod.fit(setup["machine"], cal_mod.Design(d0.a, d0.fixed, setup["t"]),
                    setup["labels"], params=["host_page_free_ns"])
    assert "none can be fitted" in str(exc.value)


def test_a_clean_fit_raises_no_flag(setup) -> None:
    d = cal_mod.Design(setup["design"].a, setup["design"].fixed, setup["t"])
    c = cal_mod.fit(setup["machine"], d, setup["labels"], confidence=0.99)
    assert c.diagnoses == ()  # 1% noise, parameters within 2× of their priors


def test_a_fixed_cost_per_measurement_is_named(setup) -> None:
    # every measurement also carries 200 ms the model does not count (the VMM's own exit):
    # the rows run from ~1 ms to seconds, so no parameter can absorb a constant
    d0 = setup["design"]
    t = setup["t"] + 200e6
    c = cal_mod.fit(setup["machine"], cal_mod.Design(d0.a, d0.fixed, t), setup["labels"])
    # the one parameter counted once in every row (the notifier call) absorbs it, 200 ms
    # against a prior range of 100 … 1,000 ns, and the flag says what it stands for
    (dg,) = [dg for dg in c.diagnoses if dg.kind == "far_from_prior"]
    assert dg.name == "notifier_call_ns"
    assert "fixed cost of about 200 ms per measurement" in dg.text, dg.text
    assert c.as_dict()["diagnoses"][0]["name"] == "notifier_call_ns"
    # kept from fitting it, the fit cannot absorb the constant and the residuals say so
    params = [p for p in (f.name for f in cal_mod.fit(setup["machine"], cal_mod.Design(
        d0.a, d0.fixed, setup["t"]), setup["labels"]).fitted) if p != "notifier_call_ns"]
    c2 = cal_mod.fit(setup["machine"], cal_mod.Design(d0.a, d0.fixed, t), setup["labels"],
                     params=params)
    text = next(dg.text for dg in c2.diagnoses if dg.kind == "residuals")
    assert "fixed cost of about" in text and "per measurement" in text, text


def test_a_value_far_outside_its_prior_is_flagged() -> None:
    # hand-built: a parameter whose prior range is 5 … 40 ns fitted at 5,000 ns (125× its max)
    f = cal_mod.FittedParameter("entry_visit_ns", 10.0, "assumed", 5.0, 40.0, 5000.0, 1.0,
                                4990.0, 5010.0, False)
    ok = cal_mod.FittedParameter("put_page_ns", 20.0, "assumed", 10.0, 80.0, 30.0, 1.0,
                                 29.0, 31.0, False)
    rows = [cal_mod.RowResult(2, "a", 1e9, 1e9, 1.01e9)]
    out = cal_mod.diagnose([f, ok], rows)
    assert [(dg.kind, dg.name) for dg in out] == [("far_from_prior", "entry_visit_ns")]
    assert "125× its prior maximum 40 ns" in out[0].text
    # and a residual of 30% on rows with no constant or trend is named as such
    rows = [cal_mod.RowResult(2, "a", 1e9, 1e9, 1.3e9), cal_mod.RowResult(3, "b", 1e8, 1e8, 1e8)]
    (dg,) = cal_mod.diagnose([ok], rows)
    assert dg.kind == "residuals" and "largest 30.0%, line 2" in dg.text
