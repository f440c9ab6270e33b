"""The sweep as a log-log plot (matplotlib, the optional extra ``plot``), written atomically."""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from s2teardown.core.vocabulary import PHASES
from s2teardown.errors import UserError
from s2teardown.features.sweep import SweepResult
from s2teardown.inputs.files import short_text
from s2teardown.inputs.units import short_size


def plot_format(path: str | Path) -> str:
    """``png`` or ``svg`` from the file name; UserError otherwise."""
    fmt = PLOT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError("--plot", None, None, "a file name ending in .png or .svg",
                        repr(short_text(str(path))))
    return fmt


def require_matplotlib() -> Any:
    """The `matplotlib.figure` module, or a one-line UserError saying how to install it."""
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError:
        raise UserError(
            "--plot",
            None,
            None,
            "matplotlib, the optional extra 'plot' (pip install 's2teardown[plot]')",
            "it is not installed",
        ) from None


def plot_sweep(result: SweepResult, path: str | Path) -> None:
    """Per-phase time and the Stage-2 total against VM size, log-log, one panel per
    (machine, backing, event) row and variant column; written atomically to ``path``."""
    fmt = plot_format(path)
    mfig = require_matplotlib()
    ticker = importlib.import_module("matplotlib.ticker")
    configs = [
        (m, b, e)
        for m in range(len(result.machines))
        for b in range(len(result.backings))
        for e in range(len(result.events))
    ]
    n_rows, n_cols = len(configs), len(result.variants)
    if n_rows * n_cols > MAX_PLOT_PANELS:
        raise UserError(
            "--plot",
            None,
            None,
            f"at most {MAX_PLOT_PANELS} panels (machines × backings × events × variants)",
            f"{n_rows} × {n_cols} = {n_rows * n_cols}",
            "select fewer --variants",
        )
    order = np.argsort(np.array(result.vm_bytes))
    x = np.array(result.vm_bytes, dtype=np.float64)[order] / float(1 << 30)
    fig = mfig.Figure(
        figsize=(min(3.2 * n_cols + 1.5, 60.0), min(2.6 * n_rows + 1.2, 60.0)), layout="constrained"
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey="row")
    colours = {p: f"C{i}" for i, p in enumerate(PHASES)}
    drawn: dict[str, Any] = {}
    s2 = result.stage2_ns
    for r, (m, b, e) in enumerate(configs):
        for v, name in enumerate(result.variants):
            ax = axes[r][v]
            t = result.time_ns[m, :, b, e, v, :][order]
            for i, phase in enumerate(PHASES):
                y = t[:, i]
                if not np.any(y > 0):
                    continue
                style = "--" if phase == "host_free" else "-"
                (line,) = ax.plot(
                    x,
                    np.where(y > 0, y / 1e9, np.nan),
                    style,
                    color=colours[phase],
                    linewidth=1.0,
                    marker="." if len(x) < 2 else None,
                    zorder=2,
                )
                drawn.setdefault(phase, line)
            total = s2[m, :, b, e, v][order]
            if np.any(total > 0):
                (line,) = ax.plot(
                    x,
                    np.where(total > 0, total / 1e9, np.nan),
                    "-",
                    color="black",
                    linewidth=2.5,
                    marker="o" if len(x) < 2 else None,
                    zorder=1.5,
                    alpha=0.8,
                )
                drawn.setdefault("Stage-2 total", line)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_size_tick))
            ax.set_yscale("log")
            ax.grid(True, which="major", linewidth=0.3)
            if r == 0:
                ax.set_title(name, fontsize=9)
            if v == 0:
                ax.set_ylabel(
                    f"{result.machines[m]}, {result.backing_label(b)}, "
                    f"{result.events[e]}\ntime (s)",
                    fontsize=8,
                )
            if r == n_rows - 1:
                ax.set_xlabel("VM size", fontsize=8)
            ax.tick_params(labelsize=7)
    if drawn:
        labels = [k for k in ("Stage-2 total", *PHASES) if k in drawn]
        fig.legend(
            [drawn[k] for k in labels],
            [k if k != "host_free" else "host_free (outside Stage-2)" for k in labels],
            loc="outside lower center",
            ncol=min(len(labels), 6),
            fontsize=8,
        )
    fig.suptitle("s2teardown sweep: time per phase against VM size", fontsize=10)
    _save_atomic(fig, Path(path), fmt)


def _size_tick(x: float, _pos: Any = None) -> str:
    """An x tick (GiB) as the --vm syntax: 1G, 512M, 1T."""
    n = round(x * (1 << 30))
    return short_size(n) if n > 0 else ""


def _save_atomic(fig: Any, target: Path, fmt: str) -> None:
    """Save to a temporary file beside ``target``, fsync, rename over it; the file gets the
    mode a new file would (or the old file's)."""
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    meta: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    try:
        try:
            mode = target.stat().st_mode & 0o777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, metadata=meta, dpi=110)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


#: Most panels one plot may hold (machines × backings × events × variants).
MAX_PLOT_PANELS = 400


PLOT_FORMATS = {".png": "png", ".svg": "svg"}
