"""A session's transcript lines as they were captured, read back from the cache in their original order.

Every line lives verbatim in exactly one stored event: a conversational record in the ``records`` list of the
MessageIndexed event that won for its message (with its line number in ``lines``), any other record as the
``raw`` of a RecordsCaptured record (with ``line``).  ``_verbatim_sources`` is the one function that knows this
layout, so a change to how records are stored changes one place.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import apsw

from cxsync.sync import events as ev


@dataclass
class Transcript:
    """The captured lines of one transcript file: ``lines`` is (line number, [raw text …]) in file order —
    several texts on one number when two records were glued on one line."""

    session: str
    lines: list[tuple[int, list[str]]] = field(default_factory=list)
    conflicts: int = 0  # lines another machine's file of the same session id holds differently: left out
    redacted: int = 0  # lines from events whose secrets were redacted before they left the capturing machine

    @property
    def missing(self) -> list[int]:
        """Line numbers below the last one that hold nothing: blank lines, unreadable lines, or records first
        captured in another session's file (a resume copies them): none of these were kept for this file."""
        have = {n for n, _ in self.lines}
        last = self.lines[-1][0] if self.lines else 0
        return [n for n in range(1, last + 1) if n not in have]

    def to_bytes(self) -> bytes:
        """The file as captured: each line's text and a newline (a torn last line was never captured)."""
        return b"".join("".join(raws).encode("utf-8", "surrogatepass") + b"\n" for _, raws in self.lines)

    def records(self) -> Iterator[tuple[int, str]]:
        for n, raws in self.lines:
            for raw in raws:
                yield n, raw


def _decoded(conn: apsw.Connection, column: str, value: Any) -> ev.ContextEvent:
    blob = conn.execute(f"SELECT payload FROM events WHERE {column}=?", (value,)).fetchone()
    if blob is None:
        raise LookupError(f"event {value!r} is referenced but not stored")
    return ev.decode(bytes(blob[0]))


def _verbatim_sources(conn: apsw.Connection, session: str) -> Iterator[tuple[int, int, str, str, bool]]:
    """(line, order within the line, raw text, capturing machine, redacted) of every record held for
    ``session``; ``redacted``: its event had secrets replaced (sync.redact) before it left that machine."""
    for payload, machine in conn.execute(
            "SELECT e.payload, coalesce(m.machine, '') FROM messages m JOIN events e ON e.event_id = m.event_id"
            " WHERE m.session_id=?", (session,)):
        d = ev.decode(bytes(payload)).data
        redacted = bool(d.get("redacted"))
        for i, (raw, line) in enumerate(zip(d.get("records") or [], d.get("lines") or [])):
            yield int(line), i, str(raw), str(machine), redacted
    wanted: dict[int, dict[str, int]] = {}
    for key, line, seq in conn.execute("SELECT key, line, event_seq FROM records WHERE session_id=?",
                                       (session,)).fetchall():
        if line is not None:
            wanted.setdefault(int(str(seq)), {})[str(key)] = int(str(line))
    for seq, keys in wanted.items():
        e = _decoded(conn, "seq", seq)
        redacted = bool(e.data.get("redacted"))
        for i, r in enumerate(e.data.get("records") or []):
            if r.get("key") in keys:
                yield keys[r["key"]], i, str(r.get("raw", "")), e.machine, redacted


