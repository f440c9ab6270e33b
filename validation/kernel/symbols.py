"""Which kernel function executed each counted instruction.

The kernels boot with ``nokaslr``, so a kernel-image address is the same on every boot and
``/proc/kallsyms`` (dumped once per kernel by a symbols boot) names it.  nVHE/hVHE hyp code runs
at EL2 at its own virtual address: the kernel image's linear-map alias with the bits from
``tag_lsb`` up replaced by a random tag (arch/arm64/kvm/va_layout.c, ``kvm_compute_layout``), so
the low bits of a hyp address are the image address's offset from the start of RAM.  The
offset and ``tag_lsb`` are found per window by matching every low-half address against the
kernel ``Image``: the instruction encoding stored there must be the one the plugin saw, and the
address must fall inside ``__hyp_text_start .. __hyp_text_end``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

KERNEL_HALF = 0xFFFF000000000000


@dataclass(frozen=True)
class HypMap:
    """kernel address = (hyp address & ((1 << tag_lsb) - 1)) + offset."""

    tag_lsb: int
    offset: int

    def kva(self, pc: int) -> int:
        return (pc & ((1 << self.tag_lsb) - 1)) + self.offset


class Symbols:
    """A kernel's text symbols, and its Image to check encodings against."""

    def __init__(self, kallsyms: str, image: bytes) -> None:
        pairs: list[tuple[int, str]] = []
        for line in kallsyms.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pairs.append((int(parts[0], 16), parts[1]))
        pairs.sort()
        self.addrs = [a for a, _ in pairs]
        self.names = [n for _, n in pairs]
        by_name = {n: a for a, n in pairs}
        seen: dict[str, int] = {}
        for _, n in pairs:
            seen[n] = seen.get(n, 0) + 1
        # a name given to one function only (static functions of several files share names)
        self.unique = {n: a for a, n in pairs if seen[n] == 1}
        if "_stext" not in by_name:
            raise ValueError("kallsyms: no _stext symbol")
        # the Image starts at _text, which kallsyms may not list; found by `calibrate_text`
        self.stext = by_name["_stext"]
        self.text = by_name.get("_text", self.stext - 0x10000)
        self.hyp_lo = by_name.get("__hyp_text_start", 0)
        self.hyp_hi = by_name.get("__hyp_text_end", 0)
        self.image = image

    def entry(self, name: str) -> int | None:
        """The entry address of function ``name``, if the kernel has exactly one of that name
        (an inlined function has none; a name several static functions share is ambiguous)."""
        return self.unique.get(name)

    def function(self, kva: int) -> str:
        i = bisect.bisect_right(self.addrs, kva) - 1
        return self.names[i] if i >= 0 else "?"

    def encoding_at(self, kva: int) -> int | None:
        return self._at(self.text, kva)

    def calibrate_text(self, high: list[tuple[int, int]]) -> None:
        """Place the Image: the start address under which the most kernel (pc, encoding) pairs
        read back from the Image file (the head before ``_stext`` is 4 KiB-aligned, < 2 MiB)."""
        best = (-1, self.text)
        for step in range(0, 512):
            text = self.stext - step * 0x1000
            score = sum(1 for pc, enc in high[:200] if self._at(text, pc) == enc)
            if score > best[0]:
                best = (score, text)
        self.text = best[1]

    def _at(self, text: int, kva: int) -> int | None:
        off = kva - text
        if off < 0 or off + 4 > len(self.image):
            return None
        return int.from_bytes(self.image[off : off + 4], "little")

    def calibrate_hyp(self, low: list[tuple[int, int]]) -> HypMap | None:
        """The hyp mapping that explains the most low-half (pc, encoding) pairs."""
        if not low or not self.hyp_hi:
            return None
        best: tuple[int, HypMap] | None = None
        for tag_lsb in range(28, 44):
            mask = (1 << tag_lsb) - 1
            for step in range(0, 64):
                hm = HypMap(tag_lsb, self.text - step * 0x10000)
                score = 0
                for pc, enc in low:
                    kva = (pc & mask) + hm.offset
                    if self.hyp_lo <= kva < self.hyp_hi and self.encoding_at(kva) == enc:
                        score += 1
                if score and (best is None or score > best[0]):
                    best = (score, hm)
        return best[1] if best else None

    def attribute(self, pc: int, hyp: HypMap | None) -> str:
        """The function an executed (pc, encoding) belongs to: a symbol, or ``user``."""
        if pc >= KERNEL_HALF:
            return self.function(pc)
        if hyp is not None:
            kva = hyp.kva(pc)
            # no encoding check here: boot-time alternatives patch hyp code (an ISB of the
            # speculative-AT workaround is a NOP in the Image), the calibration checked the rest
            if self.hyp_lo <= kva < self.hyp_hi:
                return self.function(kva)
        return "user"


def load(kallsyms: Path, image: Path) -> Symbols:
    return Symbols(kallsyms.read_text(), image.read_bytes())
