"""The validation matrix: kernels x CPUs x events x backing x sizes x memslots.

Each case is one teardown the guest program (guest/s2probe.c) runs between the plugin's
markers, and the `s2teardown` workload that describes the same teardown.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

MIB = 1 << 20

#: QEMU CPU models: the flag given to -cpu, and the bundled machine file describing it.
CPUS: dict[str, tuple[str, str]] = {
    "a72": ("cortex-a72", "qemu-a72"),  # ARMv8.0: nVHE, no FWB, no TLBIRANGE
    "max": ("max,pauth-impdef=on", "qemu-max"),  # VHE, S2FWB, TLBIRANGE (pauth-impdef: speed)
    "a76": ("cortex-a76", "qemu-a76"),  # ARMv8.2: VHE, no FWB, no TLBIRANGE
}

#: Events of the guest program and the s2teardown --event that models each.
EVENTS: dict[str, str] = {
    "exit": "exit",
    "munmap": "munmap",
    "munmap-partial": "munmap",
    "memslot": "memslot-delete",
    "clear": "clear",
}

#: The partial munmap: [1 MiB + 4 KiB, +4 MiB) of guest RAM, so both ends fall inside a 2 MiB
#: block (with THP the host splits those two huge pages first).
PARTIAL_KIB = (1028, 4096)


@dataclass(frozen=True)
class Case:
    kernel: str  # series key of KERNELS (build.py): "6.1", "6.12", "7.2"
    cpu: str  # key of CPUS
    event: str  # key of EVENTS, or "baseline"
    backing: str  # "4k" | "thp"
    size_mib: int
    memslots: int

    @property
    def name(self) -> str:
        return f"{self.kernel}/{self.cpu}/{self.event}/{self.backing}/{self.size_mib}M/{self.memslots}slot"

    @property
    def probe_args(self) -> list[str]:
        """Arguments of s2probe after the case name."""
        args = [str(self.size_mib), self.backing, str(self.memslots), self.event]
        if self.event == "munmap-partial":
            args += [str(PARTIAL_KIB[0]), str(PARTIAL_KIB[1])]
        return args

    @property
    def range_bytes(self) -> tuple[int, int] | None:
        if self.event == "munmap-partial":
            return PARTIAL_KIB[0] << 10, PARTIAL_KIB[1] << 10
        return None


def baseline(kernel: str, cpu: str) -> Case:
    return Case(kernel, cpu, "baseline", "4k", 64, 1)


def matrix(kernels: list[str], cpus: list[str], quick: bool = False) -> list[Case]:
    """The whole matrix (64 MiB in 1 and 2 memslots, 256 MiB in 2), or (``quick``) the munmap,
    partial munmap, exit and memslot delete of 64 MiB on every kernel and CPU."""
    out: list[Case] = []
    for k, c in itertools.product(kernels, cpus):
        for ev, bk in itertools.product(EVENTS, ("4k", "thp")):
            if quick:
                if (ev, bk) not in (("munmap", "4k"), ("munmap-partial", "thp"), ("exit", "4k"),
                                    ("memslot", "thp"), ("clear", "4k")):
                    continue
                shapes = [(64, 2)] if ev in ("munmap", "memslot") else [(64, 1)]
            else:
                # both sizes and both memslot counts, within 10 minutes on 2 cores
                shapes = [(64, 1), (64, 2), (256, 2)]
            out.extend(Case(k, c, ev, bk, size, slots) for size, slots in shapes)
    return out
