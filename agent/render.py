"""How stored text, times, sizes and rows reach a person: safely, in their zone, in the format they asked for.

Transcript text is data.  Everything printed from the cache goes through ``visible`` (control characters shown
as their Unicode control pictures, so ``ESC]0;…BEL`` cannot retitle a terminal and ``ESC[2J`` cannot clear it)
and reaches rich only as ``rich.text.Text`` — never as markup, so ``[/]``, ``[bold]`` and ``:rocket:`` print as
typed.  Machine formats (json, jsonl, csv, tsv) carry the exact text, escaped by their own rules.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

FORMATS = ("table", "json", "jsonl", "csv", "tsv")

# C0 controls except newline and tab, DEL, C1 controls, and the bidirectional overrides/isolates that reorder
# what a terminal shows ("Trojan Source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u202a-\u202e\u2066-\u2069]")


def _picture(m: re.Match[str]) -> str:
    c = m.group()
    o = ord(c)
    if o < 0x20:
        return chr(0x2400 + o)  # ␛ for ESC, ␇ for BEL, ␍ for CR …
    if o == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{o:04X}>"


def visible(text: str, *, tabs: bool = True) -> str:
    """``text`` with every terminal control character replaced by a visible stand-in; newlines kept."""
    out = _CONTROL.sub(_picture, text)
    return out if tabs else out.replace("\t", "    ")


_SPACES = re.compile(r"(?:\s|\\n|\\r|\\t)+")


def one_line(text: str, width: int | None = None) -> str:
    """Visible text folded onto one line (newlines, tabs and their escaped ``\\n`` forms become one space)."""
    out = visible(_SPACES.sub(" ", text).strip())
    if width is not None and len(out) > width:
        out = out[: max(1, width - 1)] + "…"
    return out


def styled(text: str, style: str = "") -> Any:
    """A rich ``Text`` of stored text: printed exactly, never parsed as markup or emoji codes."""
    from rich.text import Text

    return Text(visible(text), style=style)


def console(file: TextIO | None = None, width: int | None = None) -> Any:
    """A rich console that interprets nothing it is given as markup, emoji or highlighting."""
    from rich.console import Console

    return Console(file=file, width=width, markup=False, emoji=False, highlight=False, soft_wrap=False)


# ---- times ---------------------------------------------------------------------------------------------------


def parse_time(iso: str | None) -> datetime | None:
    from cxsync.sync.clock import parse_iso

    return parse_iso(iso)


def local_time(iso: str | None) -> str:
    """An ISO timestamp in the user's local zone, one format everywhere: ``2026-11-30 14:05``."""
    t = parse_time(iso)
    return t.astimezone().strftime("%Y-%m-%d %H:%M") if t else ""


_UNIT_NAMES = {"w": "week", "d": "day", "h": "hour", "m": "minute"}


def ago(seconds: float, *, long: bool = False) -> str:
    """``just now``, ``5m ago``, ``2h ago``, ``3d ago`` — as Atuin and Maestral say it (``long``: ``2 hours ago``)."""
    s = int(seconds)
    if s < 0:
        return "in the future"
    if s < 45:
        return "just now"
    for unit, span in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= span and (unit != "w" or s >= 14 * 86400):
            n = max(1, s // span)
            if long:
                return f"{n} {_UNIT_NAMES[unit]}{'' if n == 1 else 's'} ago"
            return f"{n}{unit} ago"
    return "1 minute ago" if long else "1m ago"


def duration(seconds: float) -> str:
    """An uptime: ``45s``, ``12m``, ``3h 05m``, ``2d 4h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def since(iso: str | None, now: datetime | None = None) -> float | None:
    t = parse_time(iso)
    if t is None:
        return None
    return ((now or datetime.now(timezone.utc)) - t).total_seconds()


def when(iso: str | None, now: datetime | None = None, *, short: bool = False) -> str:
    """Relative within a week (where it helps), the local date and time beyond (``short``: the date only)."""
    age = since(iso, now)
    if age is None:
        return ""
    if 0 <= age < 7 * 86400:
        return ago(age)
    return local_time(iso)[:10] if short else local_time(iso)


def when_long(iso: str | None, now: datetime | None = None) -> str:
    """Local date and time with the relative age beside it: ``2026-11-30 14:05 (2h ago)``."""
    age = since(iso, now)
    if age is None:
        return ""
    return f"{local_time(iso)} ({ago(age)})"


# ---- sizes ---------------------------------------------------------------------------------------------------


def size(n: float | None) -> str:
    """Bytes, human-readable in powers of 1024: ``512 B``, ``1.5 KiB``, ``23 MiB``."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.0f} TiB"  # pragma: no cover - the loop returns


def path_tail(path: str | None, width: int = 24) -> str:
    """The end of a path — the part people recognise — shortened from the left: ``…/dev/webapp``."""
    if not path:
        return ""
    p = visible(path).rstrip("/")
    if len(p) <= width:
        return p
    parts = p.split("/")
    out = parts[-1]
    for part in reversed(parts[:-1]):
        if len(out) + len(part) + 2 > width:
            break
        out = f"{part}/{out}"
    out = "…/" + out if not out.startswith("/") else out
    return out if len(out) <= width else "…" + out[-(width - 1):]


# ---- rows in the format the user asked for -------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a table: its header, how to get the cell from a row, and how it may shrink."""

    header: str
    cell: Callable[[Mapping[str, Any]], str]
    style: str = ""
    no_wrap: bool = True
    ratio: int | None = None
    min_width: int | None = None
    justify: str = "left"
    width: int | None = None


def _json_safe(encoded: str) -> str:
    # JSON escapes C0 controls itself; C1 controls and DEL are legal raw in JSON but some terminals act on them.
    return re.sub("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]", lambda m: f"\\u{ord(m.group()):04x}", encoded)


def json_text(data: Any, *, indent: bool = True) -> str:
    import orjson

    opt = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return _json_safe(orjson.dumps(data, option=opt, default=str).decode())


def emit(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], fmt: str, *,
         out: TextIO | None = None, records: Iterable[Any] | None = None, title: str | None = None) -> None:
    """Print ``rows`` as a table (for people) or json/jsonl/csv/tsv (for programs).

    json and jsonl print ``records`` (the full data, default: the rows themselves); csv and tsv print the columns.
    """
    out = out or sys.stdout
    if fmt in ("json", "jsonl"):
        data = list(records) if records is not None else list(rows)
        if fmt == "json":
            out.write(json_text(data) + "\n")
        else:
            for r in data:
                out.write(json_text(r, indent=False) + "\n")
        return
    if fmt in ("csv", "tsv"):
        buf = io.StringIO()
        w = csv.writer(buf, dialect="excel-tab" if fmt == "tsv" else "excel", lineterminator="\n")
        w.writerow([c.header for c in columns])
        for r in rows:
            w.writerow([c.cell(r) for c in columns])
        out.write(visible(buf.getvalue()))
        return
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", title=title, expand=False)
    for c in columns:
        table.add_column(c.header, no_wrap=c.no_wrap, overflow="ellipsis", ratio=c.ratio, min_width=c.min_width,
                         width=c.width, justify=c.justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*[styled(c.cell(r), c.style) for c in columns])
    console(out, width=terminal_width(out)).print(table)


def terminal_width(out: TextIO | None = None) -> int:
    """The terminal's width; 80 when piped unless COLUMNS says otherwise (piped tables stay readable)."""
    try:
        env = int(os.environ.get("COLUMNS", ""))
        if env > 0:
            return env
    except ValueError:
        pass
    stream = out or sys.stdout
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return 80
