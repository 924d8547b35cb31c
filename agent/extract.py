"""Knowledge extraction: decisions, error → solution pairs and repeated patterns, pulled out of sessions by rules.

Deterministic and conservative (precision over recall): an item is emitted only when the whole shape is there —
a decision stated as one (not asked, not weighed), an error that was followed by an edit *and* by the same command
succeeding, a code block explained in one session and written again in another.  Item ids are hashes of the
messages they came from, so extraction can be run again over a growing session at any time: what it found before
comes out with the same id and ``apply`` skips it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import orjson

DECISION = "decision"
ERROR_SOLUTION = "error_solution"
PATTERN = "pattern"
TYPES = (DECISION, ERROR_SOLUTION, PATTERN)

# A choice stated, first person, as done: "let's go with X", "we decided to X", "I'll use X instead of Y".
_DECIDED = re.compile(
    r"(?i)\b(let'?s go with|let us go with|let'?s use|we(?:'ve| have)? decided(?: to| on)?|i(?:'ve| have)? decided"
    r"(?: to| on)?|decided to go with|we(?:'ll| will) go with|i(?:'ll| will) go with|we(?:'re| are) going with|"
    r"going with \S+(?: \S+)? (?:over|instead of)|we chose|i chose|we(?:'ve| have)? opted for|"
    r"(?:the )?decision(?: is|:)|settled on)(?!\w)")
# Not a decision: a question, a condition, an option weighed, or something reported about others.
_NOT_DECIDED = re.compile(r"(?i)\b(should we|shall we|could we|would you|do you want|if we|whether to|"
                          r"or should|maybe|might|could go with|not sure|haven'?t decided|undecided|"
                          r"you decided|they decided|he decided|she decided)\b")
_BECAUSE = re.compile(r"(?i)\b(because|since|as it|so that|given that|which means|to avoid|for (?:better|speed|"
                      r"simplicity|safety))\b(.*)")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")

# An error a command printed (not a tool used wrongly: those are the model's slips, not the project's errors).
_ERROR = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(?:Error|Exception)\b[:(]|^\s*error(?:\[\w+\])?:|"
                    r"\bFAILED\b|^FAIL\b|npm ERR!|\bpanic:|\*\* \(\w+Error\)|failed with exit code|Exit code [1-9]"
                    r"|\b[1-9]\d* (?:failed|errors?)\b|command not found", re.MULTILINE)
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]*(?:Error|Exception)\b.*|error(?:\[\w+\])?:.*|.*\bFAILED\b.*|\*\* \(\w+Error\).*"
                         r"|.*\bpanic:.*|.*npm ERR!.*|.*command not found.*|.*\b[1-9]\d* (?:failed|errors?)\b.*)$",
                         re.MULTILINE)
_EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
_TOOL_USE = re.compile(r"\[tool_use (\w+)\] (\{.*?)(?=\n\n\[tool_use |\Z)", re.DOTALL)
_FIELD = re.compile(r'"(command|file_path|notebook_path)":"((?:[^"\\]|\\.)*)"')
_CODE_BLOCK = re.compile(r"```([\w+.-]*)\n(.*?)```", re.DOTALL)
WINDOW = 40  # messages after an error within which its fix and re-run must come


@dataclass(frozen=True)
class Msg:
    hash: str
    role: str
    content: str
    session: str
    project: str | None = None
    occurred_at: str | None = None


@dataclass
class Item:
    type: str
    title: str
    sources: list[str]
    session: str
    project: str | None
    occurred_at: str | None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        # A pattern is its code, whichever sessions repeat it; the others are the messages they came from.
        sources = [] if self.type == PATTERN else self.sources
        body = orjson.dumps({"type": self.type, "sources": sources, "key": self.fields.get("fingerprint")},
                            option=orjson.OPT_SORT_KEYS)
        return f"{self.type[0]}-{hashlib.sha256(body).hexdigest()[:20]}"

    def as_knowledge(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "title": self.title, "session": self.session,
                "project": self.project, "occurred_at": self.occurred_at, "sources": self.sources, **self.fields}


def _strip_code(text: str) -> str:
    return _CODE_BLOCK.sub(" ", text)


def _prose(m: Msg) -> str:
    """The words of a message a person wrote or read as prose: no code, no tool calls or results."""
    text = _strip_code(m.content)
    return re.sub(r"\[tool_use \w+\] \{.*", " ", text, flags=re.DOTALL)


def decisions(messages: Sequence[Msg]) -> list[Item]:
    out = []
    for i, m in enumerate(messages):
        if m.role not in ("user", "assistant"):
            continue
        for s in _SENTENCE.finditer(_prose(m)):
            sentence = s.group(0).strip()
            if len(sentence) < 15 or sentence.endswith("?") or not _DECIDED.search(sentence):
                continue
            if _NOT_DECIDED.search(sentence):
                continue
            why = _BECAUSE.search(sentence)
            rationale = why.group(0).strip() if why else ""
            context = next((p.content[:300] for p in reversed(messages[:i]) if p.role == "user"), "")
            out.append(Item(DECISION, sentence[:200], [m.hash], m.session, m.project, m.occurred_at,
                            {"decision": sentence[:500], "rationale": rationale[:500], "context": context}))
            break  # one decision per message: the first stated
    return out


def _tool_uses(m: Msg) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls in a message's text (``[tool_use Name] {json}``); a call whose JSON was truncated when it
    was captured still gives its name and the fields we read."""
    out = []
    for name, body in _TOOL_USE.findall(m.content):
        try:
            inp = orjson.loads(body)
        except orjson.JSONDecodeError:
            inp = {k: orjson.loads(f'"{v}"') for k, v in _FIELD.findall(body)}
        out.append((name, inp if isinstance(inp, dict) else {}))
    return out


