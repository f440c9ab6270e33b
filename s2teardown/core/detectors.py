"""The kernel's lock-hold detectors: which one a non-preemptible stretch trips, and what it prints.

One row per detector (docs/model.md §11.5, "The detectors"): the rule that decides, the knob that
sets its threshold, the kernel releases that have it, and the message as the kernel prints it.
Every fact is cited to the kernel function that decides or prints it.  Pure: no I/O.

Which stretch a detector sees depends on the preemption model (``--preempt``).  A stretch here is
the longest Stage-2 segment between two resched points (`cond_resched_lock`), as the model
computes it; with ``none`` or ``voluntary`` nothing but a resched point lets the CPU schedule, so
every detector sees the whole stretch, locked or not; with ``full`` the CPU can be preempted
wherever preemption is enabled, so only the part holding ``mmu_lock`` (a spinlock or rwlock:
preemption off) counts.  Times are measured from the start of that stretch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DETECTORS",
    "DEFAULT_RCU_STALL_TIMEOUT_S",
    "DEFAULT_RESCHED_LATENCY_WARN_MS",
    "DEFAULT_WATCHDOG_THRESH_S",
    "Detector",
    "DetectorSettings",
    "Firing",
    "detector",
    "firings",
    "kernel_release",
]

#: ``watchdog_thresh`` default, seconds: ``int __read_mostly watchdog_thresh = 10;``,
#: kernel/watchdog.c (v5.5 … v6.19); sysctl ``kernel.watchdog_thresh``, boot ``watchdog_thresh=``.
DEFAULT_WATCHDOG_THRESH_S = 10.0
#: ``CONFIG_RCU_CPU_STALL_TIMEOUT`` default, seconds (kernel/rcu/Kconfig.debug, ``default 21``,
#: v5.5 … v6.19); read by ``rcu_jiffies_till_stall_check`` (kernel/rcu/tree_stall.h), which clamps
#: it to 3 … 300; boot ``rcupdate.rcu_cpu_stall_timeout=``, also
#: /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout.
DEFAULT_RCU_STALL_TIMEOUT_S = 21.0
#: The clamp of ``rcu_jiffies_till_stall_check`` (kernel/rcu/tree_stall.h): below 3 s reads as 3,
#: above 300 s as 300.
RCU_STALL_TIMEOUT_RANGE_S = (3, 300)
#: ``sysctl_resched_latency_warn_ms = 100`` (kernel/sched/core.c, v5.13: commit c006fac556e4
#: "sched: Warn on long periods of pending need_resched", in the v5.13 scheduler pull; the
#: message became a pr_err in v6.14, commit 8061b9f5e111); debugfs
#: /sys/kernel/debug/sched/latency_warn_ms, boot ``resched_latency_warn_ms=``.
DEFAULT_RESCHED_LATENCY_WARN_MS = 100.0

PREEMPT_MODES = ("none", "voluntary", "full")


@dataclass(frozen=True)
class Detector:
    """One kernel detector, as docs/model.md's table lists it."""

    key: str  # "soft_lockup" | "rcu_stall" | "need_resched" | "hard_lockup"
    name: str
    decides: str  # the kernel function (and file) that compares and prints
    rule: str  # the threshold, in words
    setting: str  # the config option / sysctl / boot parameter that sets it
    since: tuple[int, int]  # first mainline release that has it (arm64)
    since_text: str
    format: str  # the printf format, prefix (pr_fmt) included, verbatim from the kernel
    message: str  # the same with the run-time values shown as N, TASK, PID
    sees: str  # the stretches it sees
    on_by_default: bool  # False: it fires only if enabled (need_resched: LATENCY_WARN)
    can_fire: bool  # False: the modelled stretches never trip it (hard lockup)
    note: str = ""


