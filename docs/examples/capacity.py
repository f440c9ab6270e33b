#!/usr/bin/env python3
"""Capacity planning from a script: the CPU time a fleet spends tearing VMs down.

Builds a fleet in code (docs/api.md, "Capacity planning"), plans it at a few concurrencies and
prints a small table per kernel variant: the cores busy tearing down, the p99 latency of one
teardown, and the cores' worth of time the broadcast TLBIs cost the *other* CPUs.  Then, from
the same fleet, the plain numbers a script would pass on (numpy arrays and a JSON-able dict).

    python docs/examples/capacity.py               # a d05 fleet
    python docs/examples/capacity.py graviton3     # the same fleet on another bundled machine
"""

from __future__ import annotations

import json
import sys

from s2teardown.api import (
    Fleet,
    format_ns,
    load_machine,
    load_variants,
    parse_backing,
    parse_size,
    plan,
)


def main(argv: list[str]) -> int:
    machine = load_machine(argv[0] if argv else "d05")
    variants = load_variants().select(["v5.5", "P5"])  # the baseline first
    fleet = Fleet(
        machine=machine,
        variants=tuple(variants),
        teardowns_per_hour=600,
        # weights are relative: three 4 GiB VMs for every 64 GiB one
        vm_sizes=((parse_size("4G"), 3.0), (parse_size("64G"), 1.0)),
        # nine THP-backed VMs for every one backed by 4 KiB pages
        backings=((parse_backing("2M"), 9.0), (parse_backing("4K"), 1.0)),
        name="example-script",
    )

    print(f"{fleet.teardowns_per_hour:g} teardowns/h on {machine.name} ({machine.pes} PEs)")
    print(f"{'variant':<8} {'N':>3} {'cores':>8} {'p99':>10} {'other cores':>12}")
    for n in (1, 8):
        p = plan(fleet, concurrency=n)
        for row in p.rows():
            print(
                f"{row['variant']:<8} {n:>3} {row['cores']:>8.3f} "
                f"{format_ns(row['p99_ns']):>10} {row['other_cores']:>12.3f}"
            )

    # The same numbers as arrays (one entry per variant) and as a plain dict.
    p = plan(fleet)
    saving = p.saving_cpu_seconds_per_hour  # numpy array, CPU-seconds per hour
    print(
        f"saving of {p.variants[1]} over {p.variants[0]}: {saving[1]:,.0f} CPU-s/h "
        f"({p.saving_fraction[1]:.1%})"
    )
    doc = p.as_dict()
    print(
        "json:",
        json.dumps({r["variant"]: round(r["cpu_seconds_per_hour"], 3) for r in doc["variants"]}),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
