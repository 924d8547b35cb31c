"""Writing a held transcript back to disk: never over a file, recorded as read, private, crash leftovers cleared."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxsync.agent.tailer import FileState, tail
from cxsync.agent.writeback import DestinationExists, write_captured
from cxsync.cache import open_cache

DATA = b'{"type":"user","n":1}\n{"type":"assistant","n":2}\n'


def test_written_file_is_recorded_as_read_to_its_end(tmp_path: Path) -> None:
    dest = tmp_path / "claude" / "projects" / "-p" / "s.jsonl"
    with open_cache(tmp_path / "c.db") as cache:
        write_captured(cache, dest, DATA, "main", "s")
        row = cache.file_state(str(dest))
    assert dest.read_bytes() == DATA
    assert row is not None and row["offset"] == len(DATA) and row["line_no"] == 2 and row["session_id"] == "s"
    state = FileState(str(dest), row["inode"], row["dev"], row["offset"], row["line_no"], row["head_len"],
                      row["head_hash"], row["size"], row["mtime"])
    again = tail(str(dest), state)  # what the agent does with the row: nothing new, no re-read from the start
    assert again.lines == [] and not again.reset
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    for d in (dest.parent, dest.parent.parent, dest.parent.parent.parent):
        assert oct(d.stat().st_mode & 0o777) == "0o700"


def test_an_existing_file_is_never_overwritten_and_its_row_kept(tmp_path: Path) -> None:
    dest = tmp_path / "s.jsonl"
    dest.write_bytes(b"theirs\n")
    with open_cache(tmp_path / "c.db") as cache:
        with pytest.raises(DestinationExists):
            write_captured(cache, dest, DATA, "main", "s")
        assert cache.file_state(str(dest)) is None
    assert dest.read_bytes() == b"theirs\n"
    assert not list(tmp_path.glob(".*cxsync-tmp"))


def test_a_crashed_writes_leftover_is_removed(tmp_path: Path) -> None:
    dest = tmp_path / "s.jsonl"
    stale = tmp_path / ".s.jsonl.deadbeef.cxsync-tmp"
    stale.write_bytes(b"half")
    with open_cache(tmp_path / "c.db") as cache:
        write_captured(cache, dest, DATA, "main", "s")
    assert not stale.exists() and dest.read_bytes() == DATA
