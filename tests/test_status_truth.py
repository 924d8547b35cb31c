"""`status` tells the truth: the running agent's own target, and counts that agree with `import`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import transcripts as T
from tests.test_agent import AgentProc


def test_status_shows_the_running_agents_target_not_the_calling_shells(tmp_path: Path, claude_home: Path) -> None:
    T.write(T.session_file(claude_home, "5ca1ab1e-0000-4000-8000-000000000001"),
            [T.user("5ca1ab1e-0000-4000-8000-000000000001", "hello there")])
    a = AgentProc(tmp_path, claude_home).start()  # configured with target = "none"
    try:
        env = {**a.env, "CXSYNC_SYNC_TARGET": f"sqlite:{tmp_path / 'elsewhere.db'}"}
        r = subprocess.run([sys.executable, "-m", "cxsync.agent", "status", "--json"], env=env, text=True,
                           capture_output=True, timeout=60)
        assert json.loads(r.stdout)["target"] == "none", r.stdout
        text = subprocess.run([sys.executable, "-m", "cxsync.agent", "status"], env=env, text=True,
                              capture_output=True, timeout=60).stdout
        assert "outbox" not in text and "sync         off" in text
    finally:
        a.stop()


def test_import_and_status_count_sessions_alike(tmp_path: Path, real_fixtures: Path) -> None:
    env = {**os.environ, "CXSYNC_HOME": str(tmp_path / "cx")}
    cx = [sys.executable, "-m", "cxsync.agent"]
    got = json.loads(subprocess.run([*cx, "import", "--root", str(real_fixtures), "--json"], env=env, text=True,
                                    capture_output=True, timeout=300).stdout)
    status = json.loads(subprocess.run([*cx, "status", "--json"], env=env, text=True, capture_output=True,
                                       timeout=60).stdout)
    listed = json.loads(subprocess.run([*cx, "sessions", "--json", "--limit", "1000"], env=env, text=True,
                                       capture_output=True, timeout=60).stdout)
    assert got["sessions"] == status["sessions"] == len(listed)
    assert got["messages"] == status["messages"]
