"""What s2teardown predicts for a validation case: the same workload, machine and kernel as a
user would give them on the command line (``--machine qemu-a72 --kernel 6.1.0-57-cloud-arm64``)."""

from __future__ import annotations

from functools import cache, lru_cache

from s2teardown.core.vocabulary import EVENTS as MODEL_EVENTS
from s2teardown.core.vocabulary import OPS, PHASE_INDEX, STAGE2_PHASES
from s2teardown.features.estimate import estimate
from s2teardown.inputs.machine import Machine, load_machine
from s2teardown.inputs.variants import Variant, VariantSet, load_variants
from s2teardown.inputs.workload import Workload

from .cases import CPUS, EVENTS, MIB, Case

THP = 2 * MIB


@cache
def _machine(name: str) -> Machine:
    return load_machine(name)


@lru_cache(maxsize=1)
def _variants() -> VariantSet:
    return load_variants()


def variant_for(release: str) -> Variant:
    """The variant ``--kernel RELEASE`` picks (a ``uname -r`` string)."""
    return _variants().for_kernel(release)


def workload(case: Case) -> Workload:
    backing = ((4096, 100.0),) if case.backing == "4k" else ((THP, 100.0),)
    return Workload(vm_bytes=case.size_mib * MIB, backing=backing, memslots=case.memslots,
                    event=EVENTS[case.event], range=case.range_bytes)


def model_ram(case: Case) -> tuple[int, int]:
    """Guest RAM's guest-physical range in the model (its default RAM base, QEMU virt's)."""
    w = workload(case)
    return w.ram_base, w.ram_base + w.vm_bytes


def model_counts(case: Case, release: str) -> tuple[str, dict[str, int], dict[str, int]]:
    """(variant name, events, operations summed over phases) of one case."""
    variant = variant_for(release)
    est = estimate(_machine(CPUS[case.cpu][1]), [variant], workload(case), with_segments=False)
    b = est.breakdown
    events = {e: int(n) for e, n in zip(MODEL_EVENTS, b.events[0, 0], strict=True)}
    # the Stage-2 path's operations only: the host side (docs/model.md §14) runs other code
    stage2 = [PHASE_INDEX[p] for p in STAGE2_PHASES]
    ops = {o: int(n) for o, n in zip(OPS, b.operations[0, 0][stage2].sum(axis=0), strict=True)}
    return variant.name, events, ops
