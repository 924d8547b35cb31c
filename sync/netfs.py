"""Is a path on a network filesystem?  SQLite's WAL needs shared memory between its users, which NFS, SMB/CIFS,
sshfs and friends do not provide: an embedded log there can corrupt or silently lose events.

Linux: the longest mount point of ``/proc/self/mountinfo`` that contains the path gives its filesystem type.
macOS and the BSDs: ``statfs``'s ``f_fstypename`` via ``os.statvfs`` is not exposed, so ``mount`` output is read
the same way.  Elsewhere (Windows: a UNC path ``\\\\server\\share`` is the tell) the check is best effort.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "afs", "ncpfs", "coda",
    "fuse.gvfsd-fuse", "fuse.rclone", "fuse.s3fs", "webdav", "davfs", "fuse.davfs2", "glusterfs", "fuse.glusterfs",
    "ceph", "fuse.ceph", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2", "afpfs", "fuse.juicefs",
})


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def linux_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs from /proc/self/mountinfo text."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        out.append((_unescape(fields[4]), right.split()[0]))
    return out


def bsd_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, type) pairs from ``mount`` output: ``dev on /point (type, options)``."""
    out = []
    for line in text.splitlines():
        dev, sep, rest = line.partition(" on ")
        point, sep2, opts = rest.rpartition(" (")
        if sep and sep2:
            out.append((point, opts.split(",")[0].strip(" )")))
    return out


def mounts() -> list[tuple[str, str]]:
    if sys.platform.startswith("linux"):
        try:
            return linux_mounts(Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return []
    if sys.platform == "darwin" or "bsd" in sys.platform:
        try:
            text = subprocess.run(["mount"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return bsd_mounts(text)
    return []


def filesystem_of(path: str | os.PathLike[str], table: list[tuple[str, str]] | None = None) -> str | None:
    """The filesystem type holding ``path`` (its nearest existing ancestor), None if unknown."""
    p = Path(os.path.abspath(os.fspath(path)))
    rest: list[str] = []
    while not p.exists() and p != p.parent:  # the log file (or its folder) may not exist yet
        rest.insert(0, p.name)
        p = p.parent
    real = os.path.join(os.path.realpath(p), *rest)
    best: tuple[int, str] | None = None
    for point, fstype in (mounts() if table is None else table):
        point = point.rstrip("/") or "/"
        if real == point or real.startswith(point if point == "/" else point + "/"):
            if best is None or len(point) >= best[0]:
                best = (len(point), fstype)
    return None if best is None else best[1]


def network_filesystem(path: str | os.PathLike[str], table: list[tuple[str, str]] | None = None) -> str | None:
    """The network filesystem type holding ``path``, or None when it is local (or cannot be told)."""
    if os.name == "nt" and os.path.abspath(os.fspath(path)).startswith("\\\\"):
        return "smb"
    fstype = filesystem_of(path, table)
    if fstype is None:
        return None
    base = fstype.lower()
    return fstype if base in NETWORK_TYPES or base.split(".")[0] in NETWORK_TYPES else None
