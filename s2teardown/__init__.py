"""s2teardown: what tearing down a KVM/arm64 Stage-2 costs, and what a kernel patch changes.

The curated public API (docs/api.md).  Names are imported lazily, so that ``s2teardown
--help`` and ``--version`` do not pay for numpy::

    import s2teardown as s2t
    m = s2t.load_machine("d05")
    vs = s2t.load_variants()
    e = s2t.estimate(m, vs.variants, s2t.Workload(vm_bytes=64 << 30))
    s2t.totals(e)   # {"v5.5": 9.2e9, ..., "P7": 1.3e6}  (ns)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_machine": "s2teardown.inputs.machine",
    "Machine": "s2teardown.inputs.machine",
    "load_variants": "s2teardown.inputs.variants",
    "Variant": "s2teardown.inputs.variants",
    "Workload": "s2teardown.inputs.workload",
    "Placement": "s2teardown.core.prices",
    "estimate": "s2teardown.features.estimate",
    "Estimate": "s2teardown.features.estimate",
    "totals": "s2teardown.features.estimate",
    "Breakdown": "s2teardown.core.model",
    "Geometry": "s2teardown.core.geometry",
    "Layout": "s2teardown.core.layout",
    "UserError": "s2teardown.errors",
    "PHASES": "s2teardown.core.vocabulary",
    "EVENTS": "s2teardown.core.vocabulary",
    "OPS": "s2teardown.core.vocabulary",
    "parse_size": "s2teardown.inputs.units",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 's2teardown' has no attribute {name!r}")