def transcript(conn: apsw.Connection, session: str) -> Transcript:
    """The captured lines of the file whose session id (``parent:agent-<id>`` for a subagent) is ``session``.

    One session id can have a file on several machines: resumed elsewhere and continued there, the new lines
    follow the old ones (the resumed file was recorded as read up to its last line), so the lines of all
    machines make up one file.  Where two machines hold different text for one line (an unrelated file of the
    same id), the machine holding most of the session wins that line and the other is counted as a conflict.
    """
    sources = list(_verbatim_sources(conn, session))
    out = Transcript(session, redacted=len({s[0] for s in sources if s[4]}))
    if len({s[3] for s in sources}) <= 1:  # the usual case, one capturing machine: sort and group
        sources.sort(key=lambda s: (s[0], s[1]))
        for line, group in itertools.groupby(sources, key=lambda s: s[0]):
            out.lines.append((line, [s[2] for s in group]))
        return out
    by_line: dict[int, dict[str, list[tuple[int, str]]]] = {}
    per_machine: dict[str, int] = {}
    for line, order, raw, machine, _ in sources:
        by_line.setdefault(line, {}).setdefault(machine, []).append((order, raw))
    for held in by_line.values():
        for machine in held:
            per_machine[machine] = per_machine.get(machine, 0) + 1
    rank = sorted(per_machine, key=lambda m: (-per_machine[m], m))
    for line in sorted(by_line):
        held = by_line[line]
        first = next(m for m in rank if m in held)
        texts = [raw for _, raw in sorted(held[first])]
        out.conflicts += any(sorted(r for _, r in v) != sorted(texts) for m, v in held.items() if m != first)
        out.lines.append((line, texts))
    return out


@dataclass(frozen=True)
class SessionFile:
    """One file of a conversation: the main session or one of its subagents."""

    session: str
    kind: str  # main | subagent | agent-flat
    relpath: tuple[str, ...]  # path inside the project folder, as Claude Code lays it out
    agent_id: str | None
    source_file: str | None


def _split(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p]


def safe_name(name: str) -> bool:
    """Whether ``name`` (from another machine's events) can be one path component here: nothing that climbs
    out of the folder, names a drive or a separator, or hides a control character."""
    return (name not in ("", ".", "..") and not any(c in name for c in '/\\:') and name.isprintable()
            and len(name.encode("utf-8", "surrogatepass")) <= 255)


def _relpath(root: str, session: str, agent_id: str | None, source: str | None) -> tuple[tuple[str, ...], str]:
    """Where a subagent file goes below the project folder: as it was on the capturing machine."""
    parts = _split(source) if source else []
    if root in parts[:-1] and all(safe_name(p) for p in parts[parts.index(root):]):
        return tuple(parts[parts.index(root):]), "subagent"
    name = parts[-1] if parts and parts[-1].endswith(".jsonl") and safe_name(parts[-1]) else None
    if name and name.startswith("agent-"):  # 2.0.x: flat beside the main file
        return (name,), "agent-flat"
    agent = agent_id or session.rpartition(":agent-")[2]
    if not safe_name(f"agent-{agent}.jsonl"):
        agent = hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return (root, "subagents", f"agent-{agent}.jsonl"), "subagent"


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def session_files(conn: apsw.Connection, root: str) -> list[SessionFile]:
    """The main file of ``root`` and its subagents' files (each with a captured line), main first."""
    out = []
    rows = conn.execute(
        "SELECT session_id, agent_id, source_file FROM sessions WHERE root_session=? ORDER BY"
        " session_id != root_session, session_id", (root,)).fetchall()
    for row in rows:
        session, agent_id, source = str(row[0]), _opt(row[1]), _opt(row[2])
        if session == root:
            out.append(SessionFile(session, "main", (f"{root}.jsonl",), None, source))
        else:
            rel, kind = _relpath(root, session, agent_id, source)
            out.append(SessionFile(session, kind, rel, agent_id, source))
    return out


def deleted_files(conn: apsw.Connection, since: str | None = None) -> list[dict[str, Any]]:
    """Transcript files this machine captured and then saw disappear (Claude Code's clean-up, or a person)."""
    sql = "SELECT path, kind, session_id, updated_at FROM files WHERE status='deleted'"
    args: tuple[Any, ...] = ()
    if since:
        sql += " AND updated_at >= ?"
        args = (since,)
    return [{"path": p, "kind": k, "session": s, "deleted_at": u}
            for p, k, s, u in conn.execute(sql + " ORDER BY path", args)]


def read_session(conn: apsw.Connection, root: str) -> tuple[list[SessionFile], dict[str, Transcript]]:
    """The files of a conversation and their lines, read in one transaction: a consistent snapshot even while
    the agent is capturing more of it."""
    with conn:
        files = session_files(conn, root)
        lines = {f.session: transcript(conn, f.session) for f in files}
    return files, lines
