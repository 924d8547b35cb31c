"""What the full-text index needs beyond SQLite: the SQL functions its triggers call, time-ordered message ids,
the parts of code identifiers, and snippets cut from the stored text.

The index is contentless (``messages_fts``, ``content=''``): it holds the tokens, not a copy of the text. The text
of a message lives once, in its stored event. ``apply`` indexes the messages it inserts; when a message's row
changes, the update trigger gets its new text from ``cx_text(event_id)`` (from the batch ``apply`` is writing when
there is one, else by decoding the stored event).
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from typing import Any, Iterable, Iterator, Mapping, Sequence, cast

import apsw

from cxsync.sync.clock import parse_iso

TOKENIZE = ("porter", ["unicode61", "remove_diacritics", "2"])  # as in the schema's tokenize= option
SLOTS = 256  # ids per second of occurred_at: id = seconds * SLOTS + slot
HL_OPEN, HL_CLOSE = "\x02", "\x03"  # snippet highlight markers; the CLI renders them (bold, or ** in --json)

_pending = threading.local()  # texts of the messages apply is writing on this thread, by event id

# A CamelCase or mixedCase identifier (getUserName, HTTPServer, IOError, v2Parser) and its parts. snake_case,
# dotted names and paths need nothing: the tokenizer already splits them, and a phrase query finds the whole.
# Most messages hold one or two among hundreds of words, and a regex over every word costs more than the rest of
# indexing the message: a byte translation (ASCII letters and digits to a/A, other ASCII to space, the bytes of
# other characters to x) lets plain substring searches find the humps ("aA", "AAa") and the words around them.
_SHAPE = bytearray(b" " * 128 + b"x" * 128)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789":
    _SHAPE[_c] = ord("a")
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _SHAPE[_c] = ord("A")
_SHAPES = bytes(_SHAPE)
_HUMPS = (b"aA", b"AAa")
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def idents(text: str | None) -> str:
    """The parts of the CamelCase identifiers in ``text``, space-separated (indexed in their own column).

    An identifier is a word of ASCII letters and digits (between spaces, punctuation or underscores: the parts of
    ``load_userName`` are ``user Name``) with a lower-to-upper or upper-upper-lower step; a word that holds other
    characters (``naïveCase``) is not one."""
    if not text:
        return ""
    data = text.encode("utf-8", "surrogatepass")
    shape = data.translate(_SHAPES)
    words: dict[int, bytes] = {}
    for hump in _HUMPS:
        at = shape.find(hump)
        while at >= 0:
            start = shape.rfind(b" ", 0, at) + 1
            end = shape.find(b" ", at)
            if end < 0:
                end = len(shape)
            if b"x" not in shape[start:end]:
                words[start] = data[start:end]
            at = shape.find(hump, end)
    if not words:
        return ""
    found = b" ".join(words[k] for k in sorted(words)).decode("ascii")
    return " ".join(dict.fromkeys(_PARTS.findall(found)))


class pending_texts:
    """``with pending_texts({event_id: text}):`` — the texts the index's update trigger reads while apply writes."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        self.texts = texts

    def __enter__(self) -> None:
        self.saved = getattr(_pending, "texts", None)
        _pending.texts = self.texts

    def __exit__(self, *exc: object) -> None:
        _pending.texts = self.saved


_INSERT = "INSERT INTO messages_fts(rowid, content, idents) VALUES (?,?,?)"
# Characters of text held back before they are indexed (in a backfill's transaction: ``deferred``). At a million
# messages the index took 16-25 s instead of 43, but what is held counts in the import's 300 MB (see ingest).
DEFERRED_CHARS = 6 << 20


class _Held:
    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str]] = []
        self.size = 0
        self.suspended = 0


_held: dict[int, _Held] = {}  # by id() of a connection inside ``deferred``


def index(conn: apsw.Connection, rows: list[tuple[int, str, str]]) -> None:
    """Index new messages: ``(rowid, text, identifier parts)``, now, or held back within ``deferred``."""
    held = _held.get(id(conn))
    if held is None or held.suspended:
        conn.executemany(_INSERT, rows)
        return
    held.rows += rows
    held.size += sum(len(r[1]) for r in rows)
    if held.size >= DEFERRED_CHARS:
        _flush(conn, held)


