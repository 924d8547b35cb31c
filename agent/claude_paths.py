"""Where Claude Code keeps a project's transcripts, and how a project path moves between machines.

The project folder name (the "slug") follows Claude Code's ``sanitizePath``: every UTF-16 code unit outside
``[A-Za-z0-9]`` becomes ``-`` (JavaScript's ``replace(/[^a-zA-Z0-9]/g, '-')`` works on code units, so a character
outside the Basic Multilingual Plane becomes two dashes); past 200 characters the name is cut to 200 and a hash of
the original path is appended.  The Node build hashes with djb2 (``Math.abs(hash).toString(36)``); the Bun build
uses ``Bun.hash`` — so for such long paths a folder Claude Code already created with the same 200-character
prefix is preferred over the computed name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

MAX_SANITIZED_LENGTH = 200
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]


def djb2(text: str) -> int:
    """JavaScript's ``hash = ((hash << 5) - hash + charCodeAt(i)) | 0`` over UTF-16 code units, signed 32-bit."""
    h = 0
    for unit in _utf16_units(text):
        h = (h * 31 + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def _base36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS36[r])
    return "".join(reversed(out))


def project_slug(project_dir: str) -> str:
    """The folder name Claude Code gives the project at ``project_dir`` (an absolute path, any OS's form)."""
    units = _utf16_units(project_dir)
    sanitized = "".join(chr(u) if u < 128 and chr(u).isalnum() else "-" for u in units)
    if len(sanitized) <= MAX_SANITIZED_LENGTH:
        return sanitized
    return f"{sanitized[:MAX_SANITIZED_LENGTH]}-{_base36(abs(djb2(project_dir)))}"


def project_folder(projects: Path, project_dir: str) -> Path:
    """``projects/<slug>``; for a slug long enough to be hashed, the folder Claude Code already made, if one."""
    slug = project_slug(project_dir)
    if len(slug) > MAX_SANITIZED_LENGTH and projects.is_dir():
        prefix = slug[:MAX_SANITIZED_LENGTH] + "-"
        made = sorted(p for p in projects.iterdir() if p.is_dir() and p.name.startswith(prefix))
        if len(made) == 1:
            return made[0]
    return projects / slug


def claude_config_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Claude Code's home: the first root of ``$CLAUDE_CONFIG_DIR`` when set, else ``~/.claude``."""
    env = os.environ if env is None else env
    cfg = env.get("CLAUDE_CONFIG_DIR", "").strip()
    first = next((p.strip() for p in cfg.split(",") if p.strip()), "")
    if first:
        return Path(os.path.expanduser(first))
    return (home or Path.home()) / ".claude"


# ---- path mapping -------------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def is_windows_path(path: str) -> bool:
    return bool(_DRIVE.match(path)) or path.startswith("\\\\")


def _parts(path: str) -> list[str]:
    return [p for p in re.split(r"[\\/]+", path) if p]


def _join(target: str, rest: Sequence[str]) -> str:
    if not rest:
        return target
    sep = "\\" if is_windows_path(target) and "/" not in target else "/"
    return target.rstrip("\\/") + sep + sep.join(rest)


def map_path(path: str, mappings: Iterable[tuple[str, str]]) -> tuple[str, tuple[str, str] | None]:
    """Rewrite ``path`` by the longest mapping whose source is a whole-component prefix of it.

    Separators are compared loosely (a Windows source matches either slash) and Windows sources ignore case,
    as Windows does.  Returns the path (unchanged when nothing matches) and the mapping used.
    """
    src_parts = _parts(path)
    best: tuple[int, str, str] | None = None
    for source, target in mappings:
        sp = _parts(source)
        if not sp or len(sp) > len(src_parts):
            continue
        fold = is_windows_path(source) or is_windows_path(path)
        head = src_parts[:len(sp)]
        same = [a.casefold() for a in head] == [b.casefold() for b in sp] if fold else head == sp
        # a POSIX root-relative source must also start at the root
        if same and source.startswith("/") == path.startswith("/") and (best is None or len(sp) > best[0]):
            best = (len(sp), source, target)
    if best is None:
        return path, None
    n, source, target = best
    return _join(target, src_parts[n:]), (source, target)
