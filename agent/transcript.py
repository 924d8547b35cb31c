"""Parse transcript lines and normalise records into the seed's ContextMessage shape.

Everything here is pure: bytes in, dicts out.  The record format is internal to Claude Code and changes between
releases, so every field is optional and unknown record types are kept verbatim (as "records"), never rejected.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import orjson

TOOL_RESULT_MAX = 2000  # characters of a tool result kept in the searchable text
TOOL_INPUT_MAX = 1000
CONVERSATIONAL = frozenset({"user", "assistant"})
TITLE_RANK = {"custom-title": 4, "agent-name": 3, "ai-title": 2, "summary": 1}

_decoder = json.JSONDecoder(strict=False)

MAX_RESYNC = 32  # failed attempts to find another object in one damaged line before the rest is given up
MAX_GLUED = 256  # objects recovered from one line (real glued lines hold two or three; `{}{}{}…` is a bomb)
TOKEN_MAX = 10**15  # a plausible token count; anything larger (10**30, 1.5e300) is not one
ID_MAX = 256  # longest identifier (uuid, session id, message id) we accept from a record
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SKIPPABLE = " \t\r\x00\ufeff"  # between objects: whitespace, a byte-order mark, NUL padding left by a crash


@dataclass
class ParsedLine:
    records: list[dict[str, Any]]
    raws: list[str]  # verbatim text of each record
    malformed: int = 0  # pieces that could not be recovered
    recovered: bool = False  # glued or damaged, but something was recovered
    repaired: int = 0  # records captured with fields of the wrong type ignored


def parse_line(data: bytes) -> ParsedLine:
    """One physical line → the JSON objects in it.  Lenient UTF-8, control characters tolerated, glued ``}{``
    objects split; whatever cannot be parsed is counted, never raised.  Every record comes out validated
    (``validate_record``): the rest of the agent can trust the types of the fields it reads."""
    try:
        obj = orjson.loads(data)
        if isinstance(obj, dict):
            return _finish(ParsedLine([obj], [data.decode("utf-8")]), scrub=False)
        return ParsedLine([], [], malformed=1)
    except orjson.JSONDecodeError:
        pass
    text = data.decode("utf-8", "replace")
    try:
        obj = _decoder.decode(text)
        if isinstance(obj, dict):
            return _finish(ParsedLine([obj], [text], recovered=True), scrub=True)
    except RecursionError:
        return ParsedLine([], [], malformed=1)  # nested past any sane depth: no object inside is worth the cost
    except ValueError:
        pass
    out = ParsedLine([], [], recovered=True)
    idx, n, failures, damaged = 0, len(text), 0, False
    while idx < n:
        while idx < n and text[idx] in _SKIPPABLE:
            idx += 1
        if idx >= n:
            break
        try:
            obj, end = _decoder.raw_decode(text, idx)
        except RecursionError:
            out.malformed += int(not damaged)
            break
        except ValueError:
            # Resynchronise at the next object start; the damaged span is counted once.  A bounded number of
            # attempts: each may scan to the end of the line, and a hostile line could hold millions of starts.
            out.malformed += int(not damaged)
            damaged = True
            failures += 1
            nxt = text.find('{"', idx + 1)
            if nxt < 0 or failures >= MAX_RESYNC:
                break
            idx = nxt
            continue
        if isinstance(obj, dict):
            out.records.append(obj)
            out.raws.append(text[idx:end])
            damaged = False
            if len(out.records) >= MAX_GLUED and end < n:
                out.malformed += 1  # the rest of the line
                break
        else:
            out.malformed += int(not damaged)
            damaged = True
        idx = end
    if not out.records:
        out.recovered = False
        out.malformed = max(out.malformed, 1)
    return _finish(out, scrub=True)


def _finish(parsed: ParsedLine, *, scrub: bool) -> ParsedLine:
    # orjson refuses lone surrogates; the lenient decoder lets ``"\ud800"`` through, and such a string can be
    # neither stored in SQLite nor encoded as an event.  Only lines that took the lenient path can hold one.
    scrub = scrub and any(_SURROGATE_ESCAPE.search(raw) for raw in parsed.raws)
    for i, rec in enumerate(parsed.records):
        if scrub:
            rec = parsed.records[i] = _scrub(rec)
        parsed.repaired += validate_record(rec)
    return parsed


def _clean_str(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _scrub(obj: Any) -> Any:
    """``obj`` with every string (keys too) made encodable; iterative, since the object may be deeply nested."""
    def fix(v: Any) -> Any:
        if isinstance(v, str):
            return _clean_str(v)
        if isinstance(v, dict):
            new: dict[Any, Any] = {}
            stack.append((v, new))
            return new
        if isinstance(v, list):
            lst: list[Any] = []
            stack.append((v, lst))
            return lst
        return v

    stack: list[tuple[Any, Any]] = []
    root = fix(obj)
    while stack:
        src, dst = stack.pop()
        if isinstance(src, dict):
            for k, v in src.items():
                dst[_clean_str(k)] = fix(v)
        else:
            dst.extend(fix(v) for v in src)
    return root


# ---- the one validation boundary -----------------------------------------------------------------------------

# Fields the agent reads from a record, with the type it needs.  A field of another type is removed from the
# parsed record (the verbatim line keeps it): nothing past this point checks types again.
_ID_FIELDS = ("uuid", "sessionId", "agentId", "leafUuid")
_STR_FIELDS = ("type", "parentUuid", "timestamp", "cwd", "gitBranch", "version", "userType", "entrypoint",
               "customTitle", "agentName", "aiTitle", "title", "summary", "name")
_FLAG_FIELDS = ("isSidechain", "isMeta", "isCompactSummary")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def token_count(v: Any) -> int | None:
    """A usage figure as an int, or None when ``v`` is not one (a string, a bool, negative, absurdly large)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 0 <= v <= TOKEN_MAX else None
    if isinstance(v, float) and v.is_integer() and 0 <= v <= TOKEN_MAX:
        return int(v)
    return None


_ID, _STR, _FLAG, _ORIGIN, _MESSAGE = range(5)
_KIND = {**{k: _ID for k in _ID_FIELDS}, **{k: _STR for k in _STR_FIELDS}, **{k: _FLAG for k in _FLAG_FIELDS},
         "origin": _ORIGIN, "message": _MESSAGE}


def validate_record(rec: dict[str, Any]) -> int:
    """Drop the fields of ``rec`` whose type the agent cannot use; 1 when something was dropped, else 0.

    The boundary between untrusted transcript text and the rest of the agent: envelope fields are strings
    (identifiers at most ``ID_MAX`` characters), flags are booleans, ``message`` is an object whose ``id`` and
    ``model`` are strings and whose ``usage`` holds token counts in range.  One pass over the record's own keys
    (every line goes through here: it must cost little next to parsing).
    """
    drop: list[str] = []
    repaired = False
    for k, v in rec.items():
        kind = _KIND.get(k)
        if kind is None or v is None:
            continue
        t = type(v)
        if kind == _STR:
            ok = t is str
        elif kind == _ID:
            ok = t is str and len(v) <= ID_MAX
        elif kind == _FLAG:
            ok = t is bool
        elif kind == _ORIGIN:
            ok = t is dict and type(v.get("kind")) in (str, type(None))
        else:
            ok = t is dict
            if ok and _validate_message(v):
                repaired = True
        if not ok:
            drop.append(k)
    for k in drop:
        del rec[k]
    return int(repaired or bool(drop))


def _validate_message(msg: dict[str, Any]) -> bool:
    bad = False
    for k in ("id", "model", "role"):
        v = msg.get(k)
        if v is not None and not (type(v) is str and len(v) <= ID_MAX):
            del msg[k]
            bad = True
    usage = msg.get("usage")
    if usage is None:
        return bad
    if type(usage) is not dict:
        del msg["usage"]
        return True
    for k in TOKEN_FIELDS:
        v = usage.get(k)
        if v is not None and token_count(v) is None:
            del usage[k]
            bad = True
    return bad


# ---- content ------------------------------------------------------------------------------------------------

_CODE_FENCE = re.compile(r"```([A-Za-z0-9_+#.-]*)")


def _truncate(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + f" … [{len(s) - n} more characters]"


def _s(v: Any, default: str = "") -> str:
    """``v`` when it is a string, else ``default``: block fields are never formatted with ``str()``, which
    would recurse into a deeply nested value."""
    return v if isinstance(v, str) else default


def _json_text(v: Any) -> str:
    try:
        return orjson.dumps(v).decode()
    except (TypeError, ValueError, RecursionError):  # beyond 64-bit integers, nesting past orjson's limit
        try:
            return json.dumps(v, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return "[input too deeply nested to show]"


def _image_ref(block: Mapping[str, Any]) -> str:
    src = block.get("source")
    src = src if isinstance(src, dict) else {}
    data = src.get("data")
    media = _s(src.get("media_type"), "image")
    if isinstance(data, str):
        digest = sha256(data)[:16]
        return f"[image {media} sha256:{digest} {len(data) * 3 // 4} bytes]"
    url = _s(src.get("url"))
    return f"[image {media} {url}]" if url else f"[image {media}]"


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    if isinstance(content, list):
        for b in content:
            if isinstance(b, dict):
                if b.get("type") == "text":
                    parts.append(_s(b.get("text")))
                elif b.get("type") == "image":
                    parts.append(_image_ref(b))
                else:
                    parts.append(f"[{_s(b.get('type'), 'block')}]")
    return "\n".join(parts)


def block_text(block: Any) -> tuple[str, str]:
    """(kind, searchable text) of one content block."""
    if isinstance(block, str):
        return "text", block
    if not isinstance(block, dict):
        return "other", ""
    t = block.get("type")
    if t == "text":
        return "text", _s(block.get("text"))
    if t == "thinking":
        return "thinking", _s(block.get("thinking"))
    if t == "redacted_thinking":
        return "thinking", ""
    if t == "tool_use":
        inp = block.get("input")
        inp_s = _json_text(inp) if inp is not None else ""
        return "tool_use", f"[tool_use {_s(block.get('name'), '?')}] {_truncate(inp_s, TOOL_INPUT_MAX)}"
    if t == "tool_result":
        prefix = "[tool_result error] " if block.get("is_error") else "[tool_result] "
        return "tool_result", prefix + _truncate(_tool_result_text(block.get("content")), TOOL_RESULT_MAX)
    if t == "image":
        return "image", _image_ref(block)
    if t == "tool_reference":
        return "other", f"[tool_reference {_s(block.get('tool_name')) or _s(block.get('name'))}]"
    return "other", ""


def message_text(content: Any) -> tuple[str, set[str]]:
    if isinstance(content, str):
        return content, {"text"}
    kinds: set[str] = set()
    texts = []
    if isinstance(content, list):
        for b in content:
            kind, text = block_text(b)
            kinds.add(kind)
            if text:
                texts.append(text)
    return "\n\n".join(texts), kinds


# A line that starts a heading, a list item or a numbered item; the rest of the markdown tests are substrings.
_MD_LINE = re.compile(r"\n(?:#{1,2} |[-*] |1\. )")
_MD_START = ("# ", "## ", "- ", "* ", "> ")


def _has_markdown(content: str, fence: bool) -> bool:
    # Substring tests and one regex whose every match starts at a newline: one pass over the text for the line
    # starts, where a test per kind of line took one pass each (1.3 µs a message against 3.3 µs, measured).
    return (fence or "**" in content or "](" in content or content.startswith(_MD_START)
            or _MD_LINE.search(content) is not None)


def metadata(content: str) -> dict[str, Any]:
    fence = "```" in content
    langs = sorted({m.lower() for m in _CODE_FENCE.findall(content) if m}) if fence else []
    return {
        "content_length": len(content),
        "has_code": fence or "[tool_use " in content,
        "has_markdown": _has_markdown(content, fence),
        "language_hints": langs[:10],
        "topics": [],
    }


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def record_key(record: Mapping[str, Any], raw: str, file_name: str) -> str:
    uid = record.get("uuid")
    if isinstance(uid, str) and uid:
        return "r:" + uid
    return f"r:{file_name}:{record.get('type', '?')}:{sha256(raw)[:24]}"


def title_of(record: Mapping[str, Any]) -> tuple[int, str] | None:
    t = record.get("type")
    if t not in TITLE_RANK:
        return None
    for field_name in ("customTitle", "agentName", "aiTitle", "title", "summary", "name"):
        v = record.get(field_name)
        if isinstance(v, str) and v.strip():
            return TITLE_RANK[str(t)], v.strip()
    return None


# ---- messages -----------------------------------------------------------------------------------------------


@dataclass
class Piece:
    """One conversational record with its place in the file."""

    record: dict[str, Any]
    raw: str
    line: int


@dataclass
class FileContext:
    session: str
    root_session: str
    parent_session: str | None
    agent_id: str | None
    source_file: str
    tenant: str
    user: str
    machine: str
    extra: dict[str, Any] = field(default_factory=dict)


def message_key(record: Mapping[str, Any]) -> str | None:
    if record.get("type") == "assistant":
        msg = record.get("message")
        mid = msg.get("id") if isinstance(msg, dict) else None
        if isinstance(mid, str) and mid:
            return "m:" + mid
    uid = record.get("uuid")
    if isinstance(uid, str) and uid:
        return "u:" + uid
    return None


def _is_typed_prompt(record: Mapping[str, Any], kinds: set[str]) -> bool:
    if record.get("type") != "user" or record.get("isMeta") or record.get("isCompactSummary"):
        return False
    if record.get("isSidechain") or "tool_result" in kinds:
        return False
    origin = record.get("origin")
    if isinstance(origin, dict) and origin.get("kind") not in (None, "human"):
        return False
    return "text" in kinds


def build_message(pieces: list[Piece], ctx: FileContext, indexed_at: str) -> dict[str, Any] | None:
    """Build one ContextMessage from the records of one message (several for a split assistant response)."""
    if not pieces:
        return None
    first = pieces[0].record
    key = message_key(first)
    if key is None:
        return None
    rtype = first.get("type")
    texts: list[str] = []
    kinds: set[str] = set()
    best_usage: dict[str, Any] | None = None
    model = None
    uuids = []
    for p in pieces:
        msg = p.record.get("message") if isinstance(p.record.get("message"), dict) else {}
        text, k = message_text(msg.get("content") if msg else p.record.get("content"))
        kinds |= k
        if text:
            texts.append(text)
        usage = msg.get("usage") if msg else None
        if isinstance(usage, dict):  # token counts checked by validate_record: ints in range, or absent
            if best_usage is None or (usage.get("output_tokens") or 0) >= (best_usage.get("output_tokens") or 0):
                best_usage = usage
        model = model or (msg.get("model") if msg else None)
        if isinstance(p.record.get("uuid"), str):
            uuids.append(p.record["uuid"])
    content = "\n\n".join(texts)
    if rtype == "assistant":
        role = "assistant"
    elif first.get("isCompactSummary") or first.get("isMeta"):
        role = "system"
    elif "tool_result" in kinds:
        role = "tool"
    else:
        role = "user"
    cwd = next((p.record.get("cwd") for p in pieces if isinstance(p.record.get("cwd"), str)), None)
    branch = next((p.record.get("gitBranch") for p in pieces if p.record.get("gitBranch")), None)
    usage = best_usage or {}
    return {
        "key": key,
        "hash": sha256(content),
        "content": content,
        "role": role,
        "session": ctx.session,
        "root_session": ctx.root_session,
        "agent_id": ctx.agent_id,
        "project": cwd,
        "branch": branch,
        "occurred_at": first.get("timestamp") if isinstance(first.get("timestamp"), str) else None,
        "indexed_at": indexed_at,
        "provenance": {
            "tenant_id": ctx.tenant,
            "user_id": ctx.user,
            "machine": ctx.machine,
            "session_id": ctx.session,
            "source_type": "claude-code",
            "source_file": ctx.source_file,
            "source_line": pieces[0].line,
        },
        "metadata": metadata(content),
        "parts": len(pieces),
        "kinds": sorted(kinds),
        "model": model,
        "usage": {k: usage.get(k) or 0 for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                  "cache_creation_input_tokens")},
        "is_sidechain": bool(first.get("isSidechain")),
        "is_meta": bool(first.get("isMeta")),
        "is_prompt": _is_typed_prompt(first, kinds),
        "version": first.get("version"),
        "uuids": uuids,
        "records": [p.raw for p in pieces],
        "lines": [p.line for p in pieces],
    }


def pieces_from_raws(raws: Iterable[str], lines: Iterable[int]) -> list[Piece]:
    """Stored verbatim records back into pieces, through the same parser and validation as a fresh read."""
    out = []
    for raw, line in zip(raws, lines):
        parsed = parse_line(raw.encode("utf-8", "surrogatepass"))
        if len(parsed.records) == 1:
            out.append(Piece(parsed.records[0], raw, line))
    return out