def _flush(conn: apsw.Connection, held: _Held) -> None:
    if held.rows:
        held.rows.sort(key=lambda r: r[0])
        conn.executemany(_INSERT, held.rows)
    held.rows, held.size = [], 0


@contextlib.contextmanager
def deferred(conn: apsw.Connection) -> Iterator[None]:
    """``with deferred(conn):`` inside a transaction, new messages are indexed in rowid order, ``DEFERRED_CHARS``
    of text at a time, and all of them before the block ends (so before the transaction commits).

    FTS5 writes its pending terms out as a new segment whenever the rowids it is given stop ascending, and each
    of a backfill's batches starts over at older ids (every file spans its own weeks): a segment every few
    thousand messages, merged and merged again. Ascending, the terms stay pending until the buffer is full.
    An exception leaves what is held unwritten: the transaction it was part of is rolled back."""
    if id(conn) in _held:
        raise RuntimeError("the index is deferred already on this connection")
    held = _held[id(conn)] = _Held()
    try:
        yield
        _flush(conn, held)
    finally:
        del _held[id(conn)]


# FTS5's own defaults: four segments of a level merged into one of the next as the index is written, or all of a
# level at once when sixteen pile up (the cache sets neither). A backfill merges in tiers of ``BACKFILL_MERGE``
# instead (``tiered``), and its end finishes what that started (``Cache.finish_merging``).
FTS5_AUTOMERGE, FTS5_CRISISMERGE, FTS5_USERMERGE = 4, 16, 4
BACKFILL_MERGE = 16  # FTS5's largest for ``usermerge``
BACKFILL_CRISIS = 4 * BACKFILL_MERGE  # a level is merged at once if automatic merging ever fell this far behind


def _merging(conn: apsw.Connection, automerge: int, crisismerge: int) -> None:
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', ?)", (automerge,))
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('crisismerge', ?)", (crisismerge,))


@contextlib.contextmanager
def tiered(conn: apsw.Connection) -> Iterator[None]:
    """``with tiered(conn):`` inside a transaction, the index merges sixteen segments of a level into one of the
    next as it writes (``BACKFILL_MERGE``), instead of FTS5's four.

    A merge rewrites what it merges, so FTS5's four rewrite a backfill's index at every fourfold growth (three or
    four times at a million messages), and sixteen at every sixteenfold: once, up to 256 segments (some two million
    messages). That leaves up to fifteen segments a level, each searched separately: at a million messages, 8 of
    some 18,000 index pages and 7 of 1,400 (searches' p50 2.7 ms, against 1.9 ms with one segment). The other way
    to write everything once, merging nothing while writing and all at the end (FTS5's optimize, 9.7 s), leaves one
    segment, but does it when the readers are done and the writer works alone: standalone imports took 88.4 s that
    way, 79.3-82.6 s this way. The settings are FTS5's own (stored in the index), set back as they were before the
    block ends: the transaction commits them unchanged. An exception leaves them to the rollback."""
    before = dict(conn.execute("SELECT k, v FROM messages_fts_config WHERE k IN ('automerge', 'crisismerge')"))
    _merging(conn, BACKFILL_MERGE, BACKFILL_CRISIS)
    yield
    _merging(conn, int(before.get("automerge", FTS5_AUTOMERGE)), int(before.get("crisismerge", FTS5_CRISISMERGE)))


def merge(conn: apsw.Connection, usermerge: int, *, pages: int) -> bool:
    """FTS5's incremental ``merge`` of about ``pages`` pages: it goes on with a merge begun, or merges a level of
    ``usermerge`` segments or more (set for this call only). Whether there was anything to merge."""
    before = dict(conn.execute("SELECT k, v FROM messages_fts_config WHERE k = 'usermerge'"))
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('usermerge', ?)", (usermerge,))
    changes = conn.total_changes()
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('merge', ?)", (pages,))
    worked = conn.total_changes() - changes >= 2  # fewer changes: FTS5's sign that there was nothing to merge
    conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('usermerge', ?)",
                 (int(before.get("usermerge", FTS5_USERMERGE)),))
    return worked


def holding(conn: apsw.Connection) -> bool:
    """Whether new messages' index rows are held back on ``conn`` (inside ``deferred``)."""
    return id(conn) in _held


