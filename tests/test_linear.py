"""The linear form of the counts and the stepped evaluation (model.py, counts.py).

``evaluate`` never builds the event array: it folds prices into the coefficients and multiplies
the quantity columns by them, step by step.  These tests check that against the definition,
``time = events @ W`` with the events materialised, and that the step size changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

import s2teardown.core.model as model
from s2teardown.core.counts import count, expand_linear, linear_from_events
from s2teardown.core.host import QUANTITY_NAMES as HOST_QUANTITIES
from s2teardown.core.instructions import expansion
from s2teardown.core.model import VariantSpec, evaluate, weights
from s2teardown.core.vocabulary import EVENTS
from s2teardown.features.estimate import machine_inputs, variant_specs
from s2teardown.inputs.machine import load_machine
from s2teardown.inputs.variants import load_variants
from s2teardown.inputs.workload import Workload, uniform_batch

K, M, G = 1 << 10, 1 << 20, 1 << 30
SPECS: list[VariantSpec] = variant_specs(load_variants().variants)  # each with its kernel frame


def workloads(event: str, n: int = 7) -> list[Workload]:
    """``n`` different guests of one batch shape (sizes, mapped fractions, backing mixes)."""
    out = []
    for i in range(n):
        out.append(
            Workload(
                vm_bytes=(1 + 3 * i) * G,
                backing=((2 * M, 100.0 * i / (n - 1)), (4 * K, 100.0 - 100.0 * i / (n - 1))),
                mapped=0.3 + 0.1 * i,
                device_fraction=0.01 * (i % 3),
                memslots=2,
                event=event,
                range=((i % 3) * 256 * M + 4 * K * i, (1 + i) * 96 * M + 4 * K),
            )
        )
    return out


@pytest.mark.parametrize("machine", ["d05", "graviton3"])  # without, with FWB and TLBI-range
@pytest.mark.parametrize("event", ["exit", "munmap-then-exit", "clear", "block-retry", "reset"])
def test_time_is_events_times_weights(machine: str, event: str) -> None:
    """The folded product equals the definition, events (materialised) @ W, to rounding."""
    mi, _ = machine_inputs(load_machine(machine))
    batch = uniform_batch(workloads(event))
    bd = evaluate(batch, SPECS, mi)
    x = np.stack([expansion(mi.features, s.frame) for s in SPECS])  # (V, E, P, O)
    w = weights(x, mi.prices.ops)  # (V, E, PHASES)
    by_definition = np.einsum("sve,vep->svp", bd.events.astype(np.float64), w)
    assert bd.events.shape == (batch.size, len(SPECS), w.shape[1])
    assert bd.events.sum() > 0
    np.testing.assert_allclose(bd.time_ns, by_definition, rtol=1e-12, atol=0)


@pytest.mark.parametrize("event", ["exit", "munmap", "memslot-delete"])
def test_step_size_changes_nothing(event: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven scenarios in steps of 2 (the last step short) = in one step, exactly."""
    mi, _ = machine_inputs(load_machine("d05"))
    batch = uniform_batch(workloads(event))
    whole = evaluate(batch, SPECS, mi, with_segments=True)
    monkeypatch.setattr(model, "STEP", 2)
    stepped = evaluate(batch, SPECS, mi, with_segments=True)
    assert np.array_equal(stepped.events, whole.events)
    assert np.array_equal(stepped.time_ns, whole.time_ns)
    assert stepped.stretch_ns is not None and whole.stretch_ns is not None
    assert np.array_equal(stepped.stretch_ns, whole.stretch_ns)
    assert stepped.segments is not None and len(stepped.segments) == batch.size


def test_each_scenario_alone_equals_the_batch() -> None:
    """A scenario's counts do not depend on the other scenarios of its batch."""
    mi, _ = machine_inputs(load_machine("d05"))
    ws = workloads("munmap-then-exit")
    together = evaluate(uniform_batch(ws), SPECS, mi)
    for s, w in enumerate(ws):
        alone = evaluate(uniform_batch([w]), SPECS, mi)
        assert np.array_equal(alone.events[0], together.events[s])


def test_out_is_written_and_checked() -> None:
    mi, _ = machine_inputs(load_machine("d05"))
    batch = uniform_batch(workloads("exit"))
    out = np.full((batch.size, len(SPECS), len(model.PHASES)), np.nan)
    bd = evaluate(batch, SPECS, mi, out=out)
    assert bd.time_ns is out and np.isfinite(out).all()
    assert np.array_equal(out, evaluate(batch, SPECS, mi).time_ns)
    for bad in (np.zeros((batch.size, len(SPECS))), np.zeros(out.shape, dtype=np.float32),
                np.zeros(out.shape[::-1]).T):
        with pytest.raises(ValueError, match="out: expected a C-contiguous float64 array"):
            evaluate(batch, SPECS, mi, out=bad)


def test_linear_forms() -> None:
    """expand_linear is the integer product; linear_from_events is its inverse for explicit events."""
    rng = np.random.default_rng(1)
    columns = rng.integers(0, 1 << 40, size=(5, 4))
    coefficients = rng.integers(0, 3, size=(2, 4, len(EVENTS)))
    want = np.einsum("sc,uce->sue", columns, coefficients)
    assert np.array_equal(expand_linear(columns, coefficients), want)
    cols, coef = linear_from_events(want)
    assert np.array_equal(expand_linear(cols, coef), want)


def test_shared_quantities_are_counted_once() -> None:
    """Variants sharing a walk share its six quantity columns: the 14 bundled variants need few."""
    batch = uniform_batch(workloads("exit"))
    c = count(batch, [s.behaviours for s in SPECS], fwb=False, cache_line=64)
    # invocation (present, memslots, range-flush calls and ops) + one pass's six quantities +
    # resched points for the one chunk size of these 3-level guests (1 GiB) + exit_mmap's host
    # quantities (core/host.py: 9, and from model version 6 the 4 of its TLB flushes: 13,
    # shared by every variant)
    assert len(HOST_QUANTITIES) == 13
    assert c.columns.shape[1] == 4 + 6 + 1 + 13
    assert c.coefficients.shape == (len(set(c.variant_row.tolist())), c.columns.shape[1], len(EVENTS))
