"""Fuzzing of the transcript reader, the normaliser and the event codec (Hypothesis): arbitrary bytes, truncated
and glued lines, deep nesting, huge numbers, wrong types.  No exception escapes, nothing hangs, every good record
among the garbage is captured.

The budget is small by default so that the suite stays quick; ``CXSYNC_FUZZ_EXAMPLES=20000`` runs a long
campaign (each test then gets that many examples).
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cxsync.agent import transcript as tx
from cxsync.agent.discovery import TranscriptFile
from cxsync.agent.ingest import Ingestor
from cxsync.agent.tailer import tail
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests import transcripts as T

EXAMPLES = int(os.environ.get("CXSYNC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
IDENT = ev.Identity("acme", "bob", "laptop")
pytestmark = pytest.mark.timeout(300 + EXAMPLES // 2)  # a long campaign must not be cut by the suite's timeout

# ---- strategies ---------------------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=10**40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                         max_size=4), max_leaves=20)
ENVELOPE = ["type", "uuid", "parentUuid", "sessionId", "timestamp", "cwd", "gitBranch", "version", "isSidechain",
            "isMeta", "isCompactSummary", "agentId", "origin", "leafUuid", "customTitle", "summary", "message"]


@st.composite
def hostile_records(draw: st.DrawFn) -> dict[str, Any]:
    """A record shaped like Claude Code's, with any of its fields replaced by a value of any type."""
    kind = draw(st.sampled_from(["user", "assistant", "summary", "custom-title", "progress", "x-future"]))
    sid = "f0000000-0000-4000-8000-000000000000"
    if kind == "assistant":
        rec = T.assistant_lines(sid, [T.text(draw(st.text(max_size=40))), T.tool_use("Bash", {"c": "ls"})])[0]
    else:
        rec = T.user(sid, draw(st.text(max_size=40)))
        rec["type"] = kind
    for key in draw(st.lists(st.sampled_from(ENVELOPE), max_size=4)):
        rec[key] = draw(json_values)
    msg = rec.get("message")
    if isinstance(msg, dict):
        for key in draw(st.lists(st.sampled_from(["id", "model", "content", "usage", "role"]), max_size=3)):
            msg[key] = draw(json_values)
        usage = msg.get("usage")
        if isinstance(usage, dict):
            for key in draw(st.lists(st.sampled_from(tx.TOKEN_FIELDS), max_size=2)):
                usage[key] = draw(scalars)
        if draw(st.booleans()):
            msg["content"] = [draw(st.fixed_dictionaries({"type": st.sampled_from(
                ["text", "thinking", "tool_use", "tool_result", "image", "tool_reference", "?"])},
                optional={"text": json_values, "name": json_values, "input": json_values, "content": json_values,
                          "source": json_values, "thinking": json_values})) for _ in range(draw(st.integers(0, 3)))]
    return rec


def _dump(rec: Any) -> bytes:
    return json.dumps(rec, ensure_ascii=draw_ascii[0]).encode("utf-8", "surrogatepass")


