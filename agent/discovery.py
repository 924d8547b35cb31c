"""Find Claude Code transcript roots and classify the files under them.

Layouts (see claude-code-transcripts.md):
    projects/<slug>/<sessionId>.jsonl                               main session
    projects/<slug>/<sessionId>/subagents/[**/]agent-<id>.jsonl     subagent (2.1.2+), parent = <sessionId>
    projects/<slug>/agent-<id>.jsonl                                subagent (2.0.x), parent = its records' sessionId
Not transcripts: *.meta.json, tool-results/, workflows/**/journal.jsonl, history.jsonl, sessions-index.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

SKIP_DIRS = frozenset({"tool-results", "workflows"})


@dataclass(frozen=True)
class TranscriptFile:
    path: Path
    kind: str  # "main" | "subagent" | "agent-flat"
    session: str  # the session id this file is stored under (main: its own id; subagent: parent:agent-<id>)
    parent: str | None  # the parent session for subagents (None for flat agent files until read)
    agent_id: str | None
    project_slug: str


@dataclass
class ScanProblems:
    """What a scan could not look at, for ``import`` and ``status`` to report: folders it could not list
    (picked up by a later scan once readable) and transcript files it will not read."""

    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def messages(self) -> list[str]:
        return ([f"cannot read folder {p}: {why}" for p, why in self.unreadable]
                + [f"skipped {p}: {why}" for p, why in self.skipped])


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printable text even when its name is not valid UTF-8 (bytes shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _encodable(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def default_roots(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[Path]:
    env = os.environ if env is None else env
    home = home or Path.home()
    roots: list[Path] = []
    cfg = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if cfg:
        roots.extend(Path(os.path.expanduser(p.strip())) for p in cfg.split(",") if p.strip())
    else:
        roots.append(home / ".claude")
    legacy = home / ".config" / "claude"
    if legacy.is_dir() and legacy not in roots:
        roots.append(legacy)
    return roots


def resolve_roots(configured: Iterable[Path] | None, env: Mapping[str, str] | None = None) -> list[Path]:
    """Configured roots (flag or config) win over the defaults; duplicates removed, order kept."""
    roots = list(configured) if configured is not None else default_roots(env)
    seen: set[Path] = set()
    out = []
    for r in roots:
        r = Path(os.path.expanduser(str(r))).absolute()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def projects_dir(root: Path) -> Path:
    """Roots may be given as the Claude home or as its projects folder itself."""
    return root if root.name == "projects" or not (root / "projects").is_dir() else root / "projects"


def classify(path: Path, projects: Path) -> TranscriptFile | None:
    """What kind of transcript ``path`` is, or None when it is not a transcript."""
    if path.suffix != ".jsonl" or not _encodable(str(path)):
        return None
    try:
        rel = path.relative_to(projects)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) < 2 or any(p in SKIP_DIRS for p in parts[:-1]) or parts[-1] in ("history.jsonl", "journal.jsonl"):
        return None
    slug, stem = parts[0], path.stem
    if len(parts) == 2:
        if stem.startswith("agent-"):
            return TranscriptFile(path, "agent-flat", "", None, stem[len("agent-"):], slug)
        return TranscriptFile(path, "main", stem, None, None, slug)
    if "subagents" in parts[2:-1] and stem.startswith("agent-"):
        parent = parts[1]
        return TranscriptFile(path, "subagent", f"{parent}:{stem}", parent, stem[len("agent-"):], slug)
    return None


def discover(roots: Iterable[Path], problems: ScanProblems | None = None) -> Iterator[TranscriptFile]:
    """Every transcript under ``roots``.  Folders that cannot be listed and files whose name is not valid UTF-8
    (it could be neither stored nor synced) are noted in ``problems`` and passed over; the scan goes on."""
    def unreadable(exc: OSError) -> None:
        if problems is not None and exc.filename is not None:
            problems.unreadable.append((display_path(exc.filename), exc.strerror or str(exc)))

    for root in roots:
        projects = projects_dir(root)
        if not projects.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(projects, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(".jsonl"):
                    full = os.path.join(dirpath, name)
                    if not _encodable(full):
                        if problems is not None:
                            problems.skipped.append((display_path(full), "the file name is not valid UTF-8"))
                        continue
                    tf = classify(Path(full), projects)
                    if tf is not None:
                        yield tf
