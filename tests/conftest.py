from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

REAL_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "claude-home"


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own config, transcripts, keyring or display."""
    for var in list(os.environ):
        if var.startswith("CXSYNC_") and var not in ("CXSYNC_FDB_CLUSTER_FILE", "CXSYNC_FDB_API_VERSION"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("CXSYNC_HOME", str(tmp_path / "cxhome"))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))


@pytest.fixture
def cxhome(tmp_path: Path) -> Path:
    return tmp_path / "cxhome"


@pytest.fixture
def claude_home(tmp_path: Path) -> Path:
    p = tmp_path / "claude"
    (p / "projects").mkdir(parents=True)
    return p


@pytest.fixture
def real_fixtures() -> Path:
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real transcripts not present at {REAL_FIXTURES} (they live in the workplace's shared/)")
    return REAL_FIXTURES


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fails a test that leaves non-daemon or named worker threads running."""
    before = set(threading.enumerate())
    yield
    deadline = 5.0
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        # The FoundationDB binding's network thread lives as long as the process, by design.
        leaked = [t for t in threading.enumerate()
                  if t not in before and t.is_alive() and t.name != "fdb-network-thread"]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {[t.name for t in leaked]}")
