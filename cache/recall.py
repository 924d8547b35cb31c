"""Recall (the seed's ``/recall``): the best past material for a topic, as one compact Markdown block a model reads.

A block is made of *items*, ranked, deduplicated and cut to a token budget:

- an **exchange**: a user's prompt with what followed it (the outcome — the last thing the assistant said before
  the next prompt — and the passage that matched the topic), found through the cache's full-text search;
- a **session** summary (no topic, a project): recent sessions of that project, their title, first and last
  prompt and last outcome.

Knowledge items (decisions, patterns, error fixes: issue 15) become a third kind of :class:`Item` produced by
their own query and ranked with the others; rendering, dedup and the budget do not care where an item came from.

Every reader (CLI, MCP server, SessionStart hook) calls these functions, so all of them give the same answers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import apsw

    from cxsync.cache.search import Hit, Queries

DEFAULT_BUDGET = 2000
MIN_BUDGET = 60
SEARCH_DEPTH = 60  # hits looked at per query; exchanges are built from these
_EQUAL = 0.05  # relevances within 5 % of each other are equals, and then the newest comes first

# ---- text -----------------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BLANKS = re.compile(r"\n{3,}")
_HL = re.compile("[\x02\x03]")


def safe_text(text: str) -> str:
    """Transcript text as data: terminal styling sequences dropped (a model gains nothing from them), any other
    control character made visible, so the block never reaches a terminal as control sequences."""
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of a tokenizer's count: 3.5 ASCII characters a token (English prose runs at
    about 4, code at 3 to 4) and one token for every other character (CJK, symbols), so a block estimated within
    its budget fits it."""
    if text.isascii():
        return math.ceil(len(text) / 3.5)
    ascii_chars = len(text.encode("ascii", "ignore"))  # in C: a block's text is estimated often while it grows
    return math.ceil(ascii_chars / 3.5) + (len(text) - ascii_chars)


def blocks(text: str) -> list[tuple[bool, str]]:
    """Split Markdown into (is_code, text) runs: fenced code blocks are atomic. An unterminated fence is closed
    at the end, so an excerpt never leaves the rest of the block inside a code block."""
    out: list[tuple[bool, str]] = []
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        if prose:
            out.append((False, "\n".join(prose)))
            prose = []
        fence = m.group(1)
        code = [lines[i]]
        i += 1
        closed = False
        while i < len(lines):
            code.append(lines[i])
            close = _FENCE.match(lines[i])
            i += 1
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence) \
                    and not lines[i - 1].strip()[len(close.group(1)):].strip():
                closed = True
                break
        if not closed:
            code.append(fence)
        out.append((True, "\n".join(code)))
    if prose:
        out.append((False, "\n".join(prose)))
    return out


def clip(text: str, max_tokens: int) -> str:
    """The longest head of ``text`` within ``max_tokens`` that never cuts a code block: whole code blocks or none;
    prose is cut at a word boundary and marked with an ellipsis."""
    text = _BLANKS.sub("\n\n", text.strip())
    if estimate_tokens(text) <= max_tokens:
        return text
    out = ""
    for is_code, run in blocks(text):
        joined = f"{out}\n{run}" if out else run
        if estimate_tokens(joined) <= max_tokens - 1:
            out = joined
            continue
        if not is_code:
            room = max_tokens - 1 - estimate_tokens(out + "\n" if out else "")
            head = _prose_head(run, room)
            if head:
                out = f"{out}\n{head}" if out else head
        return (out + " …").strip() if out else ""
    return out


def _prose_head(run: str, max_tokens: int) -> str:
    if max_tokens <= 0:
        return ""
    n = min(len(run), int(max_tokens * 3.5))
    head = run[:n]
    while head and estimate_tokens(head) > max_tokens:
        n = int(n * 0.9)
        head = run[:n]
    cut = head.rfind(" ")
    if cut > len(head) * 0.6:
        head = head[:cut]
    return head.rstrip()


def _strip_tool_calls(content: str) -> str:
    """An assistant message's text: its tool calls (rendered ``[tool_use NAME] {...}`` by transcript.py) are
    how it worked, not what it said."""
    parts = [p for p in content.split("\n\n") if not p.startswith("[tool_use ")]
    return "\n\n".join(parts).strip()


