"""Edit a JSON document in place, as text: add, replace or remove one member or array element and leave every
other byte as the person (or program) who wrote the file left it — their indentation, key order, spacing.

Used to register cxsync in Claude Code's settings files, which people edit by hand: a parse-and-dump round trip
would reformat the whole file. Values are located with the standard library's JSON scanner; only the span of the
edited member changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

_WS = re.compile(r"[ \t\n\r]*")
_INDENT = re.compile(r"[ \t]*")
_decoder = json.JSONDecoder()


class JsonEditError(ValueError):
    pass


@dataclass(frozen=True)
class Span:
    start: int  # the key's opening quote (members) or the value's first character (elements)
    value_start: int
    end: int  # just after the value


@dataclass(frozen=True)
class Container:
    open: int  # index of { or [
    close: int  # index of } or ]
    items: tuple[Span, ...]
    keys: tuple[str, ...]  # members' keys; empty for arrays


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _value_end(text: str, i: int) -> int:
    try:
        return _decoder.raw_decode(text, i)[1]
    except json.JSONDecodeError as exc:
        raise JsonEditError(f"not valid JSON at character {exc.pos}: {exc.msg}") from None


def scan(text: str, at: int) -> Container:
    """The members (or elements) of the object (or array) whose opening bracket is at ``at``."""
    opener = text[at]
    if opener not in "{[":
        raise JsonEditError(f"expected an object or array at character {at}")
    closer = "}" if opener == "{" else "]"
    items: list[Span] = []
    keys: list[str] = []
    i = _ws(text, at + 1)
    if text[i:i + 1] == closer:
        return Container(at, i, (), ())
    while True:
        start = i
        if opener == "{":
            if text[i:i + 1] != '"':
                raise JsonEditError(f"expected a key at character {i}")
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = _ws(text, i)
            if text[i:i + 1] != ":":
                raise JsonEditError(f"expected ':' at character {i}")
            i = _ws(text, i + 1)
            keys.append(key)
        vstart = i
        i = _value_end(text, i)
        items.append(Span(start, vstart, i))
        i = _ws(text, i)
        c = text[i:i + 1]
        if c == ",":
            i = _ws(text, i + 1)
        elif c == closer:
            return Container(at, i, tuple(items), tuple(keys))
        else:
            raise JsonEditError(f"expected ',' or '{closer}' at character {i}")


def root(text: str) -> Container:
    i = _ws(text, 0)
    c = scan(text, i)
    if text[i] != "{":
        raise JsonEditError("the file's top level is not a JSON object")
    if _ws(text, c.close + 1) != len(text):
        raise JsonEditError(f"extra data after the JSON object at character {c.close + 1}")
    return c


def find(text: str, path: Sequence[str]) -> Container | None:
    """The object or array at ``path`` (keys from the top), or None if some key is missing or not a container."""
    c = root(text)
    for key in path:
        if key not in c.keys:
            return None
        span = c.items[c.keys.index(key)]
        if text[span.value_start] not in "{[":
            return None
        c = scan(text, span.value_start)
    return c


def indent_unit(text: str) -> str:
    m = re.search(r"\n([ \t]+)\S", text)
    return m.group(1) if m else "  "


def _line_indent(text: str, i: int) -> str:
    start = text.rfind("\n", 0, i) + 1
    m = _INDENT.match(text, start)
    return m.group() if m else ""


def _newline(text: str) -> str:
    """The file's own line ending (a Windows-edited settings file keeps CRLF)."""
    return "\r\n" if "\r\n" in text else "\n"


def _dump(value: Any, indent: str, unit: str, multiline: bool, nl: str = "\n") -> str:
    if not multiline:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, indent=unit).replace("\n", nl + indent)


def _insert(text: str, c: Container, piece_for: Callable[[str, bool], str]) -> str:
    """Insert a rendered item at the end of container ``c``; ``piece_for(indent, multiline)`` renders it."""
    unit = indent_unit(text)
    nl = _newline(text)
    multiline = "\n" in text[c.open:c.close] or not c.items
    if not c.items:
        if "\n" not in text:
            return text[:c.open + 1] + piece_for("", False) + text[c.close:]
        outer = _line_indent(text, c.open)
        inner = outer + unit
        return text[:c.open + 1] + nl + inner + piece_for(inner, True) + nl + outer + text[c.close:]
    last = c.items[-1]
    if multiline:
        inner = _line_indent(text, c.items[0].start)
        return text[:last.end] + "," + nl + inner + piece_for(inner, True) + text[last.end:]
    return text[:last.end] + ", " + piece_for("", False) + text[last.end:]


def add_member(text: str, obj: Container, key: str, value: Any) -> str:
    if key in obj.keys:
        raise JsonEditError(f"key {key!r} already present")
    unit, nl = indent_unit(text), _newline(text)
    return _insert(text, obj,
                   lambda ind, ml: json.dumps(key, ensure_ascii=False) + ": " + _dump(value, ind, unit, ml, nl))


def add_element(text: str, arr: Container, value: Any) -> str:
    unit, nl = indent_unit(text), _newline(text)
    return _insert(text, arr, lambda ind, ml: _dump(value, ind, unit, ml, nl))


def replace_value(text: str, span: Span, value: Any) -> str:
    multiline = "\n" in text[span.value_start:span.end]
    indent = _line_indent(text, span.start)
    return (text[:span.value_start] + _dump(value, indent, indent_unit(text), multiline, _newline(text))
            + text[span.end:])


def remove_item(text: str, c: Container, index: int) -> str:
    """Remove member or element ``index``: the exact inverse of :func:`add_member` / :func:`add_element`."""
    span = c.items[index]
    if len(c.items) == 1:
        return text[:c.open + 1] + text[c.close:]
    if index > 0:
        return text[:c.items[index - 1].end] + text[span.end:]
    return text[:span.start] + text[c.items[1].start:]


def value_at(text: str, span: Span) -> Any:
    return json.loads(text[span.value_start:span.end])


def ensure_path(text: str, path: Sequence[str], leaf: Any) -> tuple[str, list[str]]:
    """Make sure objects exist along ``path[:-1]`` and the last key holds a container; missing parts are created
    with ``leaf`` as the innermost value. Returns the new text and the path of the first member created (empty
    when everything existed)."""
    c = root(text)
    for depth, key in enumerate(path):
        if key not in c.keys:
            value: Any = leaf
            for k in reversed(path[depth + 1:]):
                value = {k: value}
            return add_member(text, c, key, value), list(path[:depth + 1])
        span = c.items[c.keys.index(key)]
        want = "{" if depth < len(path) - 1 or isinstance(leaf, dict) else "["
        if text[span.value_start] != want:
            raise JsonEditError(f"{'.'.join(path[:depth + 1])} is not a JSON "
                                f"{'object' if want == '{' else 'array'}")
        c = scan(text, span.value_start)
    return text, []