SOFT_LOCKUP = Detector(
    key="soft_lockup",
    name="soft lockup",
    decides="watchdog_timer_fn → is_softlockup (kernel/watchdog.c)",
    rule="stuck for more than get_softlockup_thresh() = 2 × watchdog_thresh (20 s by default)",
    setting="sysctl kernel.watchdog_thresh (boot watchdog_thresh=; --watchdog-thresh); "
    "CONFIG_SOFTLOCKUP_DETECTOR",
    since=(0, 0),
    since_text="every modelled kernel (v5.5 … v7.2)",
    format="watchdog: BUG: soft lockup - CPU#%d stuck for %us! [%s:%d]",
    message="watchdog: BUG: soft lockup - CPU#N stuck for Ns! [TASK:PID]",
    sees="no schedule on the CPU: the per-CPU stopper work that touches the watchdog "
    "(softlockup_fn) cannot run",
    on_by_default=True,
    can_fire=True,
    note="the hrtimer checks every 2 × watchdog_thresh / 5 (4 s), so the report comes up to one "
    "period after the threshold; it repeats every further 2 × watchdog_thresh while stuck",
)
RCU_STALL = Detector(
    key="rcu_stall",
    name="RCU CPU stall",
    decides="check_cpu_stall → print_cpu_stall (kernel/rcu/tree_stall.h)",
    rule="a grace period older than rcu_jiffies_till_stall_check() = "
    "CONFIG_RCU_CPU_STALL_TIMEOUT (21 s by default)",
    setting="CONFIG_RCU_CPU_STALL_TIMEOUT (boot rcupdate.rcu_cpu_stall_timeout=; "
    "--rcu-stall-timeout), clamped to 3 … 300 s",
    since=(0, 0),
    since_text="every modelled kernel (v5.5 … v7.2)",
    format="rcu: INFO: %s self-detected stall on CPU",
    message="rcu: INFO: rcu_sched self-detected stall on CPU",
    sees="no quiescent state: with preempt none/voluntary (tree RCU, rcu_sched) none before a "
    "schedule; with preempt full (preemptible RCU, rcu_preempt) none while preemption is off",
    on_by_default=True,
    can_fire=True,
    note="the stalled CPU reports itself; other CPUs may also print \"rcu: INFO: rcu_sched "
    "detected stalls on CPUs/tasks:\"; measured from the grace period's start, which is at or "
    "after the stretch's; repeats at 3 × the timeout + 3 jiffies",
)
NEED_RESCHED = Detector(
    key="need_resched",
    name="need_resched latency",
    decides="scheduler_tick (sched_tick in later kernels) → cpu_resched_latency "
    "(kernel/sched/core.c) → resched_latency_warn (kernel/sched/debug.c)",
    rule="need_resched set for more than resched_latency_warn_ms (100 ms by default) without "
    "a schedule",
    setting="sched feature LATENCY_WARN (off by default; /sys/kernel/debug/sched/features); "
    "debugfs sched/latency_warn_ms (boot resched_latency_warn_ms=); CONFIG_SCHED_DEBUG",
    since=(5, 13),
    since_text="v5.13 (\"sched: Warn on long periods of pending need_resched\"); a WARN until "
    "v6.14, pr_err + stack since",
    format="sched: CPU %d need_resched set for > %llu ns (%d ticks) without schedule",
    message="sched: CPU N need_resched set for > N ns (N ticks) without schedule",
    sees="no schedule while need_resched is set (set by a waking task, the tick, or the "
    "watchdog's stopper)",
    on_by_default=False,
    can_fire=True,
    note="fires only if LATENCY_WARN is enabled (SCHED_FEAT(LATENCY_WARN, false)); once per boot "
    "by default (latency_warn_once = 1); checked at each tick, so it comes up to one tick late",
)
HARD_LOCKUP = Detector(
    key="hard_lockup",
    name="hard lockup",
    decides="watchdog_overflow_callback (kernel/watchdog_hld.c, perf NMI; watchdog_perf.c later) / "
    "watchdog_hardlockup_check (kernel/watchdog.c, v6.5+)",
    rule="no hrtimer interrupt on the CPU for watchdog_thresh (10 s by default)",
    setting="sysctl kernel.nmi_watchdog, kernel.watchdog_thresh; CONFIG_HARDLOCKUP_DETECTOR "
    "(arm64: perf with pseudo-NMI, or the buddy detector)",
    since=(6, 5),
    since_text="arm64: v6.5 (the buddy detector, and the perf one with CONFIG_ARM64_PSEUDO_NMI and "
    "irqchip.gicv3_pseudo_nmi=1; release taken from the upstream buddy-detector series, not "
    "re-checked against the tree)",
    format="Watchdog detected hard LOCKUP on cpu %d",
    message="Watchdog detected hard LOCKUP on cpu N",
    sees="interrupts disabled: the hrtimer interrupt that counts hrtimer_interrupts cannot run",
    on_by_default=True,
    can_fire=False,
    note="never fires here: the teardown walks take mmu_lock with spin_lock / write_lock / "
    "read_lock, not the _irq forms, so the timer interrupt keeps running; prefixed \"NMI "
    "watchdog: \" (perf) or \"watchdog: \" (buddy), and \"CPU%u: \" in later kernels",
)

