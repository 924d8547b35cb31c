"""What the user typed → an FTS5 MATCH expression, and the bounds that keep a query from hanging the machine.

Two modes, never mixed:

- **plain** (the default): every whitespace-separated word is a word, each must occur.  ``NOT``, ``AND``, ``OR``,
  ``NEAR``, quotes, parentheses, ``*`` and ``:`` are just characters of words — ``Do NOT use bd edit`` looks for
  the word "NOT", and ``AND`` alone looks for "and".
- **raw** (``--fts``): the text is FTS5 query syntax, checked here with apsw's own FTS5 parser so that a mistake is
  reported before SQLite sees it, in words that talk about the syntax the user wrote (never about a flag they did
  not pass).

Both modes are bounded (issue 9, item 4): a query longer than ``MAX_QUERY_CHARS`` or with more than
``MAX_TERMS`` terms is a usage error, decided by counting characters and terms — linear in the input, well under
a millisecond for a 100 KB query — before any FTS5 work is done.
"""

from __future__ import annotations

import re
from typing import Any

from cxsync.sync.errors import UsageError

MAX_QUERY_CHARS = 2_000
MAX_TERMS = 64

_WORD = re.compile(r"\S+")
_SYNTAX_HELP = ("FTS5 syntax: words, \"exact phrases\", prefix*, AND, OR, NOT, NEAR(a b, 10), (groups); "
                "leave out --fts to search the words as typed")


class QueryTextError(UsageError):
    """The search text cannot be turned into a query; the message says why (the user's input: exit 2)."""


def _check_length(text: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise QueryTextError(f"the search text is too long ({len(text):,} characters; the limit is "
                             f"{MAX_QUERY_CHARS:,})", "search for a few distinctive words instead")


def _too_many(n: int) -> QueryTextError:
    return QueryTextError(f"the search has too many terms ({n:,}; the limit is {MAX_TERMS})",
                          "search for a few distinctive words instead")


def quote(word: str) -> str:
    """One FTS5 string token: always double-quoted, so that no word is ever read as an operator.

    Not ``apsw.fts5query.quote``: it leaves a bare word bare, and ``NOT``, ``AND``, ``OR`` are bare words.
    """
    return '"' + word.replace('"', '""') + '"'


def plain_words(text: str) -> list[str]:
    """The distinct words of a plain search, in order (a repeated word adds nothing to an AND of words)."""
    _check_length(text)
    words = _WORD.findall(text)
    if len(words) > MAX_TERMS:
        raise _too_many(len(words))
    return list(dict.fromkeys(words))


def plain_to_fts(text: str) -> str:
    """Plain words → an FTS5 expression where every word must occur."""
    words = plain_words(text)
    if not words:
        raise QueryTextError("empty search", "give some words to look for")
    return " ".join(quote(w) for w in words)


def _count_terms(node: Any) -> int:
    import apsw.fts5query as q

    if isinstance(node, q.PHRASE):
        return 1
    if isinstance(node, q.NEAR):
        return len(node.phrases)
    if isinstance(node, q.NOT):
        return _count_terms(node.match) + _count_terms(node.no_match)
    if isinstance(node, q.COLUMNFILTER):
        return _count_terms(node.query)
    return sum(_count_terms(n) for n in getattr(node, "queries", ()))


def raw_fts(text: str) -> str:
    """Checked raw FTS5 syntax (``--fts``): returned as typed once it parses and stays within the bounds."""
    _check_length(text)
    query = text.strip()
    if not query:
        raise QueryTextError("empty search", "give some words to look for")
    # Count before parsing: the parser is recursive and a 10,000-term OR must not get that far.
    rough = len(_WORD.findall(query)) + query.count("(")
    if rough > 4 * MAX_TERMS:
        raise _too_many(rough)
    import apsw.fts5query  # imports apsw.ext (~100 ms): only when a search runs, never for `cxsync status`

    try:
        parsed = apsw.fts5query.parse_query_string(query)
    except apsw.fts5query.ParseError as exc:
        reason = exc.args[1] if len(exc.args) > 1 else str(exc)
        where = exc.args[2] if len(exc.args) > 2 else None
        at = f" at character {where + 1}" if isinstance(where, int) else ""
        raise QueryTextError(f"bad full-text query {query!r}: {str(reason).lower()}{at}", _SYNTAX_HELP) from None
    except RecursionError:
        raise QueryTextError("the full-text query nests too deeply", _SYNTAX_HELP) from None
    n = _count_terms(parsed)
    if n > MAX_TERMS:
        raise _too_many(n)
    return query


def to_fts(text: str, *, fts: bool = False) -> str:
    """The MATCH expression for what the user typed: raw FTS5 syntax with ``fts``, plain words otherwise."""
    return raw_fts(text) if fts else plain_to_fts(text)


_NAMED_SINCE = {"today": 0, "yesterday": 1, "last week": 7, "last month": 30, "this week": None}
_RELATIVE = re.compile(r"^(\d{1,7})\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since_to_iso(when: str, now: Any = None) -> str:
    """``--since``: ``2h``/``3d``/``1w``, ``today``, ``yesterday``, ``last week``, ``last month``, or an ISO date
    (in the local zone when it has none) → an ISO UTC timestamp.  Out-of-range values are usage errors."""
    from datetime import datetime, timedelta, timezone

    now = now or datetime.now(timezone.utc)
    w = " ".join(when.strip().lower().split())
    hint = "use 2h, 3d, 1w, today, yesterday, last week, or a date like 2026-11-01"
    if len(w) > 64:
        raise QueryTextError("--since is too long", hint)
    try:
        if w in _NAMED_SINCE or w == "this week":
            local_now = now.astimezone()
            midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
            if w == "this week":
                t = midnight - timedelta(days=midnight.weekday())
            elif w in ("today", "yesterday"):
                t = midnight - timedelta(days=_NAMED_SINCE[w] or 0)
            else:
                t = now - timedelta(days=_NAMED_SINCE[w] or 0)
        elif (m := _RELATIVE.match(w)) is not None:
            t = now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        else:
            t = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
            if t.tzinfo is None:
                t = t.astimezone()  # a date the user typed is in their own zone
    except (ValueError, OverflowError):
        raise QueryTextError(f"cannot understand --since {when!r}", hint) from None
    try:
        return str(t.astimezone(timezone.utc).isoformat(timespec="milliseconds")).replace("+00:00", "Z")
    except (ValueError, OverflowError):
        raise QueryTextError(f"--since {when!r} is out of range", hint) from None
