"""Everything the real-kernel validation needs, built or fetched into one build directory.

* host tools from Debian's archive: qemu-system-arm (qemu-system-aarch64), gcc, the aarch64
  cross compiler and its libc (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross);
* the kernels: Debian's arm64 cloud kernel packages, from ``$S2T_SHARED/kernels`` (checked
  against its SHA256SUMS) when present, else downloaded with ``apt-get download``;
* the counting plugin (plugin/s2count.c) against QEMU's plugin API header (from
  ``$S2T_SHARED/kernels/qemu-7.2-plugin-api`` or the QEMU source package);
* the guest program (guest/s2probe.c, static arm64) and one initramfs per boot (busybox).

Anything that cannot be had raises `Unavailable`, which the runner reports as a loud skip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOST_PACKAGES = ("qemu-system-arm", "gcc", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross")
TOOLS = ("qemu-system-aarch64", "gcc", "aarch64-linux-gnu-gcc", "dpkg-deb")

#: Kernel series of the matrix: the package name prefix and the Debian suite that carries it.
SERIES: dict[str, tuple[str, str]] = {
    "6.1": ("linux-image-6.1.", "bookworm"),
    "6.12": ("linux-image-6.12.", "trixie"),
    "7.2": ("linux-binary-7.2.", "sid"),
}


class Unavailable(Exception):
    """Infrastructure the validation cannot have here (no archive, no QEMU, no kernel)."""


@dataclass(frozen=True)
class Kernel:
    series: str  # "6.1"
    package: str  # the .deb file name
    release: str  # uname -r, e.g. "6.1.0-57-cloud-arm64"
    version: str  # the package version, e.g. "6.1.192-3"
    image: Path  # the uncompressed arm64 Image


def shared_dir() -> Path | None:
    env = os.environ.get("S2T_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd, env=env)


def ensure_tools() -> None:
    """Install the host packages if a tool is missing (root and apt-get needed)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise Unavailable(f"missing {', '.join(missing)} and cannot install (need root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env)
    r = _run(["apt-get", "install", "-y", "-qq", *HOST_PACKAGES], env=env)
    still = [t for t in TOOLS if shutil.which(t) is None]
    if still:
        raise Unavailable(f"apt-get install {' '.join(HOST_PACKAGES)} failed: "
                          f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['?']}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified_debs(kdir: Path) -> list[Path]:
    sums: dict[str, str] = {}
    sumfile = kdir / "SHA256SUMS"
    if sumfile.is_file():
        for line in sumfile.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0]
    out = []
    for deb in sorted(kdir.glob("*.deb")):
        want = sums.get(deb.name)
        if want is not None and _sha256(deb) != want:
            raise Unavailable(f"{deb.name}: SHA256 differs from SHA256SUMS")
        out.append(deb)
    return out


def _apt_download(package: str, build: Path) -> tuple[Path, bool]:
    """``apt-get download`` one arm64 package into the build's downloads (arm64 added first)."""
    dl = build / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "--add-architecture", "arm64"])
    _run(["apt-get", "update", "-qq"])
    return dl, _run(["apt-get", "download", package], cwd=dl).returncode == 0


def _download(series: str, build: Path) -> Path:
    """apt-get download the newest arm64 cloud kernel of a series (bookworm's archive only)."""
    prefix, suite = SERIES[series]
    name = {"6.1": "linux-image-cloud-arm64:arm64"}.get(series)
    if name is None:
        raise Unavailable(f"kernel {series}: not in ../shared/kernels and its suite ({suite}) "
                          "needs a private apt configuration this runner does not set up")
    dl, ok = _apt_download(name, build)
    debs = sorted(dl.glob(prefix + "*.deb"))
    if not ok or not debs:
        raise Unavailable(f"kernel {series}: apt-get download {name} failed")
    return debs[-1]


def kernels(build: Path, wanted: list[str]) -> list[Kernel]:
    shared = shared_dir()
    debs = _verified_debs(shared / "kernels") if shared and (shared / "kernels").is_dir() else []
    out = []
    for series in wanted:
        prefix, _ = SERIES[series]
        found = [d for d in debs if d.name.startswith(prefix)]
        deb = found[-1] if found else _download(series, build)
        dest = build / "kernels" / deb.stem
        if not dest.is_dir():
            tmp = dest.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            r = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
            if r.returncode != 0:
                raise Unavailable(f"dpkg-deb -x {deb.name}: {r.stderr.strip()}")
            tmp.rename(dest)
        images = sorted(p for p in dest.rglob("vmlinuz*") if p.is_file())
        if not images:
            raise Unavailable(f"{deb.name}: no vmlinuz inside")
        image = images[0]
        m = re.search(r"vmlinuz-(.+)$", image.name)
        release = m.group(1) if m else image.parent.name
        version = deb.stem.split("_")[1] if "_" in deb.stem else "?"
        out.append(Kernel(series, deb.name, release, version, image))
    return out