_COMMAND = re.compile(r"<command-(?:name|args)>(.*?)</command-(?:name|args)>", re.S)
_COMMAND_TAGS = re.compile(r"</?(?:command-message|command-name|command-args|local-command-stdout)>")


def prompt_text(content: str) -> str:
    """A prompt as the person typed it: a slash command's wrapper tags become ``/name args``."""
    if "<command-" not in content and "<local-command-" not in content:
        return content
    found = [m.strip() for m in _COMMAND.findall(content) if m.strip()]
    return " ".join(found) if found else _COMMAND_TAGS.sub("", content).strip()


def _one_line(text: str, n: int = 90) -> str:
    line = " ".join(text.split())
    return line if len(line) <= n else line[: n - 1].rstrip() + "…"


# ---- items ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    kind: str  # exchange | session  (knowledge items join here)
    session: str
    project: str | None
    machine: str | None
    at: str | None  # ISO time of the item's anchor (prompt, last activity)
    title: str
    parts: tuple[tuple[str, str], ...]  # (label, text)
    relevance: float = 0.0
    keys: tuple[str, ...] = ()  # the messages it shows (the prompt's key first)

    def fingerprint(self) -> str:
        import hashlib  # only topic recall dedups; the SessionStart hook does not pay for it

        h = hashlib.sha256()
        for label, text in self.parts:
            if label != "Matched":
                h.update(" ".join(text.split()).encode() + b"\x00")
        return h.hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "session": self.session, "project": self.project, "machine": self.machine,
                "at": self.at, "title": self.title, "parts": [{"label": k, "text": v} for k, v in self.parts],
                "relevance": round(self.relevance, 4), "keys": list(self.keys)}


@dataclass
class Block:
    heading: str
    budget: int
    items: list[Item] = field(default_factory=list)  # what made it into the text
    dropped: int = 0  # candidates left out for the budget
    markdown: str = ""

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.markdown)

    def as_dict(self) -> dict[str, Any]:
        return {"heading": self.heading, "budget": self.budget, "tokens": self.tokens, "dropped": self.dropped,
                "items": [i.as_dict() for i in self.items], "markdown": self.markdown}


def _meta_line(item: Item) -> str:
    bits = [f"session {item.session[:8]}"]
    if item.project:
        bits.append(f"project {item.project}")
    if item.machine:
        bits.append(f"machine {item.machine}")
    if item.at:
        bits.append(item.at[:10])
    return "_" + " · ".join(bits) + "_"


def _render_item(n: int, item: Item, max_tokens: int) -> str | None:
    """One item within ``max_tokens``, its parts clipped in order; None when not even its heading fits."""
    head = f"### {n}. {safe_text(item.title)}\n{_meta_line(item)}"
    out = head
    for label, text in item.parts:
        room = max_tokens - estimate_tokens(out + f"\n**{label}:** ") - 1
        if room < 12:
            break
        body = clip(safe_text(text), room)
        if not body:
            continue
        # A part opening with a code block starts on its own line, so the fence is a fence.
        sep = "\n" if body.lstrip().startswith(("```", "~~~")) else " "
        out += f"\n**{label}:**{sep}{body}"
    return out if out != head and estimate_tokens(out) <= max_tokens else None