@contextlib.contextmanager
def immediate(conn: apsw.Connection, rowids: Iterable[int]) -> Iterator[None]:
    """Within ``deferred``, around writes that change the messages of ``rowids`` (their triggers delete what the
    index holds of them): those held back are indexed first, and the block's new messages at once."""
    held = _held.get(id(conn))
    if held is None:
        yield
        return
    changing = set(rowids)
    if changing and any(r[0] in changing for r in held.rows):
        _flush(conn, held)
    held.suspended += 1
    try:
        yield
    finally:
        held.suspended -= 1


def stored_text(conn: apsw.Connection, event_id: str) -> str:
    """A message's text from its stored event."""
    from cxsync.sync import events as ev

    row = conn.execute("SELECT payload FROM events WHERE event_id=?", (event_id,)).fetchone()
    if row is None:
        return ""
    return str(ev.decode(row[0]).data.get("content") or "")


def texts_of(conn: apsw.Connection, event_ids: Sequence[str]) -> dict[str, str]:
    """Several messages' texts from their stored events, in one query."""
    from cxsync.sync import events as ev

    out: dict[str, str] = {}
    ids = list(dict.fromkeys(event_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for eid, payload in conn.execute(
                "SELECT event_id, payload FROM events WHERE event_id IN (%s)" % ",".join("?" * len(chunk)), chunk):
            out[eid] = str(ev.decode(payload).data.get("content") or "")
    return out


def register(conn: apsw.Connection) -> None:
    """The SQL functions of the index triggers, on one connection (every connection the cache opens):
    ``cx_text(event_id)`` and ``cx_idents(event_id)``, the text of a message and the parts of its identifiers.
    It also registers the cache's compression dictionaries, which its stored events need to be read."""
    from cxsync.cache import compress

    compress.load(conn)
    ref = weakref.ref(conn)
    last: list[Any] = [None, ""]  # the last text looked up: a trigger asks for its text, then its idents

    def cx_text(event_id: str) -> str:
        if last[0] == event_id:
            return str(last[1])
        texts = getattr(_pending, "texts", None)
        if texts is not None and event_id in texts:
            text = str(texts[event_id])
        else:
            c = ref()
            text = stored_text(c, event_id) if c is not None else ""
        last[0], last[1] = event_id, text
        return text

    def cx_idents(event_id: str) -> str:
        return idents(cx_text(event_id))

    # apsw types callbacks as taking and returning any SQLite value; these take and return text.
    conn.create_scalar_function("cx_text", cast(Any, cx_text), 1)
    conn.create_scalar_function("cx_idents", cast(Any, cx_idents), 1)
    conn.create_scalar_function("cx_idents_of", cast(Any, idents), 1, deterministic=True)  # of a text (migration)
    conn.register_fts5_function("cx_rank", cast(Any, rank))
    conn.register_fts5_function("cx_adjacent", cast(Any, adjacent))


# Column weights of bm25 (the text, the parts of its identifiers) and its usual constants.
WEIGHTS = (1.0, 0.5)
K1, B = 1.2, 0.75


def rank(api: apsw.FTS5ExtensionApi, *idf: float) -> float:
    """bm25 with the inverse document frequencies given by the caller (negative: lower is better, as FTS5's).

    FTS5's own bm25 counts every match of every phrase to weigh it, on the first row of each query: for a word in
    one message of eight, that is a walk over 125,000 entries at a million messages. The search estimates them
    from the newest matches instead (``Queries._idf``); phrases it gives no weight get 1.
    """
    consts = api.aux_data
    if consts is None:  # once per query: the average length, the phrase count
        n = api.row_count
        consts = api.aux_data = ((api.column_total_size(-1) / n) if n else 1.0) or 1.0, api.phrase_count
    avg, phrases = consts
    norm = K1 * (1 - B + B * api.column_size(-1) / avg)
    score = 0.0
    for p in range(phrases):
        text, parts = api.phrase_locations(p)  # token offsets in each column: the text, the identifier parts
        tf = WEIGHTS[0] * len(text) + WEIGHTS[1] * len(parts)
        if tf:
            score += (idf[p] if p < len(idf) else 1.0) * tf * (K1 + 1) / (tf + norm)
    return -score


def adjacent(api: apsw.FTS5ExtensionApi, *steps: int) -> int:
    """1 when the query's phrases occur in order in the text, each ``steps[i]`` tokens after the one before (the
    words of a search side by side: an exact phrase found among the matches of its words), else 0."""
    text = [set(api.phrase_locations(p)[0]) for p in range(api.phrase_count)]
    if not text:
        return 0
    for start in text[0]:
        at = start
        for p, step in enumerate(steps[:len(text) - 1], 1):
            at += step
            if at not in text[p]:
                break
        else:
            return 1
    return 0


# ---- time-ordered ids ---------------------------------------------------------------------------------------


def epoch_seconds(iso: str | None) -> int | None:
    t = parse_iso(iso)
    return None if t is None else int(t.timestamp())


def id_floor(iso: str) -> int:
    """The smallest id a message that occurred at or after ``iso`` can have."""
    secs = epoch_seconds(iso)
    return 0 if secs is None else max(0, secs) * SLOTS


def preferred_id(occurred_at: str | None, fallback: str | None, key: str) -> int:
    """Where a message's id starts looking: its second of occurrence, and a slot picked by its key (so two caches
    holding the same messages mostly agree)."""
    import zlib

    secs = epoch_seconds(occurred_at) or epoch_seconds(fallback) or 0
    return max(0, secs) * SLOTS + zlib.crc32(key.encode("utf-8", "surrogatepass")) % SLOTS


# ---- snippets -----------------------------------------------------------------------------------------------


_snippers = threading.local()


def snipper() -> "Snipper":
    """This thread's Snipper, on a private in-memory connection: the tokenizer is FTS5's own, and a connection
    the cache shares with other threads refuses to tokenize while one of them is using it."""
    got = getattr(_snippers, "snipper", None)
    if got is None:
        got = _snippers.snipper = Snipper(apsw.Connection(":memory:"))
    return cast(Snipper, got)


class Snipper:
    """Cuts FTS5-like snippets (a window of ``width`` tokens around the most query terms, terms marked) from text,
    with the index's own tokenizer, so what is marked is what matched."""

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn  # the tokenizer belongs to it
        self._tok: Any = conn.fts5_tokenizer(*TOKENIZE)

    def tokens(self, text: str, *, query: bool = False) -> list[tuple[int, int, str]]:
        """(start, end, token) of each token of ``text``: UTF-8 byte offsets."""
        out = []
        mode = apsw.FTS5_TOKENIZE_QUERY if query else apsw.FTS5_TOKENIZE_DOCUMENT
        for t in self._tok(text.encode("utf-8", "surrogatepass"), mode, None):
            out.append((t[0], t[1], t[2]))
        return out

    def terms(self, words: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for w in words:
            for t in self._tok(w.encode("utf-8", "surrogatepass"), apsw.FTS5_TOKENIZE_QUERY, None):
                out.add(t[2])
        return out

    def snippet(self, text: str, terms: set[str], width: int = 16) -> str:
        data = text.encode("utf-8", "surrogatepass")
        toks = self.tokens(text)
        if not toks:
            return text[:200]
        hits = [i for i, t in enumerate(toks) if t[2] in terms]
        start = 0
        if hits:
            best = (-1, 0)
            for h in hits:  # windows starting a little before each hit: most distinct terms, then earliest
                s = max(0, min(h - width // 4, len(toks) - width))
                distinct = len({toks[i][2] for i in hits if s <= i < s + width})
                if distinct > best[0]:
                    best = (distinct, s)
            start = best[1]
        end = min(len(toks), start + width)
        marked = set(hits)
        out: list[bytes] = [b"\xe2\x80\xa6"] if start > 0 else []
        pos = toks[start][0]
        for i in range(start, end):
            a, b, _ = toks[i]
            out.append(data[pos:a])
            out.append(HL_OPEN.encode() + data[a:b] + HL_CLOSE.encode() if i in marked else data[a:b])
            pos = b
        if end < len(toks):
            out.append(b"\xe2\x80\xa6")
        else:
            out.append(data[pos:])
        return b"".join(out).decode("utf-8", "replace")


def query_words(fts_query: str) -> Iterator[str]:
    """The bare words of an FTS5 query (operators and syntax dropped), for marking snippets."""
    for w in re.findall(r"\w+", fts_query):
        if w not in ("AND", "OR", "NOT", "NEAR"):
            yield w
