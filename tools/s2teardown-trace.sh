#!/bin/sh
# s2teardown-trace.sh -- time one KVM/arm64 Stage-2 teardown on this host and append it, as one
# `run`, to a trace file that `s2teardown import-trace` turns into calibrate's CSV.
# Walkthrough: docs/measuring.md.  Needs root, bpftrace, and an arm64 host running KVM.
#
#   tools/s2teardown-trace.sh -p VMM_PID --vm 64G --backing 2M --event exit [-o FILE]
#                             [--variant NAME] [--mapped F] [--memslots N] [--label TEXT]
#                             [--duration SECONDS]
#
#   -p PID        the VMM (e.g. qemu-system-aarch64) whose VM is torn down; 0 = any process
#   --vm SIZE     guest RAM (64G = 64 GiB)             --backing MIX   2M, 4K, 2M:90,4K:10
#   --event E     exit | munmap | clear | memslot-delete
#   --variant V   the model variant this kernel runs, when `uname -r` does not say it
#                 (a distribution kernel with backports); default: kernel=$(uname -r) only
#   --mapped F    fraction of guest RAM mapped at Stage-2 when the teardown starts (default 1)
#   --memslots N  memslots guest RAM is split into (default 1)
#   --duration S  stop after S seconds (default: for exit, 2 s after PID exits; else Ctrl-C)
#   -o FILE       trace file to append to (default s2teardown.trace)
#
# Exit status: 0 ok; 2 usage or a missing prerequisite; the status of bpftrace otherwise.
set -eu

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "s2teardown-trace: error: $*" >&2; exit 2; }

PID= VM= BACKING= EVENT= VARIANT= MAPPED= MEMSLOTS= LABEL= DURATION= OUT=s2teardown.trace
while [ $# -gt 0 ]; do
	case "$1" in
	-p) PID=${2-}; shift 2 ;;
	--vm) VM=${2-}; shift 2 ;;
	--backing) BACKING=${2-}; shift 2 ;;
	--event) EVENT=${2-}; shift 2 ;;
	--variant) VARIANT=${2-}; shift 2 ;;
	--mapped) MAPPED=${2-}; shift 2 ;;
	--memslots) MEMSLOTS=${2-}; shift 2 ;;
	--label) LABEL=$(printf %s "${2-}" | tr -c 'A-Za-z0-9_.,:+-' '_'); shift 2 ;;
	--duration) DURATION=${2-}; shift 2 ;;
	-o) OUT=${2-}; shift 2 ;;
	-h|--help) usage ;;
	*) echo "s2teardown-trace: error: unknown argument '$1'" >&2; usage ;;
	esac
done
[ -n "$PID" ] && [ -n "$VM" ] && [ -n "$BACKING" ] && [ -n "$EVENT" ] || usage
case "$PID" in *[!0-9]*) die "-p: expected a process id, got '$PID'" ;; esac
case "$EVENT" in
exit) TOP=kvm_mmu_notifier_release ;;
munmap|clear) TOP=kvm_mmu_notifier_invalidate_range_start ;;
memslot-delete) TOP=kvm_arch_flush_shadow_memslot ;;
*) die "--event: expected exit, munmap, clear or memslot-delete, got '$EVENT'" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (bpftrace attaches kprobes)"
command -v bpftrace >/dev/null 2>&1 || die "bpftrace not found (install it: apt install bpftrace)"
[ "$(uname -m)" = aarch64 ] || echo "s2teardown-trace: warning: $(uname -m) is not arm64; the model is for KVM/arm64" >&2
[ "$PID" = 0 ] || kill -0 "$PID" 2>/dev/null || die "-p: no process $PID"

HERE=$(cd "$(dirname "$0")" && pwd)
BT="$HERE/s2teardown-trace.bt"
[ -r "$BT" ] || die "cannot read $BT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