def render(heading: str, candidates: Iterable[Item], budget: int, intro: str = "") -> Block:
    """Items in order, each whole or clipped, never past ``budget`` estimated tokens in all."""
    budget = max(MIN_BUDGET, int(budget))
    block = Block(heading, budget)
    text = f"## {safe_text(heading)}\n" + (f"{intro}\n" if intro else "")
    if estimate_tokens(text) > budget:
        text = f"## {_one_line(safe_text(heading), 40)}\n"
    cands = list(candidates)
    # No single item may take the whole block while others wait: a share, growing when there are few.
    share = max(150, budget // max(1, min(len(cands), 4)))
    for i, item in enumerate(cands):
        remaining = budget - estimate_tokens(text + "\n") - 1
        piece = _render_item(len(block.items) + 1, item, min(share, remaining))
        if piece is None:
            block.dropped = len(cands) - i
            break
        text += "\n" + piece + "\n"
        block.items.append(item)
    if not block.items:
        block.dropped = len(cands)
    block.markdown = text.rstrip() + "\n"
    assert estimate_tokens(block.markdown) <= budget, "recall block over budget"
    return block


# ---- exchanges for a topic ------------------------------------------------------------------------------------

_STOP = frozenset("""a an and are as at be but by can do does for from has have how i if in into is it its me my no
not of on or our so that the their then there these this to was we were what when where which who why will with
you your please should would could""".split())
_INTERRUPT = "[Request interrupted%"


_ROLE_WEIGHT = {"user": 2.0, "assistant": 1.0, "tool": 0.5, "system": 0.5}
_FLOOR = 0.2  # an exchange scoring below a fifth of the best is noise beside it: left out


def _words(topic: str) -> list[str]:
    """The topic's meaningful words, lower-cased, once each."""
    words = [w for w in re.findall(r"\w[\w.+#-]*", topic.lower()) if w not in _STOP and len(w) > 1]
    return list(dict.fromkeys(words))


def _coverage(words: list[str], text: str) -> float:
    """The share of the topic's words an exchange shows (a crude stem: a word's head of at least 4 letters),
    so an exchange about all of the topic beats one that repeats a single word of it."""
    if not words:
        return 1.0
    found = sum(1 for w in words if w[:max(4, len(w) - 2)] in text)
    return max(found, 1) / len(words)


def _or_query(topic: str) -> str | None:
    """Any of the topic's meaningful words, each quoted: the fallback when no single message holds them all."""
    import apsw.fts5query

    words = _words(topic)
    return " OR ".join(apsw.fts5query.quote(w) for w in words) if words else None


@dataclass
class _Turn:
    session: str
    root: str
    anchor: tuple[Any, ...] | None  # (key, content, occurred_at, id) of the prompt
    hits: list[tuple[float, "Hit"]] = field(default_factory=list)


def _message(conn: "apsw.Connection", key: str) -> tuple[Any, ...] | None:
    row = conn.execute("SELECT id, session_id, root_session, occurred_at, role, is_sidechain, project, machine"
                       " FROM messages WHERE key = ?", (key,)).fetchone()
    return tuple(row) if row else None


def _prompt_before(conn: "apsw.Connection", msg: tuple[Any, ...]) -> tuple[Any, ...] | None:
    mid, sid, root, at, role, side = msg[:6]
    row = conn.execute(
        "SELECT key, cx_text(event_id), occurred_at, id FROM messages WHERE root_session = ? AND session_id = ?"
        " AND role = 'user' AND is_meta = 0 AND is_sidechain = ? AND cx_text(event_id) NOT LIKE ?"
        " AND (occurred_at < ? OR (occurred_at = ? AND id <= ?)) ORDER BY occurred_at DESC, id DESC LIMIT 2",
        (root, sid, side, _INTERRUPT, at or "", at or "", mid)).fetchall()
    if not row:
        return None
    # Older transcripts hold parallel subagents (sidechains) in the session's own file, their prompts written at
    # the same instant: which of them a sidechain message answers is unknown, and a wrong guess would credit one
    # task with another's work. Such a message stands alone.
    if side and len(row) == 2 and row[0][2] == row[1][2]:
        return None
    return tuple(row[0])


def _outcome(conn: "apsw.Connection", root: str, sid: str, side: int, after: str, after_id: int
             ) -> tuple[str, str] | None:
    """The last thing the assistant said between this prompt and the next one: the answer, or the fix."""
    nxt = conn.execute(
        "SELECT occurred_at FROM messages WHERE root_session = ? AND session_id = ? AND role = 'user'"
        " AND is_meta = 0 AND is_sidechain = ? AND cx_text(event_id) NOT LIKE ? AND occurred_at > ?"
        " ORDER BY occurred_at LIMIT 1", (root, sid, side, _INTERRUPT, after)).fetchone()
    for key, content in conn.execute(
            "SELECT key, cx_text(event_id) FROM messages WHERE root_session = ? AND session_id = ?"
            " AND role = 'assistant'"
            " AND is_sidechain = ? AND kinds LIKE '%\"text\"%' AND (occurred_at > ? OR (occurred_at = ? AND id > ?))"
            " AND (? IS NULL OR occurred_at < ?) ORDER BY occurred_at DESC, id DESC LIMIT 3",
            (root, sid, side, after, after, after_id, nxt and nxt[0], nxt and nxt[0])):
        said = _strip_tool_calls(content)
        if said:
            return key, said
    return None


def exchanges(cache: "Queries", topic: str, *, project: str | None = None, depth: int = SEARCH_DEPTH
              ) -> list[Item]:
    """Past exchanges about ``topic``, most relevant first (newest first among equals), deduplicated."""
    from cxsync.cache.search import QueryError

    conn = cache.conn
    try:
        hits = list(cache.search(topic, limit=depth, project=project))
    except QueryError:
        hits = []
    if len(hits) < depth // 2:
        # Few messages hold every word: rank by any of them instead. One query, so one bm25 scale: a message
        # with all the words still scores highest, and coverage (below) favours exchanges showing most of them.
        any_word = _or_query(topic)
        if any_word:
            more = cache.search(any_word, limit=depth, project=project, fts=True)
            got = {h.key for h in more}
            hits = more + [h for h in hits if h.key not in got]
    words = _words(topic)
    turns: dict[tuple[str, str], _Turn] = {}
    meta: dict[tuple[str, str], tuple[Any, ...]] = {}
    for h in hits:
        msg = _message(conn, h.key)
        if msg is None:
            continue
        anchor = _prompt_before(conn, msg) if msg[4] != "user" else None
        if msg[4] == "user":
            row = conn.execute("SELECT key, cx_text(event_id), occurred_at, id FROM messages WHERE id = ?", (msg[0],)).fetchone()
            anchor = tuple(row) if row else None
        ident = (msg[1], anchor[0] if anchor else h.key)
        turn = turns.setdefault(ident, _Turn(msg[1], msg[2], anchor))
        meta.setdefault(ident, msg)
        # bm25 is lower-is-better and negative. Where the words occur matters: in what the person asked most,
        # in tool output least.
        turn.hits.append((_ROLE_WEIGHT.get(h.role, 0.5) * -h.rank, h))
    items: list[Item] = []
    for ident, turn in turns.items():
        msg = meta[ident]
        scores = sorted((s for s, _ in turn.hits), reverse=True)
        relevance = scores[0] + 0.25 * sum(scores[1:4])
        seen_text = " ".join([turn.anchor[1] if turn.anchor else ""] + [h.snippet for _, h in turn.hits]).lower()
        # cubed: the new search's bm25 weighs a repeated word more against a long message than FTS5's did, and
        # an exchange about the whole topic must still come before one repeating a single word of it
        relevance *= _coverage(words, seen_text) ** 3
        best = max(turn.hits, key=lambda sh: sh[0])[1]
        parts: list[tuple[str, str]] = []
        keys: list[str] = []
        at = best.occurred_at
        title = _one_line(_HL.sub("", best.snippet))
        if turn.anchor:
            akey, acontent, aat, aid = turn.anchor
            parts.append(("Prompt", prompt_text(acontent)))
            keys.append(akey)
            at, title = aat, _one_line(prompt_text(acontent))
            out = _outcome(conn, turn.root, turn.session, msg[5], aat or "", aid)
        else:
            out = None
        if best.key not in keys and (out is None or best.key != out[0]):
            parts.append(("Matched", _HL.sub("", best.snippet)))
            keys.append(best.key)
        if out:
            parts.append(("Outcome", out[1]))
            keys.append(out[0])
        items.append(Item("exchange", turn.session, msg[6], msg[7], at, title, tuple(parts), relevance,
                          tuple(keys)))
    top = max((i.relevance for i in items), default=0.0)
    return rank([i for i in items if i.relevance >= _FLOOR * top])


def rank(items: list[Item]) -> list[Item]:
    """Most relevant first; within ``_EQUAL`` of each other, newest first; identical content once (the newest)."""
    if not items:
        return []
    top = max(i.relevance for i in items) or 1.0
    ordered = sorted(items, key=lambda i: (-round(i.relevance / top / _EQUAL), _neg_time(i.at)))
    seen: set[str] = set()
    out = []
    for item in sorted(ordered, key=lambda i: _neg_time(i.at)):  # newest copy of a duplicate wins
        fp = item.fingerprint()
        if fp not in seen:
            seen.add(fp)
            out.append(item)
    keep = {id(i) for i in out}
    return [i for i in ordered if id(i) in keep]


def _neg_time(at: str | None) -> tuple[int, ...]:
    """Sort key putting later ISO times first."""
    return tuple(-ord(c) for c in (at or ""))


def recall(cache: "Queries", topic: str, *, project: str | None = None, budget: int = DEFAULT_BUDGET,
           me: str | None = None) -> Block:
    """Knowledge items about the topic first (distilled: a decision, a fix, a pattern — when ``me``, the reader,
    is given, since what one may see depends on who reads), then the exchanges."""
    items = (knowledge(cache.conn, me, topic=topic, project=project) if me else []) + exchanges(
        cache, topic, project=project)
    where = f" in {project}" if project else ""
    known = "Decisions and fixes recorded earlier, then earlier" if items and items[0].kind == "knowledge" \
        else "Earlier"
    return render(f"Recalled from past Claude Code sessions: {_one_line(topic, 60)}{where}", items, budget,
                  f"{known} prompts and what came of them, most relevant first; each names its session, project,"
                  " machine and date.")


# ---- knowledge items ------------------------------------------------------------------------------------------

_KNOWLEDGE_FIELDS = (("decision", "Decision"), ("rationale", "Why"), ("error_signature", "Error"),
                     ("solution", "Fix"), ("command", "Command"), ("description", "Pattern"),
                     ("code_example", "Code"))
_KNOWLEDGE_KIND = {"decision": "Decision", "error_solution": "Fix", "pattern": "Pattern"}
KNOWLEDGE_LIMIT = 5


def _knowledge_parts(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    parts = []
    for key, label in _KNOWLEDGE_FIELDS:
        value = data.get(key)
        if value:
            text = str(value)
            if key == "code_example" and not text.lstrip().startswith("```"):
                text = f"```\n{text.rstrip()}\n```"
            parts.append((label, text))
    return tuple(parts)


def knowledge(conn: "apsw.Connection", me: str, *, topic: str | None = None, project: str | None = None,
              limit: int = KNOWLEDGE_LIMIT) -> list[Item]:
    """The knowledge items ``me`` may see (their own, and those shared with them) of a project and, given a
    topic, about it: most of the topic's words first, then newest."""
    import apsw

    from cxsync.cache.knowledge import list_items

    words = _words(topic) if topic else []
    out = []
    try:
        found = list_items(conn, me, project=project, limit=200)
    except apsw.SQLError:  # a cache the agent has not migrated to knowledge sharing yet: no items to give
        return []
    for k in found:
        parts = _knowledge_parts(k.data)
        text = " ".join([k.title, *(t for _, t in parts)]).lower()
        if words and not any(w[:max(4, len(w) - 2)] in text for w in words):
            continue
        row = conn.execute("SELECT machine FROM sessions WHERE session_id = ?", (k.session,)).fetchone() \
            if k.session else None
        title = f"{_KNOWLEDGE_KIND.get(k.type, k.type.capitalize() or 'Note')}: {_one_line(k.title)}"
        out.append(Item("knowledge", k.session or "", k.project, row[0] if row else None, k.occurred_at, title,
                        parts or (("Note", k.title),), _coverage(words, text), (k.id,)))
    out.sort(key=lambda i: (-i.relevance, _neg_time(i.at)))
    return out[:limit]


# ---- recent work on a project ---------------------------------------------------------------------------------


def project_sessions(conn: "apsw.Connection", project: str, *, limit: int = 8, exclude: str | None = None
                     ) -> list[tuple[Any, ...]]:
    """Main sessions of ``project`` — that folder or one below it, or a project named by its last component —
    newest activity first."""
    p = project.rstrip("/") or "/"
    sql = ("SELECT session_id, project, machine, title, first_prompt, first_at, last_at, message_count FROM sessions"
           " WHERE session_id = root_session AND message_count > 0 AND session_id != :x"
           " AND (project = :p OR (project >= :p || '/' AND project < :p || '0')"
           " OR (instr(:p, '/') = 0 AND project LIKE '%/' || :p))"
           " ORDER BY coalesce(last_at, first_at, '') DESC LIMIT :n")
    return [tuple(r) for r in conn.execute(sql, {"p": p, "n": limit, "x": exclude or ""})]


def _last_prompt(conn: "apsw.Connection", sid: str) -> str | None:
    row = conn.execute("SELECT cx_text(event_id) FROM messages WHERE root_session = ? AND session_id = ? AND is_prompt = 1"
                       " AND cx_text(event_id) NOT LIKE ? ORDER BY occurred_at DESC LIMIT 1", (sid, sid, _INTERRUPT)).fetchone()
    return str(row[0]) if row else None


def _last_outcome(conn: "apsw.Connection", sid: str) -> str | None:
    for (content,) in conn.execute(
            "SELECT cx_text(event_id) FROM messages WHERE root_session = ? AND session_id = ? AND role = 'assistant'"
            " AND kinds LIKE '%\"text\"%' ORDER BY occurred_at DESC LIMIT 3", (sid, sid)):
        said = _strip_tool_calls(content)
        if said:
            return said
    return None


def recent_work(conn: "apsw.Connection", project: str, *, budget: int = DEFAULT_BUDGET, limit: int = 8,
                exclude: str | None = None, me: str | None = None) -> Block:
    """The project's knowledge items (given the reader ``me``), then its recent sessions: what each was about,
    what was last asked and how it ended."""
    items = knowledge(conn, me, project=project) if me else []
    for sid, proj, machine, title, first, first_at, last_at, _count in project_sessions(
            conn, project, limit=limit, exclude=exclude):
        parts: list[tuple[str, str]] = []
        first = prompt_text(first) if first else first
        if first:
            parts.append(("Started with", first))
        last = _last_prompt(conn, sid)
        last = prompt_text(last) if last else last
        if last and (not first or last.strip() != first.strip()):
            parts.append(("Last asked", last))
        outcome = _last_outcome(conn, sid)
        if outcome:
            parts.append(("Last outcome", outcome))
        label = title or _one_line(first or "") or f"session {sid[:8]}"
        items.append(Item("session", sid, proj, machine, last_at or first_at, label, tuple(parts)))
    known = any(i.kind == "knowledge" for i in items)
    return render(f"Recent work on {project}", items, budget,
                  ("Decisions and fixes recorded in this project, then its earlier" if known else "Earlier")
                  + " Claude Code sessions of this project (any machine), newest first.")


# ---- a session, page by page ----------------------------------------------------------------------------------


def session_page(cache: "Queries", session: str, *, offset: int = 0, limit: int = 50, include_subagents: bool = False,
                 max_chars: int = 4000) -> dict[str, Any]:
    """Messages ``offset .. offset+limit`` of a session in order, each cut to ``max_chars``; ``next_offset`` is
    None on the last page. Bounded work however long the session: a page never loads the rest."""
    conn = cache.conn
    sid = cache.resolve_session(session)
    row = conn.execute("SELECT session_id, root_session, project, branch, title, first_prompt, first_at, last_at,"
                       " message_count, machine, user_id, agent_id FROM sessions WHERE session_id = ?",
                       (sid,)).fetchone()
    cols = ("session", "root_session", "project", "branch", "title", "first_prompt", "first_at", "last_at",
            "messages", "machine", "user", "agent_id")
    info = dict(zip(cols, row)) if row else {"session": sid, "root_session": sid}
    root = info["root_session"]
    cond = "root_session = ?" if include_subagents else "root_session = ? AND session_id = ?"
    args: tuple[Any, ...] = (root,) if include_subagents else (root, sid)
    from cxsync.cache.db import scalar

    total = int(scalar(conn, f"SELECT count(*) FROM messages WHERE {cond}", args))
    msgs = []
    for key, role, at, content, s, agent, meta, length in conn.execute(
            "SELECT key, role, occurred_at, substr(cx_text(event_id), 1, ?), session_id, agent_id, is_meta,"
            " length(cx_text(event_id))"
            f" FROM messages WHERE {cond} ORDER BY coalesce(occurred_at, ''), source_line, id LIMIT ? OFFSET ?",
            (max_chars, *args, limit, offset)):
        msgs.append({"key": key, "role": role, "occurred_at": at, "content": content, "session": s,
                     "agent_id": agent, "is_meta": bool(meta), "chars": length, "truncated": length > max_chars})
    end = offset + len(msgs)
    return {"session": info, "offset": offset, "total": total, "messages": msgs,
            "next_offset": end if end < total else None}
