"""The transcript reader and its one validation boundary: a bad record is counted and skipped, a field of the
wrong type is dropped from the parsed record (the verbatim line keeps it), and nothing raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from cxsync.agent import transcript as tx
from cxsync.agent.discovery import TranscriptFile
from cxsync.agent.ingest import IngestStats, Ingestor
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests import transcripts as T

IDENT = ev.Identity("acme", "bob", "laptop")


@pytest.mark.parametrize("line", [
    b'{"type":"user","message":{"content":' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}}",
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"a":{"b":' * 40_000,
])
def test_nesting_past_every_parser_limit_is_one_malformed_line(line: bytes) -> None:
    parsed = tx.parse_line(line)
    assert parsed.records == [] and parsed.malformed == 1


def test_a_damaged_line_is_given_up_after_a_bounded_number_of_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = tx._decoder

    class Counting:
        def decode(self, s: str) -> Any:
            return real.decode(s)

        def raw_decode(self, s: str, idx: int = 0) -> Any:
            calls.append(idx)
            return real.raw_decode(s, idx)

    monkeypatch.setattr(tx, "_decoder", Counting())
    # Each start opens an array that runs to the end of the line: every attempt would scan the rest of it.
    line = b'{"a":[' + (b'{"b":[' + b"1," * 1000) * 200
    parsed = tx.parse_line(line)
    assert parsed.records == [] and parsed.malformed == 1
    assert len(calls) <= tx.MAX_RESYNC


def test_a_line_of_a_million_glued_objects_yields_a_bounded_number() -> None:
    parsed = tx.parse_line(b"{}" * 1_000_000)
    assert len(parsed.records) == tx.MAX_GLUED and parsed.malformed == 1


def test_glued_objects_and_damage_between_them_are_split_and_counted_once() -> None:
    a, b = T.line(T.user("s", "one")).rstrip(), T.line(T.user("s", "two")).rstrip()
    parsed = tx.parse_line(a + b'{"torn":' + b + b"[1,2]")
    assert [json.loads(r)["message"]["content"] for r in parsed.raws] == ["one", "two"]
    assert parsed.malformed == 2  # the torn piece and the array


@pytest.mark.parametrize("field, value", [
    ("gitBranch", {"name": "main"}), ("version", ["2", "1"]), ("cwd", 7), ("timestamp", 1.5), ("uuid", ["u"]),
    ("uuid", "u" * 300), ("sessionId", {"s": 1}), ("isSidechain", "yes"), ("isMeta", 1), ("type", ["user"]),
    ("origin", "human"), ("parentUuid", 12), ("message", "a string"), ("customTitle", ["t"]),
])
def test_an_envelope_field_of_the_wrong_type_is_dropped_and_counted(field: str, value: Any) -> None:
    rec = T.user("s", "hello")
    rec[field] = value
    parsed = tx.parse_line(T.line(rec).rstrip())
    assert parsed.repaired == 1 and parsed.malformed == 0
    assert field not in parsed.records[0]
    assert json.loads(parsed.raws[0])[field] == value  # the verbatim line keeps everything


@pytest.mark.parametrize("figure", ['"12"', "-5", "true", "1e400", "NaN", "Infinity", "1" + "0" * 30, "1.5e300",
                                    "3.5", "[1]", '{"n":1}'])
def test_a_token_count_that_is_not_one_is_dropped(figure: str) -> None:
    rec = T.assistant_lines("s", [T.text("hi")])[0]
    line = T.line(rec).rstrip().replace(b'"output_tokens": 8', b'"output_tokens": ' + figure.encode())
    parsed = tx.parse_line(line)
    assert parsed.repaired == 1
    assert "output_tokens" not in parsed.records[0]["message"]["usage"]
    assert parsed.records[0]["message"]["usage"]["input_tokens"] == 10


@pytest.mark.parametrize("field, value", [("model", ["claude"]), ("model", 42), ("id", {"x": 1}),
                                          ("usage", "lots")])
def test_a_message_field_of_the_wrong_type_is_dropped(field: str, value: Any) -> None:
    rec = T.assistant_lines("s", [T.text("hi")])[0]
    rec["message"][field] = value
    parsed = tx.parse_line(T.line(rec).rstrip())
    assert parsed.repaired == 1 and field not in parsed.records[0]["message"]


def test_token_count_accepts_only_plausible_integers() -> None:
    assert [tx.token_count(v) for v in (0, 12, 12.0, tx.TOKEN_MAX)] == [0, 12, 12, tx.TOKEN_MAX]
    assert [tx.token_count(v) for v in (True, -1, 1.5, float("inf"), float("nan"), 10**30, "12", None)] == \
        [None] * 8


def test_lone_surrogates_are_replaced_so_the_record_can_be_stored() -> None:
    line = T.line(T.user("s", "before X after")).rstrip().replace(b"X", b"\\ud800 \\udc00\\ud83d\\ude00")
    parsed = tx.parse_line(line)
    content = parsed.records[0]["message"]["content"]
    assert content == "before \ufffd \ufffd\U0001F600 after"  # a valid pair is kept whole
    content.encode("utf-8")


def test_block_fields_of_the_wrong_type_never_reach_str() -> None:
    deep = orjson.loads("[" * 1000 + "1" + "]" * 1000)  # as deep as the strict parser lets through
    blocks = [{"type": "text", "text": ["a"]}, {"type": "tool_use", "name": {"n": 1}, "input": deep},
              {"type": "tool_use", "name": "Big", "input": 10**40}, {"type": "image", "source": "nope"},
              {"type": "tool_result", "content": [{"type": 3}, {"type": "text", "text": 5}]},
              {"type": "tool_reference", "tool_name": ["x"]}, 17, None]
    text, kinds = tx.message_text(blocks)
    assert "[tool_use ?] [input too deeply nested to show]" in text and "[tool_use Big] " + str(10**40) in text
    assert "['a']" not in text and "{'n': 1}" not in text and "5" not in text  # nothing formatted with str()
    assert kinds == {"text", "tool_use", "image", "tool_result", "other"}


def test_stored_records_are_reparsed_through_the_same_boundary() -> None:
    rec = T.user("s", "hello")
    rec["gitBranch"] = ["x"]
    raw = json.dumps(rec)
    [piece] = tx.pieces_from_raws([raw.replace("hello", "hello \\ud800")], [3])
    assert "gitBranch" not in piece.record and piece.line == 3
    piece.record["message"]["content"].encode("utf-8")


def test_a_file_growing_faster_than_it_is_read_waits_for_the_next_call(tmp_path: Path) -> None:
    s = "e0000000-0000-4000-8000-000000000001"
    path = T.write(T.session_file(tmp_path, s), [T.user(s, f"line {i}") for i in range(200)])
    size = path.stat().st_size
    with open_cache(tmp_path / "cache.db") as cache:
        ing = Ingestor(cache, IDENT, [tmp_path])
        tf = TranscriptFile(path, "main", s, None, None, "-home-dev-proj")
        offsets = []
        for sl in ing.produce(tf, IngestStats(), ing.live, max_bytes=4096):
            if sl.fstate is not None:
                offsets.append(sl.fstate["offset"])
                cache.apply(sl.events, "local", files=[sl.fstate])
                if len(offsets) <= 40:  # faster than 4 KB a read, for a while
                    T.write(path, [T.user(s, "written while we read") for _ in range(20)], mode="ab")
    assert len(offsets) > 1 and offsets[-1] >= size
    assert offsets[-1] < path.stat().st_size  # the rest is read on the next call, not in this one


def test_a_stop_request_leaves_a_long_file_between_two_slices(tmp_path: Path) -> None:
    import threading

    s = "e0000000-0000-4000-8000-000000000002"
    path = T.write(T.session_file(tmp_path, s), [T.user(s, f"line {i}") for i in range(200)])
    with open_cache(tmp_path / "cache.db") as cache:
        ing = Ingestor(cache, IDENT, [tmp_path])
        ing.stop = threading.Event()
        tf = TranscriptFile(path, "main", s, None, None, "-home-dev-proj")
        offsets = []
        for sl in ing.produce(tf, IngestStats(), ing.live, max_bytes=4096):
            if sl.fstate is not None:
                offsets.append(sl.fstate["offset"])
                cache.apply(sl.events, "local", files=[sl.fstate])
                ing.stop.set()
        assert len(offsets) == 1 and 0 < offsets[0] < path.stat().st_size
        ing.stop.clear()
        ing.ingest_file(tf)  # the next start goes on from the committed offset
        assert cache.file_state(str(path))["offset"] == path.stat().st_size
        assert cache.counts()["messages"] == 200