# Keep the blocks of functions this kernel has (exact names: a compiler clone such as
# foo.isra.0 or an inlined function is not probe-able under its own name).
KALLSYMS="$TMP/kallsyms"
awk '{ print $3 }' /proc/kallsyms | sort -u > "$KALLSYMS"
PROBES=$(sed -n 's|^// @probe \([A-Za-z0-9_]*\)$|\1|p' "$BT")
PRESENT= MISSING=
for f in $PROBES; do
	if grep -qx "$f" "$KALLSYMS"; then PRESENT="$PRESENT $f"; else MISSING="$MISSING $f"; fi
done
case " $PRESENT " in *" $TOP "*) ;; *) die "$TOP is not in /proc/kallsyms: this kernel cannot be timed for --event $EVENT (see docs/measuring.md)" ;; esac
SCRIPT="$TMP/trace.bt"
awk -v missing="$MISSING " '
	/^\/\/ @probe / { name = $3; skip = index(" " missing, " " name " ") > 0 }
	!skip { print }
	/^\/\/ @end/ { skip = 0 }
' "$BT" > "$SCRIPT"

# The header (once per file), then this run.
if [ ! -s "$OUT" ]; then
	printf 's2teardown-trace 1\n' > "$OUT"
fi
RUN=$(( $(grep -c '^run ' "$OUT" || true) + 1 ))
KERNEL=$(uname -r)
{
	echo "# host $(uname -n) $(uname -m), kernel $KERNEL, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# probes:$PRESENT"
	[ -z "$MISSING" ] || echo "# probes not in this kernel:$MISSING"
	printf 'run %s vm=%s backing=%s event=%s kernel=%s pid=%s' "$RUN" "$VM" "$BACKING" "$EVENT" "$KERNEL" "$PID"
	[ -z "$VARIANT" ] || printf ' variant=%s' "$VARIANT"
	[ -z "$MAPPED" ] || printf ' mapped=%s' "$MAPPED"
	[ -z "$MEMSLOTS" ] || printf ' memslots=%s' "$MEMSLOTS"
	[ -z "$LABEL" ] || printf ' label=%s' "$LABEL"
	printf '\n'
} >> "$OUT"

# bpftrace's own lines: keep `call`; turn "Lost N events" into `lost N`; drop the rest.
RAW="$TMP/raw"
BPFTRACE_PERF_RB_PAGES=${BPFTRACE_PERF_RB_PAGES:-1024} bpftrace "$SCRIPT" "$PID" > "$RAW" 2>"$TMP/err" &
BT_PID=$!
sleep 2  # let the probes attach before the teardown starts
kill -0 "$BT_PID" 2>/dev/null || { cat "$TMP/err" >&2; die "bpftrace did not start"; }
echo "s2teardown-trace: tracing $EVENT of pid $PID as run $RUN; start the teardown now" >&2
if [ -n "$DURATION" ]; then
	sleep "$DURATION"
elif [ "$EVENT" = exit ] && [ "$PID" != 0 ]; then
	while kill -0 "$PID" 2>/dev/null; do sleep 0.2; done
	sleep 2
else
	echo "s2teardown-trace: press Ctrl-C when the $EVENT is done" >&2
	trap 'true' INT
	wait "$BT_PID" || true
fi
kill -INT "$BT_PID" 2>/dev/null || true
STATUS=0
wait "$BT_PID" || STATUS=$?
sed -n -e 's/^\(call .*\)$/\1/p' -e 's/^Lost \([0-9]*\) events.*/lost \1/p' "$RAW" >> "$OUT"
echo "end $RUN" >> "$OUT"
N=$(grep -c "^call $TOP " "$RAW" || true)
echo "s2teardown-trace: run $RUN: $N call(s) of $TOP appended to $OUT" >&2
[ "$N" -gt 0 ] || echo "s2teardown-trace: warning: no call of $TOP was seen" >&2
if [ "$STATUS" -ne 0 ] && [ "$STATUS" -ne 130 ]; then cat "$TMP/err" >&2; exit "$STATUS"; fi
exit 0
