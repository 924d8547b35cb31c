from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxsync.agent.tailer import tail


def _write(p: Path, data: bytes, mode: str = "ab") -> None:
    with open(p, mode) as fh:
        fh.write(data)


def test_only_complete_lines_are_returned(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n{"b":2}\n{"c":', "wb")
    r = tail(str(p), None)
    assert [l.data for l in r.lines] == [b'{"a":1}', b'{"b":2}']
    assert r.state.offset == len(b'{"a":1}\n{"b":2}\n')


def test_torn_last_line_is_read_once_completed(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n{"b":', "wb")
    r1 = tail(str(p), None)
    assert [l.data for l in r1.lines] == [b'{"a":1}']
    r2 = tail(str(p), r1.state)
    assert r2.lines == []
    _write(p, b'2}\n')
    r3 = tail(str(p), r2.state)
    assert [(l.number, l.data) for l in r3.lines] == [(2, b'{"b":2}')]
    assert tail(str(p), r3.state).lines == []


def test_truncation_is_detected_and_file_reread(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n{"b":2}\n', "wb")
    r1 = tail(str(p), None)
    _write(p, b'{"x":1}\n', "wb")  # shorter than our offset
    r2 = tail(str(p), r1.state)
    assert r2.reset and r2.reason == "truncated"
    assert [l.data for l in r2.lines] == [b'{"x":1}']


def test_replacement_by_new_inode_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n', "wb")
    r1 = tail(str(p), None)
    q = tmp_path / "new.jsonl"
    _write(q, b'{"a":1}\n{"z":9}\n{"y":8}\n', "wb")
    os.replace(q, p)
    r2 = tail(str(p), r1.state)
    assert r2.reset and r2.reason == "replaced"
    assert len(r2.lines) == 3


def test_changed_head_of_file_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n', "wb")
    r1 = tail(str(p), None)
    with open(p, "r+b") as fh:  # rewritten in place, same inode, longer than before
        fh.write(b'{"b":2}\n{"c":3}\n')
    r2 = tail(str(p), r1.state)
    assert r2.reset and r2.reason == "rewritten"
    assert [l.data for l in r2.lines] == [b'{"b":2}', b'{"c":3}']


def test_deleted_file_raises_file_not_found(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n', "wb")
    r1 = tail(str(p), None)
    p.unlink()
    with pytest.raises(FileNotFoundError):
        tail(str(p), r1.state)


def test_u2028_inside_strings_does_not_split_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, '{"t":"a\u2028b\u2029c"}\n{"n":2}\n'.encode(), "wb")
    r = tail(str(p), None)
    assert len(r.lines) == 2


def test_megabyte_lines_are_read_whole_and_oversized_lines_skipped(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    big = b'{"x":"' + b"a" * (5 << 20) + b'"}\n'
    _write(p, big + b'{"after":1}\n', "wb")
    r = tail(str(p), None)
    assert [len(l.data) for l in r.lines] == [len(big) - 1, len(b'{"after":1}')]
    r2 = tail(str(p), None, max_line=1 << 20)
    assert r2.oversized == 1
    assert [l.data for l in r2.lines] == [b'{"after":1}']
    assert r2.lines[0].number == 2


def test_max_bytes_budget_splits_reading_into_batches(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b"".join(b'{"i":%d}\n' % i for i in range(10_000)), "wb")
    seen, state, calls = [], None, 0
    while True:
        r = tail(str(p), state, max_bytes=4096)
        seen += r.lines
        state = r.state
        calls += 1
        if not r.more:
            break
    assert calls > 5
    assert [l.number for l in seen] == list(range(1, 10_001))


def test_blank_lines_count_but_are_not_returned(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    _write(p, b'{"a":1}\n\n{"b":2}\n', "wb")
    r = tail(str(p), None)
    assert [l.number for l in r.lines] == [1, 3]


# ---- hostile files: only regular files are read, and never past the size seen at open ---------------------


def test_fifo_named_like_a_transcript_is_refused_without_blocking(tmp_path: Path) -> None:
    import threading

    from cxsync.agent.tailer import NotRegularFile

    fifo = tmp_path / "x.jsonl"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []
    t = threading.Thread(target=lambda: outcome.append(_catch(lambda: tail(str(fifo), None))), daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # opening a FIFO blocks until a writer comes: be that writer, so the thread can end
        with open(fifo, "wb"):
            pass
        t.join(5)
        pytest.fail("tail blocked on a FIFO")
    assert isinstance(outcome[0], NotRegularFile)


def _catch(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_symlink_to_a_device_is_refused(tmp_path: Path, device: str) -> None:
    from cxsync.agent.tailer import NotRegularFile

    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    link = tmp_path / "x.jsonl"
    os.symlink(device, link)
    with pytest.raises(NotRegularFile):
        tail(str(link), None)


def test_reads_stop_at_the_size_seen_when_the_file_was_opened(tmp_path: Path) -> None:
    # /proc files are regular files that say they are empty and yet read on: a file that grows while it is
    # read looks the same to the reader.  Nothing past the size of the open file is read.
    src = "/proc/self/status"
    if not os.path.exists(src):
        pytest.skip("needs /proc")
    link = tmp_path / "x.jsonl"
    os.symlink(src, link)
    r = tail(str(link), None)
    assert r.lines == [] and r.state.offset == 0 and not r.more
