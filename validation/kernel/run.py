"""Boot each kernel under QEMU, run each case, count, and compare with the model.

    python -m validation.kernel [--quick] [--jobs 2] [--kernels 6.1,6.12,7.2] [--cpus a72,max,a76]

Exit status: 0 every count equal (or a listed known difference) — or the infrastructure cannot
be had, which is reported loudly on one line ("SKIPPED: ..."); 1 a mismatch (a table of op,
model, kernel, case is printed); 2 bad usage.  Emulation gives counts, never times.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import build, cases, host_side, known
from .compare import Result, compare
from .kernel_counts import Attributed, attribute, in_scope, subtract
from .symbols import Symbols

BUILD = build.HERE / "build"
QEMU_TIMEOUT_S = 900
CASES_PER_BOOT = 12


@dataclass
class Boot:
    kernel: build.Kernel
    cpu: str
    cases: list[cases.Case]
    symbols: bool = False
    funcs: Path | None = None  # the plugin's funcs= file (host functions whose entries it counts)
    layouts: list[dict[str, int]] = field(default_factory=list)  # per case: hva, floor, ceiling
    console: str = ""
    windows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def _qemu(boot: Boot, workdir: Path, plugin: Path, busybox: Path, probe: Path) -> Boot:
    workdir.mkdir(parents=True, exist_ok=True)
    rd = workdir / "initramfs.cpio"
    lines = [f"c{i} " + " ".join(c.probe_args) for i, c in enumerate(boot.cases)]
    build.initramfs(rd, busybox, probe, lines, boot.symbols)
    out = workdir / "windows.jsonl"
    out.unlink(missing_ok=True)
    cmd = [
        "qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3",
        "-cpu", cases.CPUS[boot.cpu][0], "-smp", "1", "-m", "2G", "-nic", "none",
        "-nographic", "-no-reboot", "-kernel", str(boot.kernel.image), "-initrd", str(rd),
        "-append", "console=ttyAMA0 nokaslr panic=-1 quiet",
        "-plugin", f"{plugin},out={out}" + (f",funcs={boot.funcs}" if boot.funcs else ""),
    ]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=QEMU_TIMEOUT_S, check=False)
        boot.console = r.stdout.decode(errors="replace").replace("\r", "")
    except subprocess.TimeoutExpired as e:
        boot.console = (e.stdout or b"").decode(errors="replace").replace("\r", "")
        boot.error = f"QEMU timed out after {QEMU_TIMEOUT_S} s"
    boot.seconds = time.monotonic() - t0
    (workdir / "console.log").write_text(boot.console)
    if out.is_file():
        boot.windows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    if boot.error is None:
        boot.error = _check(boot)
    return boot


def _check(boot: Boot) -> str | None:
    if "@@ done" not in boot.console:
        return "the guest did not finish (see console.log)"
    oks = [ln for ln in boot.console.splitlines() if ln.startswith("s2probe: ")]
    fails = [ln for ln in oks if " FAIL " in ln]
    if fails:
        return fails[0]
    done = [ln for ln in oks if " ok " in ln]
    if len(done) != len(boot.cases) or len(boot.windows) != len(boot.cases):
        return f"{len(boot.cases)} cases, {len(done)} finished, {len(boot.windows)} windows"
    if any(w.get("overflow") for w in boot.windows):
        return "the plugin ran out of counter slots"
    boot.layouts = []
    for case, line in zip(boot.cases, done, strict=True):
        fields = dict(kv.split("=", 1) for kv in line.split()[3:] if "=" in kv)
        boot.layouts.append({k: int(fields[k], 16) for k in ("hva", "floor", "ceiling")
                             if k in fields})
        thp_kib = int(fields.get("thp_kib", "-1"))
        want = case.size_mib * 1024 if case.backing == "thp" else 0
        if case.event != "exit" and thp_kib != want:
            return f"{case.name}: THP backed {thp_kib} KiB, expected {want} KiB"
    return None


def _symbols_of(boot: Boot) -> str:
    return "\n".join(ln[7:] for ln in boot.console.splitlines() if ln.startswith("@@ sym "))


def _boot_facts(console: str) -> list[str]:
    return [ln[9:].split("] ", 1)[-1] for ln in console.splitlines() if ln.startswith("@@ dmesg ")]


def _plan(ks: list[build.Kernel], cpus: list[str], quick: bool, only: str = "*") -> list[Boot]:
    boots = []
    by_series = {k.series: k for k in ks}
    wanted = [c for c in cases.matrix(list(by_series), cpus, quick) if fnmatch.fnmatch(c.name, only)]
    for case_list in _group(wanted):
        k, c = case_list[0].kernel, case_list[0].cpu
        boots.append(Boot(by_series[k], c, [cases.baseline(k, c), *case_list]))
    # longest first, so two QEMUs finish together
    boots.sort(key=lambda b: -sum(c.size_mib * (8 if c.backing == "4k" else 1) for c in b.cases))
    return boots


def _group(all_cases: list[cases.Case]) -> list[list[cases.Case]]:
    groups: dict[tuple[str, str], list[cases.Case]] = {}
    for c in all_cases:
        groups.setdefault((c.kernel, c.cpu), []).append(c)
    out = []
    for g in groups.values():
        for i in range(0, len(g), CASES_PER_BOOT):
            out.append(g[i : i + CASES_PER_BOOT])
    return out


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def fmt(r: list[str]) -> str:
        return "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) + " |"

    return "\n".join([fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation.kernel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a subset that runs in under 2 minutes")
    ap.add_argument("--jobs", type=int, default=2, help="QEMUs side by side (default 2)")
    ap.add_argument("--kernels", default=",".join(build.SERIES), help="series, comma-separated")
    ap.add_argument("--cpus", default=",".join(cases.CPUS), help="CPU models, comma-separated")
    ap.add_argument("--only", default="*",
                    help="only the cases whose name matches this pattern (fnmatch, e.g. "
                         "'*/munmap*/thp/64M/1slot'); for development")
    ap.add_argument("--results", type=Path, default=BUILD / "results.json",
                    help="where to write every comparison as JSON")
    ap.add_argument("--update-docs", action="store_true",
                    help="write the summary table into docs/validation.md")
    ap.add_argument("--record", type=Path, default=BUILD / "recorded.json",
                    help="where to write the kernel's counts per case (the Stage-2 path, and host "
                         "function entries); "
                         "validation/kernel/recorded.json is the committed copy make test checks")
    args = ap.parse_args(argv)
    ks_wanted = [k for k in args.kernels.split(",") if k]
    cpus = [c for c in args.cpus.split(",") if c]
    bad = [k for k in ks_wanted if k not in build.SERIES] + [c for c in cpus if c not in cases.CPUS]
    if bad or args.jobs < 1:
        print(f"validate-kernel: unknown kernel or CPU {bad} (kernels {list(build.SERIES)}, "
              f"CPUs {list(cases.CPUS)})", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    try:
        build.ensure_tools()
        ks = build.kernels(BUILD, ks_wanted)
        bb, so, probe = build.busybox(BUILD), build.plugin(BUILD), build.guest(BUILD)
    except build.Unavailable as e:
        print(f"validate-kernel: SKIPPED: {e} (no kernel was checked)")
        return 0

    def run_all(boots: list[Boot], label: str) -> list[Boot]:
        done: list[Boot] = []
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futs = [pool.submit(_qemu, b, BUILD / "runs" / f"{label}{i}", so, bb, probe)
                    for i, b in enumerate(boots)]
            for n, f in enumerate(as_completed(futs), 1):
                b = f.result()
                done.append(b)
                state = "ok" if b.error is None else f"ERROR {b.error}"
                print(f"  [{n}/{len(boots)}] {b.kernel.series}/{b.cpu}: {len(b.cases)} cases, "
                      f"{b.seconds:.0f} s, {state}", flush=True)
        return done

    # symbols: once per kernel image (nokaslr: the addresses never move)
    syms: dict[str, Symbols] = {}
    need = []
    for k in ks:
        cache = BUILD / "symbols" / f"{k.release}.txt"
        if not cache.is_file():
            need.append(Boot(k, "a72", [], symbols=True))
    if need:
        print(f"validate-kernel: reading the symbols of {len(need)} kernel(s)")
        for b in run_all(need, "symbols-"):
            text = _symbols_of(b)
            if not text:
                print(f"validate-kernel: FAILED: no symbols from {b.kernel.package}: {b.error}")
                return 1
            cache = BUILD / "symbols" / f"{b.kernel.release}.txt"
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(text + "\n")
    for k in ks:
        syms[k.series] = Symbols((BUILD / "symbols" / f"{k.release}.txt").read_text(), k.image.read_bytes())

    boots = _plan(ks, cpus, args.quick, args.only)
    funcs = {k.series: host_side.write_functions(BUILD / "funcs" / f"{k.release}.txt", syms[k.series])
             for k in ks}
    for b in boots:
        b.funcs = funcs[b.kernel.series]
    n_cases = sum(len(b.cases) - 1 for b in boots)
    print(f"validate-kernel: {n_cases} cases in {len(boots)} boots, {args.jobs} QEMUs side by side")
    done = run_all(boots, "boot-")
    errors = [b for b in done if b.error is not None]
    if errors:
        for b in errors:
            print(f"validate-kernel: FAILED: {b.kernel.series}/{b.cpu}: {b.error}")
        return 1

    from .model_side import model_counts, model_ram  # numpy and the model: once the kernels ran

    results: list[Result] = []
    recorded: dict[str, dict[str, int]] = {}
    host_calls: dict[str, dict[str, int]] = {}
    facts: dict[str, list[str]] = {}
    variants: dict[str, str] = {}
    layouts: dict[str, dict[str, int]] = {}
    for b in done:
        sy = syms[b.kernel.series]
        facts[f"{b.kernel.series}/{b.cpu}"] = _boot_facts(b.console)
        base: Attributed = attribute(b.windows[0], sy)
        for case, window, layout in zip(b.cases[1:], b.windows[1:], b.layouts[1:], strict=True):
            att = subtract(attribute(window, sy), base)
            recorded[case.name] = {f"{fn}|{nm}": n for (fn, nm), n in sorted(att.items())
                                   if in_scope(fn)}
            host_calls[case.name] = host_side.calls(window, b.windows[0])
            vname, ev, ops = model_counts(case, b.kernel.release)
            variants[b.kernel.series] = vname
            results.extend(compare(case.name, ev, ops, att, known.lookup))
            layouts[case.name] = layout
            extra = host_side.layout_correction(case.event, model_ram(case), layout)
            results.extend(host_side.compare_host(case.name, case.kernel, ev, host_calls[case.name],
                                                  known.lookup_host, extra))
    elapsed = time.monotonic() - t_start
    _report(results, ks, variants, facts, elapsed, args)
    _write_json(args.record, {
        "about": "Stage-2 path instructions per (function|instruction) that Debian's kernels "
                 "executed under QEMU, per case, after the baseline window (validation/kernel); "
                 "host_calls: entries of host mm functions (host_side.FUNCTIONS) per case, "
                 "after the baseline window; host_layout: where guest RAM was mapped (hva) and "
                 "its neighbours (floor, ceiling) before the event",
        "kernels": {k.series: {"package": k.package, "release": k.release, "version": k.version}
                    for k in ks},
        "cases": recorded,
        "host_calls": host_calls,
        "host_layout": layouts,
    })
    return 0 if all(r.ok for r in results) else 1


def _summary(results: list[Result], ks: list[build.Kernel], variants: dict[str, str]) -> str:
    per: dict[tuple[str, str], Counter[str]] = {}
    for r in results:
        k, c = r.case.split("/")[:2]
        cnt = per.setdefault((k, c), Counter())
        cnt["rows"] += 1
        cnt["equal"] += r.equal
        cnt["known"] += (not r.equal) and r.ok
        cnt["mismatch"] += not r.ok
    case_names = Counter(r.case.rsplit("/", 4)[0] for r in {r.case: r for r in results}.values())
    rel = {k.series: k for k in ks}
    rows = [[f"{s} ({rel[s].release}, {rel[s].version})" if s in rel else s,
             c, variants.get(s, "?"), str(case_names[f"{s}/{c}"]), str(v["rows"]), str(v["equal"]),
             str(v["known"]), str(v["mismatch"])]
            for (s, c), v in sorted(per.items())]
    return _table(rows, ["kernel", "cpu", "variant", "cases", "counts", "equal", "known", "mismatch"])


def _host_rows(results: list[Result]) -> str:
    """Per host row and kernel series: cases, equal, known, mismatch (docs/validation.md)."""
    per: dict[tuple[str, str], Counter[str]] = {}
    for r in results:
        cnt = per.setdefault((r.op, r.case.split("/")[0]), Counter())
        cnt["cases"] += 1
        cnt["equal"] += r.equal
        cnt["known"] += (not r.equal) and r.ok
        cnt["mismatch"] += not r.ok
    order = {op: i for i, op in enumerate(dict.fromkeys(r.op for r in host_side.ROWS))}
    rows = [[op, s, str(v["cases"]), str(v["equal"]), str(v["known"]), str(v["mismatch"])]
            for (op, s), v in sorted(per.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1]))]
    return _table(rows, ["host count (function entries)", "kernel", "cases", "equal", "known",
                         "mismatch"])


def _report(results: list[Result], ks: list[build.Kernel], variants: dict[str, str],
            facts: dict[str, list[str]], elapsed: float, args: argparse.Namespace) -> None:
    stage2 = [r for r in results if r.kind != "host"]
    host = [r for r in results if r.kind == "host"]
    summary = _summary(stage2, ks, variants)
    host_summary = _host_rows(host) if host else ""
    print()
    print(summary)
    if host_summary:
        print()
        print(host_summary)
    if args.update_docs:
        _update_docs(summary, host_summary, len(stage2), len(host),
                     sum(not r.ok for r in results), elapsed, args.quick)
    bad = [r for r in results if not r.ok]
    if bad:
        print(f"\nvalidate-kernel: FAILED: {len(bad)} count(s) differ from the kernel")
        print(_table([[r.op, str(r.model), str(r.kernel), r.case] for r in bad[:60]],
                     ["op", "model", "kernel", "case"]))
        if len(bad) > 60:
            print(f"... and {len(bad) - 60} more (all in {args.results})")
    else:
        n_known = sum(1 for r in results if not r.equal)
        print(f"\nvalidate-kernel: OK: {len(results)} counts ({len(stage2)} Stage-2, {len(host)} "
              f"host side) over {len({r.case for r in results})} cases equal the kernel's "
              f"({n_known} in the known-difference list), {elapsed:.0f} s")
    doc = {
        "kernels": {k.series: {"package": k.package, "release": k.release, "version": k.version}
                    for k in ks},
        "variants": variants,
        "boot_facts": facts,
        "elapsed_s": round(elapsed, 1),
        "quick": args.quick,
        "results": [r.__dict__ | {"equal": r.equal} for r in results],
    }
    _write_json(args.results, doc)


def _update_docs(summary: str, host_summary: str, n_stage2: int, n_host: int, mismatches: int,
                 elapsed: float, quick: bool) -> None:
    """Replace the results block of docs/validation.md (written whole or not at all)."""
    doc = build.REPO / "docs" / "validation.md"
    text = doc.read_text()
    start, end = "<!-- validate-kernel:results -->", "<!-- /validate-kernel:results -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    what = "quick subset" if quick else "whole matrix"
    block = (f"{start}\nLast run ({what}, `make validate-kernel`, {elapsed:.0f} s on 2 cores, "
             f"{mismatches} mismatch(es); {n_stage2} Stage-2 counts, {n_host} host-side "
             f"counts):\n\n{summary}\n")
    if host_summary:
        block += f"\nHost side, per count and kernel (cases over every CPU):\n\n{host_summary}\n"
    block += end
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(head + block + tail)
    tmp.replace(doc)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write whole or not at all (a temporary file renamed over the target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
