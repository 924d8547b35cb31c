"""A killed `cxsync import` leaves nothing behind: its reader process and multiprocessing's resource tracker end
with it, whether it was SIGKILLed or SIGTERMed, and the next import finishes the job without losing or doubling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import transcripts as T
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status waits for a parent


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_import_leaves_no_process_behind(tmp_path: Path, claude_home: Path, sig: int) -> None:
    expected = T.history(claude_home, "c1a55000", 30, 120)
    env = {**os.environ, "CXSYNC_HOME": str(tmp_path / "cxhome"), "CXSYNC_IMPORT_PROCESSES": "3"}
    cmd = [sys.executable, "-m", "cxsync.agent", "import", "--root", str(claude_home), "--json"]
    survivors: set[int] = set()
    for _ in range(3):
        imp = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The reader process and the resource tracker: both started, the import under way.
        kids = wait_until(lambda: k if len(k := _children(imp.pid)) >= 2 else None, 30,
                          interval=0.005, what="the import's helper processes started")
        imp.send_signal(sig)
        imp.wait(30)
        survivors |= kids
    wait_until(lambda: not [p for p in survivors if _alive(p)], 30,
               what=f"helpers of killed imports ended: {[p for p in survivors if _alive(p)]}")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import apsw

    db = apsw.Connection(str(tmp_path / "cxhome" / "data" / "cache.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert db.execute("SELECT count(*), count(DISTINCT key) FROM messages").fetchone() == (expected, expected)
    finally:
        db.close()
