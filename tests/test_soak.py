"""The soak test of issue 8: two real agents (``cxsync run`` processes) through the embedded log while one is
killed repeatedly, the disk fills and frees, the log is made read-only and back, then deleted — and in the end
both caches are identical, with nothing lost and nothing doubled.

The faults are real for SQLite: the agents' homes (caches, state) live on a small tmpfs that is filled with a
file until the kernel says ENOSPC (SQLITE_FULL), and the log lives on a second tmpfs that is remounted
read-only (SQLITE_READONLY / CANTOPEN) and back.  Mounting needs root (CAP_SYS_ADMIN): elsewhere it is skipped.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from cxsync.cache.fts import register

from tests import transcripts as T
from tests.helpers import wait_until


def _mount(target: Path, size: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)], check=True,
                   capture_output=True)


def _remount(target: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(target)], check=True, capture_output=True)


@pytest.fixture
def mounts(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("the disk-full and read-only faults need tmpfs mounts (root)")
    disk, share = tmp_path / "disk", tmp_path / "share"
    try:
        _mount(disk, "48m")
        _mount(share, "32m")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield disk, share
    import shutil

    for logs in disk.glob("cx-*/logs"):  # kept for a post-mortem: the tmpfs goes with the unmount
        shutil.copytree(logs, tmp_path / f"logs-{logs.parent.name}", dirs_exist_ok=True)
    for m in (disk, share):
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


class Agent:
    def __init__(self, tmp: Path, disk: Path, log: Path, name: str) -> None:
        self.name = name
        self.home = disk / f"cx-{name}"
        self.home.mkdir()
        self.claude = tmp / f"claude-{name}"
        (self.claude / "projects").mkdir(parents=True)
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "{name}"\n'
            f'[transcripts]\nroots = ["{self.claude}"]\n[sync]\ntarget = "sqlite:{log}"\n')
        self.env = {**os.environ, "CXSYNC_HOME": str(self.home)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.session = f"50a50a50-0000-4000-8000-00000000000{'1' if name == 'A' else '2'}"
        self.written: list[str] = []

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.status()["state"] != "not-running", 30, interval=0.1, what=f"{self.name} started")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([sys.executable, "-m", "cxsync.agent", "stop"], env=self.env, capture_output=True,
                           timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def status(self) -> dict:
        r = subprocess.run([sys.executable, "-m", "cxsync.agent", "status", "--json"], env=self.env,
                           capture_output=True, text=True, timeout=60)
        return json.loads(r.stdout) if r.stdout.strip() else {"state": "unknown"}

    def write(self, n: int, tag: str) -> None:
        lines = [f"{self.name} {tag} line {i} soakword" for i in range(n)]
        T.write(T.session_file(self.claude, self.session), [T.user(self.session, t) for t in lines], mode="ab")
        self.written += lines

    def rows(self, sql: str) -> list[tuple]:
        db = self.home / "data" / "cache.db"
        if not db.exists():
            return []
        c = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        register(c)  # cx_text(event_id): a message's text lives in its stored event
        try:
            return [tuple(r) for r in c.execute(sql)]
        except apsw.Error:
            return []
        finally:
            c.close()

    def contents(self) -> set[str]:
        return {r[0] for r in self.rows("SELECT cx_text(event_id) FROM messages")}


def _converged(agents: list[Agent]) -> bool:
    want = {t for a in agents for t in a.written}
    return all(want <= a.contents() for a in agents)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_two_agents_survive_kills_full_disk_read_only_and_deleted_log(tmp_path: Path, mounts) -> None:
    disk, share = mounts
    log = share / "log.db"
    a, b = Agent(tmp_path, disk, log, "A"), Agent(tmp_path, disk, log, "B")
    rng = random.Random(8)
    try:
        a.start()
        b.start()
        a.write(5, "start")
        b.write(5, "start")
        wait_until(lambda: _converged([a, b]), 60, interval=0.2, what="first round converged")

        # A is killed at random moments while both machines write.
        for k in range(4):
            a.write(rng.randint(3, 12), f"kill{k}")
            b.write(3, f"kill{k}")
            wait_until(lambda: len(a.contents()) > 0, 5)
            a.kill()
            a.start()
        wait_until(lambda: _converged([a, b]), 60, interval=0.2, what="converged after the kills")

        # The disk of both homes fills: capture fails with SQLITE_FULL, status says so, both recover alone.
        filler = _fill(disk)
        a.write(4, "full")
        b.write(4, "full")
        s = wait_until(lambda: (lambda st: st if st["state"] == "error" else None)(a.status()), 30, interval=0.2,
                       what="A reports the full disk")
        assert s["last_error"]["kind"] == "disk-full"
        filler.unlink()
        wait_until(lambda: _converged([a, b]), 60, interval=0.2, what="converged after the disk had space again")
        wait_until(lambda: a.status()["last_error"] is None, 30, interval=0.2, what="A's error cleared")

        # The log becomes read-only (its share remounted ro): the agents restart meanwhile and open it read-only;
        # capture goes on; when it is writable again their connections are reopened and everything is pushed.
        a.kill()
        b.kill()
        _remount(share, "ro")
        a.start()
        b.start()
        a.write(4, "readonly")
        b.write(4, "readonly")
        wait_until(lambda: any(t.startswith("A readonly") for t in a.contents()), 30, interval=0.2,
                   what="A captured while the log was read-only")
        _remount(share, "rw")
        wait_until(lambda: _converged([a, b]), 60, interval=0.2, what="converged after the log was writable")

        # The log is deleted under the running agents: they notice, and republish what the new log lacks.
        for p in share.iterdir():
            p.unlink()
        a.write(3, "deleted")
        b.write(3, "deleted")
        wait_until(lambda: _converged([a, b]), 60, interval=0.2, what="converged through the new log")
        wait_until(lambda: a.status().get("log_replaced") and b.status().get("log_replaced"), 30, interval=0.2,
                   what="both agents say the log was replaced")
        wait_until(lambda: not a.rows("SELECT 1 FROM outbox WHERE state='pending' LIMIT 1")
                   and not b.rows("SELECT 1 FROM outbox WHERE state='pending' LIMIT 1"), 60, interval=0.2,
                   what="both outboxes drained into the new log")
    finally:
        a.stop()
        b.stop()
        for x in (a, b):
            if x.proc is not None and x.proc.poll() is None:
                x.kill()

    q = "SELECT key, hash, cx_text(event_id), session_id FROM messages ORDER BY key"
    assert a.rows(q) == b.rows(q) and len(a.rows(q)) == len(a.written) + len(b.written)
    assert a.rows("SELECT count(*) - count(DISTINCT key) FROM messages") == [(0,)]
    assert {r[0] for r in a.rows("SELECT cx_text(event_id) FROM messages")} == set(a.written) | set(b.written)
    assert sorted(a.rows("SELECT event_id FROM events")) == sorted(b.rows("SELECT event_id FROM events"))
    c = apsw.Connection(str(log), flags=apsw.SQLITE_OPEN_READONLY)
    dups = c.execute("SELECT count(*) - count(DISTINCT stream || event_id) FROM events").fetchone()[0]
    c.close()
    assert dups == 0