#: Every detector, in the order of their default thresholds (need_resched first, hard lockup last).
DETECTORS: tuple[Detector, ...] = (NEED_RESCHED, SOFT_LOCKUP, RCU_STALL, HARD_LOCKUP)


def detector(key: str) -> Detector:
    for d in DETECTORS:
        if d.key == key:
            return d
    raise ValueError(f"detector: expected one of {', '.join(d.key for d in DETECTORS)}, got {key!r}")


def kernel_release(text: str | None) -> tuple[int, int] | None:
    """``"5.10"`` → (5, 10); None or anything else → None (unknown)."""
    if not text:
        return None
    parts = str(text).lstrip("vV").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class DetectorSettings:
    """The knobs in force: ``--preempt``, ``--watchdog-thresh``, ``--rcu-stall-timeout``."""

    preempt: str = "none"
    watchdog_thresh_s: float = DEFAULT_WATCHDOG_THRESH_S
    rcu_stall_timeout_s: float = DEFAULT_RCU_STALL_TIMEOUT_S
    resched_latency_warn_ms: float = DEFAULT_RESCHED_LATENCY_WARN_MS

    def __post_init__(self) -> None:
        if self.preempt not in PREEMPT_MODES:
            raise ValueError(f"preempt: expected one of {', '.join(PREEMPT_MODES)}, got {self.preempt!r}")
        for name in ("watchdog_thresh_s", "rcu_stall_timeout_s", "resched_latency_warn_ms"):
            x = getattr(self, name)
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"{name}: expected a positive number, got {x!r}")

    @property
    def rcu_flavour(self) -> str:
        """``rcu_state.name``: "rcu_preempt" with CONFIG_PREEMPT_RCU (a full-preemption kernel),
        "rcu_sched" otherwise (kernel/rcu/tree_plugin.h / tree.c)."""
        return "rcu_preempt" if self.preempt == "full" else "rcu_sched"

    def threshold_ns(self, key: str) -> float:
        if key == "soft_lockup":
            return 2.0 * self.watchdog_thresh_s * 1e9
        if key == "rcu_stall":
            return self.rcu_stall_timeout_s * 1e9
        if key == "need_resched":
            return self.resched_latency_warn_ms * 1e6
        if key == "hard_lockup":
            return self.watchdog_thresh_s * 1e9
        raise ValueError(f"detector: unknown {key!r}")

    def message(self, key: str) -> str:
        d = detector(key)
        if key == "rcu_stall":
            return d.message.replace("rcu_sched", self.rcu_flavour)
        return d.message

    def threshold_text(self, key: str) -> str:
        """The threshold in force, with the knob it comes from."""
        s = self.threshold_ns(key) / 1e9
        if key == "soft_lockup":
            return f"2 × watchdog_thresh = {s:g} s"
        if key == "rcu_stall":
            return f"rcu_cpu_stall_timeout = {s:g} s"
        if key == "need_resched":
            return f"resched_latency_warn_ms = {self.resched_latency_warn_ms:g} ms"
        return f"watchdog_thresh = {s:g} s"


@dataclass(frozen=True)
class Firing:
    """One detector one stretch trips: when (from the stretch's start) and what it prints."""

    key: str
    name: str
    threshold_ns: float
    first_fire_ns: float  # from the start of the stretch
    message: str
    format: str
    on_by_default: bool
    threshold_text: str


def firings(stretch_ns: float, kernel: tuple[int, int] | None, settings: DetectorSettings) -> list[Firing]:
    """Every detector a non-preemptible stretch of ``stretch_ns`` trips, earliest first.

    ``stretch_ns`` is the stretch the detectors see under ``settings.preempt`` (the caller picks
    it: the longest stretch, or with ``full`` the longest one holding ``mmu_lock``).  Each
    detector compares strictly (``time_after``, ``resched_latency <= …`` returns): a stretch equal
    to the threshold does not fire.  A detector the kernel release lacks (``kernel`` older than
    ``since``) does not fire; an unknown release is taken to have it.  The hard-lockup detector
    never fires: the stretches run with interrupts enabled.  The first fire is put at the
    threshold from the stretch's start (the kernel samples: see each detector's note).
    """
    out = []
    for d in DETECTORS:
        if not d.can_fire:
            continue
        if kernel is not None and kernel < d.since:
            continue
        limit = settings.threshold_ns(d.key)
        if stretch_ns > limit:
            out.append(Firing(d.key, d.name, limit, limit, settings.message(d.key), d.format,
                              d.on_by_default, settings.threshold_text(d.key)))
    out.sort(key=lambda f: f.first_fire_ns)
    return out
