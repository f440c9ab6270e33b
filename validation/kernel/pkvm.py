"""The pKVM paths on a real kernel (issue 14, item 5): boot 7.2 with kvm-arm.mode=protected.

    python -m validation.kernel.pkvm [--size-mib 64]

One boot of Debian's 7.2 under QEMU (``-cpu max,pauth-impdef=on``: hVHE pKVM, S2FWB) runs a
baseline window, the exit of a protected VM and the exit of a non-protected one (the guest
program's ``exit:protected`` / ``exit``; SIZE MiB in 4 KiB pages, every page touched), and
prints, per case, the whole window's HVC, DC CIVAC and TLBI executions less the baseline's
beside the model's pKVM events (docs/model.md §15).  Whole-window totals, not attributed to
functions: a report for a reader, not a pass/fail gate (the hyp-call frames of vCPU teardown
and the host's own work share the window).  Emulation gives counts, never times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter

from . import build
from .isa import decode

BUILD = build.HERE / "build"


def _totals(window: dict[str, object]) -> Counter[str]:
    out: Counter[str] = Counter()
    for enc, _pc, n in window["counts"]:  # type: ignore[attr-defined]
        name = decode(int(enc, 16))
        if name == "hvc" or name == "dc civac" or name.startswith("tlbi "):
            out[name] += int(n)
    return out


def _model(size_mib: int, protected: bool) -> dict[str, int]:
    from s2teardown.core.behaviour import Behaviour
    from s2teardown.core.counts import count
    from s2teardown.core.el2 import path_for
    from s2teardown.core.vocabulary import EVENTS, PASS_KINDS
    from s2teardown.inputs.workload import Workload, uniform_batch

    w = Workload(vm_bytes=size_mib << 20, backing=((4096, 100.0),), kvm_mode="protected",
                 protected_vm=protected)
    c = count(uniform_batch([w]), [{k: Behaviour() for k in PASS_KINDS}], fwb=True, cache_line=64,
              paths=[path_for("protected", protected, 0, (7, 2))])
    return {e: int(v) for e, v in zip(EVENTS, c.events[0, 0], strict=True)
            if v and (e.startswith(("pkvm_", "poison_line_clean", "el2_tlb", "el2_flush")))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation.kernel.pkvm")
    ap.add_argument("--size-mib", type=int, default=64)
    args = ap.parse_args(argv)
    try:
        build.ensure_tools()
        kernel = build.kernels(BUILD, ["7.2"])[0]
        busybox, plugin, probe = build.busybox(BUILD), build.plugin(BUILD), build.guest(BUILD)
    except build.Unavailable as e:
        print(f"SKIPPED: {e}")
        return 0
    work = BUILD / "pkvm"
    work.mkdir(parents=True, exist_ok=True)
    n = str(args.size_mib)
    cases = [f"base {n} 4k 1 baseline", f"protected {n} 4k 1 exit:protected", f"shared {n} 4k 1 exit"]
    rd = work / "initramfs.cpio"
    build.initramfs(rd, busybox, probe, cases, False)
    out = work / "windows.jsonl"
    out.unlink(missing_ok=True)
    cmd = ["qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3",
           "-cpu", "max,pauth-impdef=on", "-smp", "1", "-m", "2G", "-nic", "none", "-nographic",
           "-no-reboot", "-kernel", str(kernel.image), "-initrd", str(rd),
           "-append", "console=ttyAMA0 nokaslr panic=-1 quiet kvm-arm.mode=protected",
           "-plugin", f"{plugin},out={out}"]
    r = subprocess.run(cmd, capture_output=True, timeout=900, check=False)
    console = r.stdout.decode(errors="replace").replace("\r", "")
    (work / "console.log").write_text(console)
    print(f"kernel {kernel.release} ({kernel.package}), kvm-arm.mode=protected, -cpu max")
    for line in console.splitlines():
        if line.startswith(("s2probe: ", "@@ dmesg")) and ("KVM" in line or "s2probe" in line
                                                         or "Hyp" in line or "hVHE" in line):
            print("  " + line)
    windows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.is_file() else []
    if len(windows) != len(cases):
        print(f"{len(windows)} windows for {len(cases)} cases: see {work / 'console.log'}")
        return 1
    base = _totals(windows[0])
    for (case, protected), win in zip((("protected", True), ("shared", False)), windows[1:], strict=True):
        got = _totals(win)
        print(f"{case} VM, exit of {n} MiB (window less the baseline window):")
        for name in sorted(set(got) | set(base)):
            print(f"  {name:<24} {got[name] - base[name]:>12,}")
        print("  model (docs/model.md §15):")
        for name, v in _model(args.size_mib, protected).items():
            print(f"    {name:<28} {v:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