draw_ascii = [True]


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    """One physical line (no newline): a hostile record, damaged in one of the ways real files are."""
    how = draw(st.sampled_from(["record", "truncated", "glued", "deep", "bytes", "huge-number", "not-object"]))
    if how == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if how == "deep":
        depth = draw(st.integers(500, 3000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        closer = b"]" if opener == b"[" else b"}"
        return b'{"type":"user","message":{"content":' + opener * depth + b"1" + closer * depth + b"}}"
    if how == "not-object":
        return json.dumps(draw(json_values)).encode()
    draw_ascii[0] = draw(st.booleans())
    line = _dump(draw(hostile_records()))
    if how == "truncated":
        return line[:draw(st.integers(0, len(line)))]
    if how == "glued":
        return line + _dump(draw(hostile_records()))[:draw(st.integers(0, 400))]
    if how == "huge-number":
        return line.replace(b'"output_tokens": 8', b'"output_tokens": ' + draw(st.sampled_from(
            [b"1e400", b"-1e400", b"NaN", b"Infinity", b"1" + b"0" * 400, b"-0", b"1.5e300"])))
    return line.replace(b"\n", b"\\n")


# ---- the reader ---------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=4000))
def test_reader_survives_arbitrary_bytes(data: bytes) -> None:
    parsed = tx.parse_line(data)
    _assert_clean(parsed)


@FUZZ
@given(hostile_lines())
def test_reader_survives_damaged_lines(line: bytes) -> None:
    _assert_clean(tx.parse_line(line))


def _assert_clean(parsed: tx.ParsedLine) -> None:
    assert len(parsed.records) == len(parsed.raws)
    for rec, raw in zip(parsed.records, parsed.raws):
        assert isinstance(rec, dict) and isinstance(raw, str)
        raw.encode("utf-8")  # storable as it is
        assert tx.validate_record(rec) == 0  # already validated: nothing left to drop
        ev.encode(ev.records_captured(IDENT, "s", [{"key": tx.record_key(rec, raw, "f.jsonl"), "raw": raw,
                                                     "type": rec.get("type")}]))


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 64))
def test_tailer_yields_each_complete_line_once_whatever_the_bytes(chunks: list[bytes], max_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        data = b"".join(chunks)
        path.write_bytes(data)
        got: list[bytes] = []
        state = None
        for _ in range(len(data) + 2):
            res = tail(str(path), state, max_bytes=max_bytes)
            got.extend(ln.data for ln in res.lines)
            state = res.state
            if not res.more:
                break
        complete = data[:data.rfind(b"\n") + 1] if b"\n" in data else b""
        assert got == [ln for ln in complete.split(b"\n")[:-1] if ln.strip()]
        assert state is not None and state.offset == len(complete)


# ---- the normaliser, down to the cache ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_home() -> Iterator[tuple[Path, Any]]:
    with tempfile.TemporaryDirectory() as d:
        cache = open_cache(Path(d) / "cache.db", route=lambda e: ev.route(e, ["u/bob"]))
        try:
            yield Path(d), cache
        finally:
            cache.close()


_files = itertools.count()


@FUZZ
@given(st.lists(hostile_lines(), min_size=1, max_size=8), st.integers(0, 3))
def test_normaliser_captures_the_good_records_among_hostile_ones(fuzz_home: tuple[Path, Any], garbage: list[bytes],
                                                                 at: int) -> None:
    home, cache = fuzz_home
    n = next(_files)
    sid = f"f{n:07d}-0000-4000-8000-000000000000"
    marker = f"goodfuzz{n}"
    good = [T.line(T.user(sid, f"{marker} first")), *[T.line(a) for a in T.assistant_lines(
        sid, [T.text(f"{marker} second"), T.text("more")])]]
    lines = [g.rstrip(b"\n") for g in good]
    for g in garbage:
        lines.insert(min(at, len(lines)), g)
    path = home / "projects" / "p" / f"{sid}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    ing = Ingestor(cache, IDENT, [home])
    ing.ingest_file(TranscriptFile(path, "main", sid, None, None, "p"))
    hits = [h for h in cache.search(marker) if h.session == sid]
    assert sorted(h.role for h in hits) == ["assistant", "user"], hits
    for (payload,) in cache.conn.execute("SELECT e.payload FROM events e JOIN messages m ON m.event_id = e.event_id"
                                         " WHERE m.session_id=?", (sid,)):
        ev.decode(payload)  # what was stored decodes


# ---- the event codec ----------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
@example(b"0")
@example(b'{"t":"SessionStarted","d":{"R":2}}')
def test_codec_refuses_arbitrary_bytes_with_its_own_error(blob: bytes) -> None:
    for candidate in (blob, bytes([ev.CODEC_VERSION]) + blob, ev.seal(blob), bytes([ev.CODEC_ZLIB]) + blob):
        try:
            e = ev.decode(candidate)
        except ev.CodecError:
            continue
        assert isinstance(e, ev.ContextEvent)


@FUZZ
@given(st.sampled_from(sorted(ev.EVENT_TYPES)), st.dictionaries(st.text(max_size=10), json_values, max_size=6),
       st.lists(st.text(max_size=40), max_size=4))
def test_codec_round_trips_whatever_data_it_accepts(etype: str, data: dict[str, Any], raws: list[str]) -> None:
    if raws:
        data["records"] = raws if len(raws) % 2 else [{"key": str(i), "raw": r} for i, r in enumerate(raws)]
    e = ev.ContextEvent(etype, "id", "t", "u", "m", "2026-01-01T00:00:00Z", data)
    try:
        blob = ev.encode(e)
    except (TypeError, ValueError):  # orjson refuses what JSON cannot say (NaN is written null; huge ints refused)
        return
    back = ev.decode(blob)
    assert back.type == e.type and back.event_id == e.event_id
    assert json.loads(ev.serialize(back).split(b"\n", 1)[0])["d"].keys() == \
        json.loads(ev.serialize(e).split(b"\n", 1)[0])["d"].keys()


@FUZZ
@given(st.binary(min_size=1, max_size=400), st.integers(0, 400))
def test_codec_refuses_truncated_and_flipped_payloads(noise: bytes, cut: int) -> None:
    blob = ev.encode(ev.records_captured(IDENT, "s", [{"key": "k", "raw": '{"type":"x"}', "type": "x"}]))
    for candidate in (blob[:cut], blob[:cut] + noise, bytes(a ^ b for a, b in zip(blob, noise + blob))):
        try:
            ev.decode(candidate)
        except ev.CodecError:
            pass
