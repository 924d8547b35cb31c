"""Render a captured conversation as Markdown or HTML for export: to read, share or archive.

The conversation is rebuilt from the verbatim records (not from the search text, which truncates tool output):
prompts and answers in file order, thinking and tool calls folded with their results, subagents after the main
conversation.  HTML comes from a Jinja2 template with autoescaping; answers (Markdown themselves) go through
markdown-it-py with raw HTML disabled and code highlighted by Pygments — transcript text is data and never
becomes markup.  C0 control characters are shown as their Unicode control pictures, so no output carries a
terminal escape sequence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

RESULT_MAX = 20_000  # characters of one tool result shown; the jsonl export keeps everything
_CONTROLS = {c: 0x2400 + c for c in range(32) if c not in (9, 10, 13)} | {127: 0x2421}


def as_text(text: str) -> str:
    """Transcript text for a document: C0 controls (but tab, newline, carriage return) and DEL as their Unicode
    control pictures (U+2400…), so an exported page cannot steer the terminal it is printed on.  Terminal output
    of the CLI itself goes through ``cxsync.agent.render.visible``."""
    return text.translate(_CONTROLS)


@dataclass
class Item:
    kind: str  # prompt | answer | thinking | tool | result | meta | summary | command | compact
    text: str = ""
    timestamp: str | None = None
    uuid: str | None = None
    name: str | None = None  # tool name
    input: str | None = None  # tool input, pretty JSON
    result: str | None = None
    is_error: bool = False
    sidechain: bool = False


@dataclass
class Conversation:
    title: str
    session: str
    project: str | None
    items: list[Item] = field(default_factory=list)
    subagents: list["Conversation"] = field(default_factory=list)


def _clip(text: str, limit: int = RESULT_MAX) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… [{len(text) - limit} more characters]"


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for b in content if isinstance(content, list) else []:
        if isinstance(b, dict) and b.get("type") == "text":
            out.append(str(b.get("text", "")))
        elif isinstance(b, dict):
            out.append(f"[{b.get('type', 'block')}]")
    return "\n".join(out)


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _image(block: dict[str, Any], at: str | None, uid: str | None, side: bool) -> Item:
    """An inline image, kept only when it is what it says: a known image type and clean base64 (it becomes a
    ``data:`` URL, the one kind of source the page's content policy admits)."""
    src = block.get("source")
    media = src.get("media_type") if isinstance(src, dict) else None
    data = src.get("data") if isinstance(src, dict) else None
    if media in _IMAGE_TYPES and isinstance(data, str) and _BASE64.fullmatch(data):
        return Item("image", data, at, uid, name=str(media), sidechain=side)
    return Item("image", "", at, uid, name="unsupported image", sidechain=side)


def conversation(records: Iterable[str], *, title: str, session: str, project: str | None) -> Conversation:
    """The readable conversation in a file's records (raw JSON lines, in file order)."""
    conv = Conversation(title, session, project)
    tools: dict[str, Item] = {}
    for raw in records:
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        rtype = rec.get("type")
        at = rec.get("timestamp") if isinstance(rec.get("timestamp"), str) else None
        uid = rec.get("uuid") if isinstance(rec.get("uuid"), str) else None
        side = bool(rec.get("isSidechain"))
        if rtype == "system":
            if rec.get("subtype") == "compact_boundary":
                conv.items.append(Item("compact", "conversation compacted", at, uid))
            elif rec.get("subtype") == "local_command" and isinstance(rec.get("content"), str):
                conv.items.append(Item("command", rec["content"], at, uid))
            continue
        if rtype not in ("user", "assistant"):
            continue
        msg = rec.get("message")
        for b in _blocks(msg.get("content") if isinstance(msg, dict) else None):
            if not isinstance(b, dict):
                continue
            t = b.get("type")
            if t == "text" and str(b.get("text", "")).strip():
                text = str(b["text"])
                if rtype == "assistant":
                    kind = "answer"
                elif rec.get("isCompactSummary"):
                    kind = "summary"
                elif rec.get("isMeta"):
                    kind = "meta"
                else:
                    kind = "prompt"
                conv.items.append(Item(kind, text, at, uid, sidechain=side))
            elif t == "thinking" and str(b.get("thinking", "")).strip():
                conv.items.append(Item("thinking", str(b["thinking"]), at, uid, sidechain=side))
            elif t == "tool_use":
                inp = orjson.dumps(b.get("input"), option=orjson.OPT_INDENT_2).decode()
                item = Item("tool", "", at, uid, name=str(b.get("name", "?")), input=inp, sidechain=side)
                conv.items.append(item)
                if isinstance(b.get("id"), str):
                    tools[b["id"]] = item
            elif t == "tool_result":
                text = _clip(_result_text(b.get("content")))
                call = tools.get(str(b.get("tool_use_id")))
                if call is not None and call.result is None:
                    call.result, call.is_error = text, bool(b.get("is_error"))
                else:
                    conv.items.append(Item("result", text, at, uid, is_error=bool(b.get("is_error")),
                                           sidechain=side))
            elif t == "image":
                conv.items.append(_image(b, at, uid, side))
    return conv


# ---- Markdown -----------------------------------------------------------------------------------------------

_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_HTML_CHARS = str.maketrans({"<": "&lt;", "&": "&amp;"})


def _escape_prose(line: str) -> str:
    """Neutralise raw HTML in a line of Markdown prose, leaving code spans as they are."""
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(line):
        out.append(line[pos:m.start()].translate(_HTML_CHARS))
        out.append(m.group(0))
        pos = m.end()
    out.append(line[pos:].translate(_HTML_CHARS))
    return "".join(out)


def markdown_text(text: str) -> str:
    """Markdown from the transcript, kept as Markdown, but with raw HTML outside code shown as text: a
    renderer that allows HTML still shows a transcript's ``<script>`` as characters."""
    out, fence = [], None
    for line in as_text(text).split("\n"):
        m = _FENCE_LINE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append(line)
        elif fence is not None:
            out.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
        else:
            out.append(_escape_prose(line))
    if fence is not None:  # an unclosed fence would swallow the rest of the document
        out.append(fence)
    return "\n".join(out)


def fenced(text: str, lang: str = "") -> str:
    """A fenced block that no backtick run inside ``text`` can close."""
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{as_text(text)}\n{fence}"


_LABEL = {"prompt": "User", "answer": "Assistant", "meta": "Injected context", "summary": "Compaction summary",
          "command": "Command", "result": "Tool result", "thinking": "Thinking"}


def _md_items(conv: Conversation, level: int) -> list[str]:
    h = "#" * level
    out: list[str] = []
    for it in conv.items:
        when = f" · {it.timestamp}" if it.timestamp else ""
        side = " (sidechain)" if it.sidechain else ""
        if it.kind in ("prompt", "answer"):
            out.append(f"{h} {_LABEL[it.kind]}{side}{when}\n\n{markdown_text(it.text)}\n")
        elif it.kind == "image":
            out.append(f"*[{it.name}, {len(it.text) * 3 // 4} bytes]*\n")
        elif it.kind == "compact":
            out.append("---\n\n*conversation compacted*\n")
        elif it.kind == "tool":
            body = f"Input:\n\n{fenced(it.input or '', 'json')}\n"
            if it.result is not None:
                body += f"\n{'Error' if it.is_error else 'Result'}:\n\n{fenced(it.result)}\n"
            name = (it.name or "?").translate(_HTML_CHARS)
            out.append(f"<details><summary>Tool: {as_text(name)}{side}</summary>\n\n{body}\n</details>\n")
        else:
            out.append(f"<details><summary>{_LABEL[it.kind]}{side}</summary>\n\n{fenced(it.text)}\n\n</details>\n")
    return out


def to_markdown(conv: Conversation) -> str:
    head = [f"# {markdown_text(conv.title)}\n", f"- session: `{conv.session}`"]
    if conv.project:
        head.append(f"- project: `{as_text(conv.project)}`")
    parts = ["\n".join(head) + "\n", *_md_items(conv, 2)]
    for sub in conv.subagents:
        parts.append(f"## Subagent {sub.session.rpartition(':')[2]}\n")
        parts.extend(_md_items(sub, 3))
    return "\n".join(parts)


# ---- HTML ---------------------------------------------------------------------------------------------------


def _markdown_renderer() -> Any:
    from markdown_it import MarkdownIt
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    fmt = HtmlFormatter(nowrap=True)

    def code(text: str, lang: str, attrs: str) -> str:
        try:
            lexer = get_lexer_by_name(lang) if lang else None
        except ClassNotFound:
            lexer = None
        if lexer is None:
            return ""  # markdown-it escapes and wraps the code itself
        return str(highlight(text, lexer, fmt))

    # "commonmark" with html=False: a transcript's tags are shown, never parsed; unsafe link schemes are dropped
    return MarkdownIt("commonmark", {"html": False, "highlight": code}).enable(["table", "strikethrough"])


def to_html(conv: Conversation) -> str:
    import jinja2
    from markupsafe import Markup
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import JsonLexer

    md = _markdown_renderer()
    fmt = HtmlFormatter(nowrap=True)

    def markdown(text: str) -> Markup:
        return Markup(md.render(as_text(text)))  # noqa: S704 - markdown-it output with html disabled

    def json_code(text: str) -> Markup:
        return Markup(highlight(as_text(text), JsonLexer(), fmt))  # noqa: S704 - Pygments escapes the code

    env = jinja2.Environment(loader=jinja2.PackageLoader("cxsync.agent", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(markdown=markdown, json_code=json_code, as_text=as_text)
    template = env.get_template("conversation.html.j2")
    return str(template.render(conv=conv, labels=_LABEL, code_css=HtmlFormatter().get_style_defs("pre code")))
