from __future__ import annotations

import zlib

import orjson
import pytest

from cxsync.sync import events as ev

ID = ev.Identity("acme", "bob", "m1")


def _msg(**kw):
    base = {"session": "s", "key": "u:1", "hash": "h", "content": "hi", "records": ['{"a":1}', '{"b":"\\u2028"}']}
    return {**base, **kw}


def test_event_ids_are_deterministic_and_cover_identity_and_content() -> None:
    a, b = ev.message_indexed(ID, _msg()), ev.message_indexed(ID, _msg())
    assert a.event_id == b.event_id
    assert ev.message_indexed(ID, _msg(hash="other")).event_id != a.event_id
    assert ev.message_indexed(ID, _msg(parts=2)).event_id != a.event_id
    assert ev.message_indexed(ev.Identity("other", "bob", "m1"), _msg()).event_id != a.event_id
    assert ev.session_ended(ID, "s", 3, "t").event_id != ev.session_ended(ID, "s", 4, "t").event_id


@pytest.mark.parametrize("event", [
    ev.message_indexed(ID, _msg()),
    ev.message_indexed(ID, _msg(records=[])),
    ev.message_indexed(ID, _msg(records=["line with\nnewline"])),
    ev.session_started(ID, {"session": "s", "project": "/p"}),
    ev.session_ended(ID, "s", 3, "2026-01-01T00:00:00Z"),
    ev.records_captured(ID, "s", [{"key": "r:1", "type": "progress", "raw": '{"type":"progress"}'},
                                  {"key": "r:2", "type": "summary", "raw": '{"s":1}', "title": "t", "title_rank": 1}]),
    ev.records_captured(ID, "s", [{"key": "r:1", "type": "x", "raw": "with\nnewline"}]),
    ev.knowledge_extracted(ID, {"id": "k1", "type": "decision", "title": "use WAL"}, ["h1"]),
    ev.knowledge_shared(ID, "k1", "team"),
])
def test_codec_round_trips_every_event_type(event: ev.ContextEvent) -> None:
    blob = ev.encode(event)
    assert blob[0] == ev.CODEC_VERSION
    assert ev.decode(blob) == event


def test_version_1_zlib_payloads_are_still_read() -> None:
    e = ev.session_started(ID, {"session": "s"})
    body = {"t": e.type, "i": e.event_id, "n": e.tenant, "u": e.user, "m": e.machine, "s": e.timestamp, "d": e.data}
    assert ev.decode(bytes([1]) + zlib.compress(orjson.dumps(body))) == e


def test_unknown_version_and_corrupt_payloads_are_clear_errors() -> None:
    with pytest.raises(ev.CodecError, match="version 9"):
        ev.decode(b"\x09abc")
    with pytest.raises(ev.CodecError, match="corrupt"):
        ev.decode(bytes([ev.CODEC_VERSION]) + b"not zstd")
    with pytest.raises(ev.CodecError, match="empty"):
        ev.decode(b"")


def test_verbatim_records_are_not_escaped_twice() -> None:
    raw = ['{"type":"user","message":{"content":"' + "x" * 1000 + '"}}'] * 3
    e = ev.message_indexed(ID, _msg(records=raw))
    import zstandard

    plain = zstandard.ZstdDecompressor().decompress(ev.encode(e)[1:])
    assert plain.count(b'\\"') == 0  # the raw lines follow the envelope as they are


def test_routing_by_scope_and_project() -> None:
    msg = ev.message_indexed(ID, _msg(project="/home/bob/web app"))
    assert ev.route(msg, ["u/bob"]) == ["u/bob"]
    assert ev.route(msg, ["u/bob", "p/web-app"]) == ["u/bob", "p/web-app"]
    assert ev.route(ev.knowledge_shared(ID, "k", "team"), ["u/bob"]) == ["team"]
    assert ev.route(ev.knowledge_shared(ID, "k", "project", "web"), ["u/bob"]) == ["p/web"]
    with pytest.raises(ValueError):
        ev.knowledge_shared(ID, "k", "galaxy")


def test_a_decoded_event_is_encoded_as_the_bytes_it_came_from() -> None:
    e = ev.message_indexed(ID, _msg())
    blob = ev.encode(e)
    back = ev.decode(blob)
    assert back == e and ev.encode(back) is back.wire and back.wire == blob  # no second compression
    v1 = bytes([1]) + zlib.compress(orjson.dumps({"t": e.type, "i": e.event_id, "n": "acme", "u": "bob",
                                                  "m": "m1", "s": e.timestamp, "d": dict(e.data)}))
    assert ev.encode(ev.decode(v1)) == v1  # an old version's event travels on unchanged, too


def test_an_unknown_event_type_is_carried_not_refused() -> None:
    e = ev.ContextEvent("FromTheFuture", "f1", "acme", "bob", "m1", "2030-01-01T00:00:00Z", {"x": 1})
    back = ev.decode(ev.encode(e))
    assert back.type == "FromTheFuture" and not back.known and ev.message_indexed(ID, _msg()).known


def test_a_copy_with_other_data_is_encoded_afresh() -> None:
    import dataclasses

    back = ev.decode(ev.encode(ev.message_indexed(ID, _msg())))
    changed = dataclasses.replace(back, data={**back.data, "content": "redacted"})
    assert changed.wire is None and ev.decode(ev.encode(changed)).data["content"] == "redacted"