def same_command(a: str, b: str) -> bool:
    """Two runs of one command: the same program and arguments, whatever is piped after or redirected."""
    def norm(cmd: str) -> str:
        first = cmd.split("|", 1)[0]
        return " ".join(re.sub(r"\s\d?>>?&?\S*", " ", first).split())
    return norm(a) == norm(b)


def _is_error(m: Msg) -> bool:
    if m.role != "tool" or "<tool_use_error>" in m.content:
        return False
    return m.content.startswith("[tool_result error]") or bool(_ERROR.search(m.content))


def _signature(m: Msg) -> str:
    body = m.content.removeprefix("[tool_result error]").removeprefix("[tool_result]").strip()
    lines = [ln.strip() for ln in _ERROR_LINE.findall(body) if ln.strip()]
    first = lines[-1] if lines and "Traceback" in body else (lines[0] if lines else body.splitlines()[0] if body
                                                               else "error")
    return first.replace("\\n", " ")[:200]


def _command_before(messages: Sequence[Msg], i: int) -> str | None:
    """The shell command whose result is message ``i``: the last Bash call of the assistant turn before it."""
    for p in reversed(messages[max(0, i - 3):i]):
        if p.role == "assistant":
            cmds = [inp.get("command") for name, inp in _tool_uses(p) if name == "Bash"]
            return str(cmds[-1]) if cmds and cmds[-1] else None
    return None


def error_solutions(messages: Sequence[Msg]) -> list[Item]:
    out: list[Item] = []
    used: set[int] = set()
    for i, err in enumerate(messages):
        if i in used or not _is_error(err):
            continue
        command = _command_before(messages, i)
        if not command:
            continue
        fix: Msg | None = None
        files: list[str] = []
        for j in range(i + 1, min(len(messages), i + WINDOW)):
            m = messages[j]
            if m.role == "assistant":
                uses = _tool_uses(m)
                edited = [str(inp.get("file_path") or inp.get("notebook_path") or "") for name, inp in uses
                          if name in _EDIT_TOOLS]
                if edited:
                    fix = fix or m
                    files += [f for f in edited if f and f not in files]
                    continue
                if fix is not None and any(name == "Bash" and same_command(str(inp.get("command", "")), command)
                                           for name, inp in uses):
                    result = next((r for r in messages[j + 1:j + 3] if r.role == "tool"), None)
                    if result is None:
                        break
                    if _is_error(result):
                        used.add(messages.index(result))
                        continue  # still failing: keep looking for the run that passes
                    # what the assistant said from the error up to its fix: the diagnosis and the change
                    told = [_prose(p) for p in messages[i + 1:messages.index(fix) + 1] if p.role == "assistant"]
                    explanation = re.sub(r"\s+", " ", " ".join(t for t in told if t.strip())).strip()
                    out.append(Item(ERROR_SOLUTION, _signature(err), [err.hash, fix.hash, result.hash],
                                    err.session, err.project, err.occurred_at,
                                    {"error_signature": _signature(err), "command": command,
                                     "solution": explanation[:500], "steps": [f"edit {f}" for f in files]
                                     + [f"run {command}"]}))
                    break
    return out


