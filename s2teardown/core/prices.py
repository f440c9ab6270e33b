"""Prices: nanoseconds per primitive operation, from the machine's physical parameters.

``price = D · θ`` (docs/architecture.md; docs/model.md §1): θ is the vector of physical parameters of the machine file
(`machine.THETA_FIELDS`, all in ns) and D a matrix fixed by the topology and the memory
placement.  The derivations (docs/model.md, "Prices"):

* DC CIVAC line = ``dc_civac_local_ns``
  + ``dc_civac_node_extra_ns`` × (fraction on another node of the same socket)
  + ``2 · interconnect_latency_ns / cmo_outstanding`` × (fraction on the other socket(s)
  + on a *snoop* multi-socket machine, also the locally homed fraction, whose maintenance must
  still snoop the other socket).  CMOs pipeline, so a round trip is divided by the operations a
  CPU keeps in flight.
* broadcast TLBI (completion included) = ``tlbi_base_ns`` + ``tlbi_per_pe_ns`` × PEs in the
  inner-shareable domain + ``2 · interconnect_latency_ns`` on a multi-socket machine (the DVM
  message and its completion cross the interconnect once each way).
  VMALLS12E1IS adds ``tlbi_vmall_extra_ns``; a range TLBI adds ``tlbi_range_extra_ns``.
* every other operation has its own parameter, one to one.

An explicit price in the machine file's ``prices:`` section replaces the derived row of D by
that number (and every view says so).  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from s2teardown.core.vocabulary import OP_INDEX, OPS

F64 = npt.NDArray[np.float64]

#: One-to-one operations and their parameter.
DIRECT: dict[str, str] = {
    "notifier_call": "notifier_call_ns",
    "memslot_visit": "memslot_visit_ns",
    "entry_visit": "entry_visit_ns",
    "entry_clear": "entry_clear_ns",
    "put_page": "put_page_ns",
    "dsb_ishst": "dsb_ishst_ns",
    "dsb_sy": "dsb_sy_ns",
    "hvc": "hvc_ns",
    "sysreg_write": "sysreg_write_ns",
    "isb": "isb_ns",
    "dsb_ish": "dsb_ish_ns",
    "table_free": "table_free_ns",
    "resched_point": "resched_point_ns",
    "host_page_free": "host_page_free_ns",
    "host_folio_free": "host_folio_free_ns",
    "host_pmd_split": "host_pmd_split_ns",
    "host_hugetlb_free": "host_hugetlb_free_ns",
    "srcu_grace_period": "srcu_grace_period_ns",
}


@dataclass(frozen=True)
class Placement:
    """Where guest memory lives relative to the tearing-down CPU (fractions summing to 1)."""

    local_node: float
    same_socket: float
    remote_socket: float


@dataclass(frozen=True)
class Topology:
    sockets: int
    cores_per_socket: int
    coherence: str  # "snoop" | "directory"
    cmo_outstanding: float

    @property
    def pes(self) -> int:
        return self.sockets * self.cores_per_socket


@dataclass(frozen=True)
class Prices:
    """ns per operation (``ops``), with its derivation ``ops = design @ theta + fixed``."""

    theta_fields: tuple[str, ...]
    theta: F64  # (THETA,)
    design: F64  # (OPS, THETA); rows of overridden ops are zero
    fixed: F64  # (OPS,) explicit prices (0 where derived)
    overridden: frozenset[str]
    assumed_ops: frozenset[str]  # ops whose price rests on an assumed parameter

    @property
    def ops(self) -> F64:
        return self.design @ self.theta + self.fixed

    def with_theta(self, theta: F64) -> F64:
        """Op prices for other parameter vectors ``theta[..., THETA]`` (samples, what-ifs)."""
        return theta @ self.design.T + self.fixed


def design_matrix(theta_fields: Sequence[str], topo: Topology, placement: Placement) -> F64:
    col = {f: i for i, f in enumerate(theta_fields)}
    d = np.zeros((len(OPS), len(theta_fields)))
    for op, field in DIRECT.items():
        d[OP_INDEX[op], col[field]] = 1.0
    # derived from existing parameters (docs/model.md §15.3): a line zeroed is one store's
    # worth (entry_clear_ns); rb_erase + kfree is a few pointer writes and one slab free, priced
    # as one entry write plus one reference drop (entry_clear_ns + put_page_ns)
    d[OP_INDEX["line_zero"], col["entry_clear_ns"]] = 1.0
    d[OP_INDEX["slab_free"], col["entry_clear_ns"]] = 1.0
    d[OP_INDEX["slab_free"], col["put_page_ns"]] = 1.0
    multi = topo.sockets > 1
    crossing = placement.remote_socket
    if multi and topo.coherence == "snoop":
        crossing += placement.local_node + placement.same_socket
    line = OP_INDEX["dc_civac_line"]
    d[line, col["dc_civac_local_ns"]] = 1.0
    d[line, col["dc_civac_node_extra_ns"]] = placement.same_socket
    d[line, col["interconnect_latency_ns"]] = 2.0 * crossing / topo.cmo_outstanding
    for op, extra in (("tlbi_is", None), ("tlbi_vmall", "tlbi_vmall_extra_ns"), ("tlbi_range", "tlbi_range_extra_ns")):
        r = OP_INDEX[op]
        d[r, col["tlbi_base_ns"]] = 1.0
        d[r, col["tlbi_per_pe_ns"]] = float(topo.pes)
        d[r, col["interconnect_latency_ns"]] = 2.0 if multi else 0.0
        if extra is not None:
            d[r, col[extra]] = 1.0
    return d


def make_prices(
    theta_fields: Sequence[str],
    theta: Mapping[str, float],
    topo: Topology,
    placement: Placement,
    *,
    overrides: Mapping[str, float] | None = None,
    assumed_fields: frozenset[str] = frozenset(),
    assumed_overrides: frozenset[str] = frozenset(),
) -> Prices:
    fields = tuple(theta_fields)
    d = design_matrix(fields, topo, placement)
    fixed = np.zeros(len(OPS))
    over = dict(overrides or {})
    for op, value in over.items():
        d[OP_INDEX[op], :] = 0.0
        fixed[OP_INDEX[op]] = value
    th = np.array([float(theta[f]) for f in fields])
    assumed_cols = np.array([f in assumed_fields for f in fields])
    assumed = {
        op
        for op in OPS
        if (op in over and op in assumed_overrides)
        or (op not in over and bool(np.any((d[OP_INDEX[op]] != 0) & assumed_cols)))
    }
    return Prices(fields, th, d, fixed, frozenset(over), frozenset(assumed))
