"""`cxsync backup` / `backup list` / `restore-backup`: online snapshots that restore to what was captured."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
import apsw
import pytest

from cxsync.agent.lock import InstanceLock
from cxsync.cache import backup as bk
from tests import transcripts as T
from tests.helpers import wait_until
from tests.test_agent import AgentProc

SID = "bacc0000-0000-4000-8000-000000000001"


def _integrity(path: Path) -> str:
    c = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return str(c.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        c.close()


def _tokens(agent: AgentProc) -> set[str]:
    c = agent.db()
    try:
        return {r[0].split()[1] for r in c.execute("SELECT cx_text(event_id) FROM messages WHERE cx_text(event_id) LIKE 'line %'")}
    finally:
        c.close()


def test_backup_taken_while_the_agent_writes_restores_to_the_snapshot(tmp_path: Path, claude_home: Path) -> None:
    f = T.session_file(claude_home, SID)
    T.write(f, [T.user(SID, "line tok00000 first")])
    agent = AgentProc(tmp_path, claude_home).start()
    stop = threading.Event()
    written = [1]

    def writer() -> None:  # Claude Code appending as fast as it can while the backup runs
        while not stop.is_set() and written[0] < 20_000:
            T.write(f, [T.user(SID, f"line tok{written[0]:05d} appended")], mode="ab")
            written[0] += 1
            stop.wait(0.002)

    t = threading.Thread(target=writer, name="writer")
    t.start()
    try:
        wait_until(lambda: agent.count("SELECT count(*) FROM messages") > 200, 60, what="capture under way")
        r = agent.cx("backup", "--json")
        assert r.returncode == 0, r.stderr
        taken = json.loads(r.stdout)
        wait_until(lambda: agent.count("SELECT count(*) FROM messages") > taken["messages"] + 100, 60,
                   what="more captured after the snapshot")
    finally:
        stop.set()
        t.join()
    assert agent.cx("stop").returncode == 0
    agent.stop()
    after = _tokens(agent)
    r = agent.cx("restore-backup", taken["path"], "--json")
    assert r.returncode == 0, r.stderr
    restored = json.loads(r.stdout)
    db = agent.home / "data" / "cache.db"
    assert _integrity(db) == "ok"
    snap = _tokens(agent)
    # exactly the snapshot: as many messages as the manifest says, and a prefix of what was written (one file,
    # captured in order): nothing torn, nothing from after the snapshot
    assert len(snap) == taken["messages"] == agent.count("SELECT count(*) FROM messages")
    assert snap == {f"tok{i:05d}" for i in range(len(snap))}
    assert len(after) > len(snap)
    last_in, first_out = f"tok{len(snap) - 1:05d}", f"tok{len(snap):05d}"
    assert len(json.loads(agent.cx("query", last_in, "--json").stdout)) == 1
    assert json.loads(agent.cx("query", first_out, "--json").stdout) == []
    # the replaced cache is kept aside, whole
    aside = Path(restored["replaced_kept_at"])
    assert aside.exists() and _integrity(aside) == "ok"


def _db_with(path: Path, n: int) -> Path:
    c = apsw.Connection(str(path))
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE messages(id INTEGER PRIMARY KEY, content TEXT)")
    with c:
        c.executemany("INSERT INTO messages(content) VALUES (?)", [(f"row {i}",) for i in range(n)])
    c.close()
    return path


def test_backups_are_private_listed_newest_first_and_pruned(tmp_path: Path) -> None:
    src = _db_with(tmp_path / "cache.db", 10)
    dest = tmp_path / "backups"
    made = [bk.snapshot(src, dest, keep=3) for _ in range(5)]
    listed = bk.list_backups(dest)
    assert [b.path for b in listed] == [b.path for b in reversed(made[-3:])]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [b.path.name for b in listed] + [b.path.name[:-len(bk.SUFFIX)] + bk.MANIFEST for b in listed])
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    for p in dest.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert listed[0].manifest["messages"] == 10 and listed[0].manifest["integrity"] == "ok"
    assert listed[0].size < src.stat().st_size  # compressed


def test_an_existing_backup_folder_keeps_its_mode(tmp_path: Path) -> None:
    dest = tmp_path / "shared"
    dest.mkdir(mode=0o755)
    os.chmod(dest, 0o755)
    bk.snapshot(_db_with(tmp_path / "cache.db", 1), dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-manifest-garbage"])
def test_a_damaged_backup_is_refused_and_nothing_is_replaced(tmp_path: Path, damage: str) -> None:
    src = _db_with(tmp_path / "cache.db", 1000)
    b = bk.snapshot(src, tmp_path / "b")
    data = bytearray(b.path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        b.path.with_name(b.path.name[:-len(bk.SUFFIX)] + bk.MANIFEST).unlink()
        data = bytearray(b"not zstd at all" * 10)
    b.path.write_bytes(bytes(data))
    target = _db_with(tmp_path / "current.db", 3)
    before = target.read_bytes()
    with pytest.raises(bk.BackupError) as err:
        bk.restore(b.path, target)
    assert "nothing was replaced" in err.value.hint
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".restore-")) == []


def test_a_backup_of_a_corrupt_database_is_refused(tmp_path: Path) -> None:
    src = _db_with(tmp_path / "cache.db", 2000)
    c = apsw.Connection(str(src))
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    raw = bytearray(src.read_bytes())
    page = 4096
    for i in range(page * 2 + 16, page * 3):  # scribble over a b-tree page of the table
        raw[i] = 0x41
    src.write_bytes(bytes(raw))
    with pytest.raises(bk.BackupError, match="integrity check|not a readable|cannot read"):
        bk.snapshot(src, tmp_path / "b")
    assert bk.list_backups(tmp_path / "b") == []


def test_restore_refuses_while_the_agent_runs(tmp_path: Path, claude_home: Path) -> None:
    a = AgentProc(tmp_path, claude_home)
    T.write(T.session_file(claude_home, SID), [T.user(SID, "line tok00000 hello")])
    assert a.cx("import").returncode == 0
    taken = json.loads(a.cx("backup", "--json").stdout)
    lock = InstanceLock(a.home / "run" / "agent.lock")
    assert lock.acquire()
    try:
        r = a.cx("restore-backup", taken["path"])
    finally:
        lock.release()
    assert r.returncode == 1 and "while the agent is running" in r.stderr
    assert a.cx("restore-backup", taken["path"]).returncode == 0
    listed = json.loads(a.cx("backup", "list", "--json").stdout)
    assert [x["path"] for x in listed] == [taken["path"]]


def test_the_embedded_log_is_backed_up_with_the_same_command(tmp_path: Path, claude_home: Path) -> None:
    log = tmp_path / "log.db"
    a = AgentProc(tmp_path, claude_home, sync=f"sqlite:{log}")
    T.write(T.session_file(claude_home, SID), [T.user(SID, "line tok00000 to the log")])
    assert a.cx("import").returncode == 0 and a.cx("sync", "--once").returncode == 0
    r = a.cx("backup", "--source", str(log), "--to", str(tmp_path / "logbackups"), "--json")
    assert r.returncode == 0, r.stderr
    taken = json.loads(r.stdout)
    log.unlink()
    for extra in ("-wal", "-shm"):
        Path(str(log) + extra).unlink(missing_ok=True)
    assert a.cx("restore-backup", taken["path"], "--target", str(log)).returncode == 0
    (tmp_path / "b").mkdir()
    other = AgentProc(tmp_path / "b", claude_home, sync=f"sqlite:{log}")
    r = other.cx("sync", "--once", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(other.cx("query", "tok00000", "--json").stdout)


def test_the_agent_takes_a_daily_backup_when_configured(tmp_path: Path, claude_home: Path) -> None:
    T.write(T.session_file(claude_home, SID), [T.user(SID, "line tok00000 daily")])
    dest = tmp_path / "daily"
    a = AgentProc(tmp_path, claude_home, extra=f'[backup]\ndaily = true\ndir = "{dest}"\nkeep = 2\n').start()
    try:
        wait_until(lambda: bk.list_backups(dest), 30, what="a first backup soon after start")
    finally:
        a.stop()
    assert bk.list_backups(dest)[0].manifest["messages"] >= 0


def test_daily_worker_backs_up_when_due_and_honours_keep(tmp_path: Path) -> None:
    src = _db_with(tmp_path / "cache.db", 5)
    dest = tmp_path / "b"
    stop = threading.Event()
    t = threading.Thread(target=bk.run_daily, args=(src, dest, 2, stop), kwargs={"every": 0.3, "check": 0.05},
                         name="backup")
    t.start()
    try:
        wait_until(lambda: len(bk.list_backups(dest)) == 2, 20, what="two backups, one per period")
        first = bk.list_backups(dest)[-1].path
        wait_until(lambda: not first.exists(), 20, what="the oldest pruned (keep = 2)")
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert len(bk.list_backups(dest)) == 2


@pytest.mark.parametrize("text, message", [
    ("[backup]\ndaily = \"yes\"\n", "backup.daily must be true or false"),
    ("[backup]\nkeep = 0\n", "backup.keep must be a positive integer"),
    ("[backup]\ndir = \"\"\n", "backup.dir must be a folder path"),
])
def test_bad_backup_settings_are_config_errors(tmp_path: Path, claude_home: Path, text: str, message: str) -> None:
    a = AgentProc(tmp_path, claude_home, extra=text)
    r = a.cx("backup")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_a_backup_whose_database_is_corrupt_is_refused_before_anything_is_replaced(tmp_path: Path) -> None:
    import zstandard

    raw = bytearray(_db_with(tmp_path / "src.db", 2000).read_bytes())
    for i in range(4096 * 2 + 16, 4096 * 3):
        raw[i] = 0x41
    fake = tmp_path / "cache-20260101T000000.000000Z.db.zst"  # well-formed zstd, no manifest: only SQLite can tell
    fake.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    target = _db_with(tmp_path / "current.db", 3)
    before = target.read_bytes()
    with pytest.raises(bk.BackupError, match="fails its integrity check|not a readable"):
        bk.restore(fake, target)
    assert target.read_bytes() == before