def code_blocks(messages: Iterable[Msg]) -> list[tuple[str, Msg, str, str, str]]:
    """(fingerprint, message, language, code, explanation) of each explained code block of ≥ 3 lines."""
    out = []
    for m in messages:
        if m.role != "assistant":
            continue
        for cb in _CODE_BLOCK.finditer(m.content):
            code = cb.group(2).strip("\n")
            if code.count("\n") < 2:
                continue
            before = m.content[:cb.start()].rstrip()
            explanation = before.rsplit("\n\n", 1)[-1].strip()
            if len(explanation) < 20 or "```" in explanation:
                continue
            norm = "\n".join(ln.strip() for ln in code.splitlines() if ln.strip())
            fp = hashlib.sha256(norm.encode("utf-8", "surrogatepass")).hexdigest()[:24]
            out.append((fp, m, cb.group(1), code, explanation))
    return out


def pattern(fingerprint: str, first: tuple[str, Msg, str, str, str], sessions: list[str],
            hashes: list[str]) -> Item:
    _, m, lang, code, explanation = first
    name = re.sub(r"\s+", " ", explanation).strip().rstrip(":")[:120]
    return Item(PATTERN, name, sorted(hashes), m.session, m.project, m.occurred_at,
                {"fingerprint": fingerprint, "name": name, "description": explanation[:500],
                 "code_example": code[:4000], "language": lang, "sessions": sorted(sessions)})


# ---- the incremental runner ---------------------------------------------------------------------------------

_MSG_COLS = "hash, role, cx_text(event_id), session_id, project, occurred_at"  # the text lives in the stored event
_MSG_COLS_M = "m.hash, m.role, cx_text(m.event_id), m.session_id, m.project, m.occurred_at"


def run(cache: Any, ident: Any, *, batch: int = 200) -> int:
    """Extract from the sessions that grew since the last run (this user's own messages only); return how many
    new items were applied.  Safe to interrupt: the watermark moves after the items it covers are applied."""
    from cxsync.sync import events as ev

    conn = cache.conn
    # The watermark is the stored events' sequence (the order messages arrived in): message ids are time-ordered,
    # so a message imported late from an old transcript gets a low id.
    upto = int(cache.get_state("knowledge_upto_seq", 0) or 0)
    top = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    if top <= upto:
        return 0
    me = ident.user
    arrived = "FROM messages m JOIN events e ON e.event_id = m.event_id WHERE e.seq > ? AND e.seq <= ?"
    sessions = [r[0] for r in conn.execute(f"SELECT DISTINCT m.session_id {arrived} AND m.user_id = ?",
                                           (upto, top, me))]
    items: list[Item] = []
    for sid in sessions:
        msgs = [Msg(*r) for r in conn.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE root_session = (SELECT root_session FROM sessions"
            " WHERE session_id = ?) AND session_id = ? AND user_id = ? ORDER BY occurred_at, id", (sid, sid, me))]
        items += decisions(msgs) + error_solutions(msgs)
    fresh = code_blocks(Msg(*r) for r in conn.execute(
        f"SELECT {_MSG_COLS_M} {arrived} AND m.role = 'assistant' AND m.has_code = 1 AND m.user_id = ?",
        (upto, top, me)))
    with cache.transaction() as tx:
        tx.executemany("INSERT OR IGNORE INTO knowledge_candidates(fingerprint, session_id, message_hash)"
                       " VALUES (?,?,?)", [(fp, m.session, m.hash) for fp, m, *_ in fresh])
    newest = {block[0]: block for block in fresh}  # the latest writing of each code block is its example
    for fp, block in newest.items():
        seen = conn.execute("SELECT session_id, message_hash FROM knowledge_candidates WHERE fingerprint = ?"
                            " ORDER BY session_id", (fp,)).fetchall()
        if len({s for s, _ in seen}) >= 2:
            items.append(pattern(fp, block, sorted({s for s, _ in seen}), [h for _, h in seen]))
    events = [ev.knowledge_extracted(ident, i.as_knowledge(), i.sources) for i in items]
    applied = 0
    for i in range(0, len(events), batch):
        applied += cache.apply(events[i:i + batch], "local").applied
    cache.set_state(knowledge_upto_seq=top)
    return applied