def busybox(build: Path) -> Path:
    shared = shared_dir()
    debs = sorted((shared / "kernels").glob("busybox-static_*_arm64.deb")) if shared else []
    if not debs:
        dl, _ = _apt_download("busybox-static:arm64", build)
        debs = sorted(dl.glob("busybox-static_*_arm64.deb"))
    if not debs:
        raise Unavailable("busybox-static (arm64): not in ../shared/kernels and not downloadable")
    dest = build / "busybox"
    if not (dest / "bin" / "busybox").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(debs[-1]), str(dest)])
    bb = dest / "bin" / "busybox"
    if not bb.is_file():
        raise Unavailable(f"{debs[-1].name}: no bin/busybox inside")
    return bb


def plugin_header(build: Path) -> Path:
    """The directory holding qemu-plugin.h (API v1, QEMU 7.2)."""
    shared = shared_dir()
    if shared and (shared / "kernels" / "qemu-7.2-plugin-api" / "qemu-plugin.h").is_file():
        return shared / "kernels" / "qemu-7.2-plugin-api"
    dest = build / "qemu-plugin-api"
    if (dest / "qemu-plugin.h").is_file():
        return dest
    src = build / "qemu-source"
    src.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", "source", "--download-only", "qemu"], cwd=src)
    for tarball in sorted(src.glob("qemu_*.orig.tar.*")):
        with tarfile.open(tarball) as tf:
            for member in tf.getmembers():
                if member.name.endswith("include/qemu/qemu-plugin.h"):
                    dest.mkdir(parents=True, exist_ok=True)
                    data = tf.extractfile(member)
                    if data is not None:
                        (dest / "qemu-plugin.h").write_bytes(data.read())
                        return dest
    raise Unavailable("qemu-plugin.h: not in ../shared/kernels and no QEMU source package "
                      "(add a deb-src line for apt-get source)")


def _newer(target: Path, *sources: Path) -> bool:
    return target.is_file() and all(target.stat().st_mtime >= s.stat().st_mtime for s in sources)


def plugin(build: Path) -> Path:
    src = HERE / "plugin" / "s2count.c"
    out = build / "s2count.so"
    if not _newer(out, src):
        hdr = plugin_header(build)
        r = _run(["gcc", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", f"-I{hdr}", "-o", str(out), str(src)])
        if r.returncode != 0:
            raise RuntimeError(f"building the plugin failed:\n{r.stderr}")
    return out


def guest(build: Path) -> Path:
    src = HERE / "guest" / "s2probe.c"
    out = build / "s2probe"
    if not _newer(out, src):
        r = _run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", str(out), str(src)])
        if r.returncode != 0:
            raise RuntimeError(f"building the guest program failed:\n{r.stderr}")
    return out


def _cpio_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    """One entry of a newc cpio archive (the initramfs format the kernel unpacks)."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    blob = head + name.encode() + b"\0"
    blob += b"\0" * (-len(blob) % 4)
    blob += data
    blob += b"\0" * (-len(blob) % 4)
    return blob


def initramfs(path: Path, busybox_bin: Path, probe: Path, cases: list[str], symbols: bool) -> None:
    """Write a newc initramfs: busybox, the guest program, /init and the case list."""
    files: list[tuple[str, int, bytes]] = [
        ("bin", 0o040755, b""), ("dev", 0o040755, b""), ("proc", 0o040755, b""),
        ("sys", 0o040755, b""), ("tmp", 0o041777, b""),
        ("bin/busybox", 0o100755, busybox_bin.read_bytes()),
        ("bin/s2probe", 0o100755, probe.read_bytes()),
        ("init", 0o100755, (HERE / "initramfs" / "init").read_bytes()),
        ("cases", 0o100644, ("\n".join(cases) + "\n").encode()),
    ]
    if symbols:
        files.append(("symbols", 0o100644, b""))
    blob = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(files))
    blob += _cpio_entry("TRAILER!!!", 0, b"", 0)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
