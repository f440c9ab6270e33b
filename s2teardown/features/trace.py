"""Host traces -> the measurements CSV that `calibrate` reads.

``tools/s2teardown-trace.sh`` (with ``tools/s2teardown-trace.bt``) times the exported,
probe-able kernel entry points of a teardown path on an arm64 KVM host and writes a text trace
in this format, **version 1** (docs/measuring.md shows a complete example)::

    s2teardown-trace 1                 first line that is not blank or a comment
    # any comment                      ignored (the wrapper records host, kernel, probes here)
    run ID KEY=VALUE ...               opens run ID (a whole number, unique in the file)
    call PROBE TID START_NS DURATION_NS   one return of PROBE in the open run
    lost N                             bpftrace dropped N events in the open run (an error)
    end ID                             closes run ID
    Attaching N probes...              bpftrace's banner: ignored

Keys of a ``run`` line: ``vm`` (a size such as 64G, required), ``backing`` (2M, 4K or a mix
2M:90,4K:10, required), ``event`` (exit, munmap, clear or memslot-delete, required), ``kernel``
(``uname -r``) and/or ``variant`` (a model variant; it wins over ``kernel``), and optionally
``mapped``, ``memslots``, ``pid``, ``label`` (no spaces in values).  ``PROBE`` is a kernel
function name; ``TID`` a thread id; the two times are nanoseconds (``nsecs`` in bpftrace).

A run's time is the sum of the durations of the *outermost* probe of its event
(`TOP_PROBE`): ``kvm_mmu_notifier_release`` for exit (it contains
``kvm_arch_flush_shadow_all``), ``kvm_mmu_notifier_invalidate_range_start`` for munmap and
clear (every invalidation of the run: the UNMAP and any THP-split CLEARs at the edges), and
``kvm_arch_flush_shadow_memslot`` for memslot-delete.  Inner probes are kept as a cross-check
in the ``note`` column.  The host's own freeing of guest pages is not inside these functions,
so ``host_free_included`` is false.

Every malformed line is a one-line UserError ``FILE:LINE: ...`` (exit 2).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from s2teardown.errors import UserError, describe
from s2teardown.inputs.check import unknown_key
from s2teardown.inputs.files import FileKind, read_user_file
from s2teardown.inputs.yamlio import did_you_mean

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "RUN_KEYS",
    "TOP_PROBE",
    "Call",
    "Run",
    "measurements_csv",
    "parse_trace",
    "parse_trace_text",
    "run_rows",
]

MAGIC: Final = "s2teardown-trace"
FORMAT_VERSION: Final = 1
#: The outermost probe timed for each event (its durations are summed per run).
TOP_PROBE: Final[dict[str, str]] = {
    "exit": "kvm_mmu_notifier_release",
    "munmap": "kvm_mmu_notifier_invalidate_range_start",
    "clear": "kvm_mmu_notifier_invalidate_range_start",
    "memslot-delete": "kvm_arch_flush_shadow_memslot",
}
#: Keys a ``run`` line may carry.
RUN_KEYS: Final[tuple[str, ...]] = ("vm", "backing", "event", "kernel", "variant", "mapped",
                                    "memslots", "pid", "label")
_REQUIRED: Final[tuple[str, ...]] = ("vm", "backing", "event")
_BANNER = re.compile(r"^Attaching \d+ probes?\.\.\.$")
_PROBE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_UINT = re.compile(r"^[0-9]+$")
MAX_TRACE_BYTES: Final = 256 << 20
#: How a trace is read (inputs.files: regular files only, capped before reading).
TRACE_FILE: Final = FileKind("a trace file", "an existing trace file", MAX_TRACE_BYTES)
#: CSV columns written by `measurements_csv` (a subset of calibrate.COLUMNS).
CSV_COLUMNS: Final[tuple[str, ...]] = ("vm", "backing", "event", "variant", "kernel", "mapped",
                                       "memslots", "host_free_included", "seconds", "note")


@dataclass(frozen=True)
class Call:
    line: int
    probe: str
    tid: int
    start_ns: int
    duration_ns: int


@dataclass
class Run:
    file: str
    line: int
    id: int
    meta: dict[str, str]
    calls: list[Call] = field(default_factory=list)
    end_line: int | None = None


def _err(file: str, line: int, what: str | None, expected: str, got: str,
         hint: str | None = None) -> UserError:
    return UserError(file, line, what, expected, got, hint)


def parse_trace_text(text: str, file: str = "<trace>") -> list[Run]:
    """The runs of a trace in the documented format, checked line by line."""
    runs: list[Run] = []
    ids: set[int] = set()
    open_run: Run | None = None
    seen_magic = False
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or _BANNER.match(line):
            continue
        words = line.split()
        kind = words[0]
        if not seen_magic:
            if kind != MAGIC:
                raise _err(file, n, "header", f"the first line '{MAGIC} {FORMAT_VERSION}'",
                           describe(line))
            if len(words) != 2 or words[1] != str(FORMAT_VERSION):
                raise _err(file, n, "header", f"format version {FORMAT_VERSION}",
                           describe(" ".join(words[1:]) or "none"),
                           "this s2teardown reads version 1 traces")
            seen_magic = True
            continue
        if kind == MAGIC:  # a second header (files appended by the wrapper): same version only
            if len(words) != 2 or words[1] != str(FORMAT_VERSION):
                raise _err(file, n, "header", f"format version {FORMAT_VERSION}",
                           describe(" ".join(words[1:]) or "none"))
            continue
        if kind == "run":
            if open_run is not None:
                raise _err(file, n, "run", f"'end {open_run.id}' before a new run",
                           f"run {describe(words[1]) if len(words) > 1 else ''}".strip(),
                           f"run {open_run.id} opened on line {open_run.line}")
            if len(words) < 2 or not _UINT.match(words[1]):
                raise _err(file, n, "run", "run ID KEY=VALUE ... with a whole-number ID",
                           describe(line))
            rid = int(words[1])
            if rid in ids:
                raise _err(file, n, "run", "a run ID not used before in the file", str(rid))
            meta: dict[str, str] = {}
            for item in words[2:]:
                key, sep, value = item.partition("=")
                if not sep or not key or not value:
                    raise _err(file, n, "run", "KEY=VALUE items", describe(item))
                if key not in RUN_KEYS:
                    raise unknown_key(file, n, f"run.{key}", key, RUN_KEYS)
                if key in meta:
                    raise _err(file, n, f"run.{key}", "each key once", "a duplicate key")
                meta[key] = value
            for key in _REQUIRED:
                if key not in meta:
                    raise _err(file, n, "run", "the keys " + ", ".join(_REQUIRED),
                               f"no {key}=")
            if "kernel" not in meta and "variant" not in meta:
                raise _err(file, n, "run", "kernel= (uname -r) or variant=", "neither")
            if meta["event"] not in TOP_PROBE:
                raise _err(file, n, "run.event", "one of " + ", ".join(TOP_PROBE) +
                           " (the paths the recipe times)", describe(meta["event"]),
                           did_you_mean(meta["event"], TOP_PROBE))
            ids.add(rid)
            open_run = Run(file, n, rid, meta)
            runs.append(open_run)
        elif kind == "call":
            if open_run is None:
                raise _err(file, n, "call", "a call inside a run ... end block", "no open run")
            if len(words) != 5:
                raise _err(file, n, "call", "call PROBE TID START_NS DURATION_NS (5 fields)",
                           f"{len(words)} fields")
            _, probe, tid, start, dur = words
            if not _PROBE.match(probe):
                raise _err(file, n, "call.probe", "a kernel function name", describe(probe))
            for what, val in (("tid", tid), ("start_ns", start), ("duration_ns", dur)):
                if not _UINT.match(val):
                    raise _err(file, n, f"call.{what}", "a whole number", describe(val))
            open_run.calls.append(Call(n, probe, int(tid), int(start), int(dur)))
        elif kind == "lost":
            where = f" in run {open_run.id}" if open_run is not None else ""
            count = words[1] if len(words) > 1 else "some"
            raise _err(file, n, "lost", "a complete trace",
                       f"{count} events lost{where}",
                       "rerun with a larger buffer: BPFTRACE_PERF_RB_PAGES=4096")
        elif kind == "end":
            if open_run is None:
                raise _err(file, n, "end", "an end after a run", "no open run")
            if len(words) != 2 or words[1] != str(open_run.id):
                raise _err(file, n, "end", f"end {open_run.id}", describe(line))
            open_run.end_line = n
            open_run = None
        elif kind == "Lost":  # bpftrace's own "Lost N events" line, if it was not filtered
            raise _err(file, n, "lost", "a complete trace", describe(line),
                       "rerun with a larger buffer: BPFTRACE_PERF_RB_PAGES=4096")
        else:
            raise _err(file, n, None,
                       f"'{MAGIC}', run, call, lost, end, or a # comment", describe(line),
                       did_you_mean(kind, ["run", "call", "lost", "end"]))
    if not seen_magic:
        raise UserError(file, None, None, f"a trace starting with '{MAGIC} {FORMAT_VERSION}'",
                        "an empty trace")
    if open_run is not None:
        raise _err(file, open_run.line, "run", f"'end {open_run.id}' closing the run",
                   "the end of the file", "the trace was cut short?")
    if not runs:
        raise UserError(file, None, None, "at least one run", "none")
    return runs


def parse_trace(path: str | Path) -> list[Run]:
    name = str(path)
    raw = read_user_file(path, TRACE_FILE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(name, None, None, "UTF-8 text", f"invalid byte at offset {exc.start}") \
            from None
    return parse_trace_text(text, name)


def run_rows(runs: list[Run]) -> list[dict[str, str]]:
    """One measurements row per run: the outermost probe's durations summed."""
    rows = []
    for r in runs:
        top = TOP_PROBE[r.meta["event"]]
        tops = [c for c in r.calls if c.probe == top]
        if not tops:
            seen = sorted({c.probe for c in r.calls})
            raise _err(r.file, r.line, "run", f"a call of {top} in run {r.id} "
                       f"(event {r.meta['event']})",
                       "none" + (f" (probes seen: {', '.join(seen)})" if seen else ""),
                       "was the right PID traced, and did the teardown happen while tracing?")
        total = sum(c.duration_ns for c in tops)
        inner: dict[str, int] = {}
        for c in r.calls:
            if c.probe != top:
                inner[c.probe] = inner.get(c.probe, 0) + c.duration_ns
        parts = [f"run {r.id} of {r.file}: {len(tops)} call{'s' if len(tops) > 1 else ''} of {top}"]
        for probe, ns in sorted(inner.items()):
            parts.append(f"{probe} {ns / total:.1%} of it")
        if "label" in r.meta:
            parts.append(r.meta["label"])
        rows.append({
            "vm": r.meta["vm"],
            "backing": r.meta["backing"],
            "event": r.meta["event"],
            "variant": r.meta.get("variant", ""),
            "kernel": "" if "variant" in r.meta else r.meta.get("kernel", ""),
            "mapped": r.meta.get("mapped", ""),
            "memslots": r.meta.get("memslots", ""),
            "host_free_included": "false",
            "seconds": f"{total / 1e9:.9f}",
            "note": "; ".join(parts),
        })
    return rows


def measurements_csv(rows: list[dict[str, str]]) -> str:
    """The rows as the CSV `calibrate` reads (columns `CSV_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow(row)
    return buf.getvalue()
