"""`sync.target = "fdb"` end to end: two whole agents (supervisors with their watcher, ingest, push and watch-based
pull threads) on the FoundationDB emulation converge like they do on the embedded log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxsync.agent.config import load_config
from cxsync.agent.supervisor import Supervisor
from tests import transcripts as T
from tests.helpers import wait_until


@pytest.fixture
def emulated_cluster(tmp_path: Path):
    if os.environ.get("CXSYNC_FDB_CLUSTER_FILE"):
        pytest.skip("a real cluster is configured: the emulation cannot share the process with libfdb_c")
    from tests.fdbemu import install, reset_all

    install(int(os.environ.get("CXSYNC_FDB_API_VERSION", "730")))
    reset_all()
    yield tmp_path / "fdb.cluster"
    reset_all()


def _agent(tmp: Path, name: str, cluster: Path) -> tuple[Supervisor, Path]:
    home, claude = tmp / f"cx-{name}", tmp / f"claude-{name}"
    (claude / "projects").mkdir(parents=True)
    home.mkdir()
    (home / "config.toml").write_text(
        f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "{name}"\n'
        f'[transcripts]\nroots = ["{claude}"]\n[sync]\ntarget = "fdb:{cluster}"\n')
    cfg = load_config(env={**os.environ, "CXSYNC_HOME": str(home)})
    return Supervisor(cfg), claude


def test_two_agents_converge_on_the_fdb_emulation(tmp_path: Path, emulated_cluster: Path, no_thread_leak) -> None:
    (a, claude_a), (b, claude_b) = _agent(tmp_path, "A", emulated_cluster), _agent(tmp_path, "B", emulated_cluster)
    a.start()
    b.start()
    try:
        sa = "aaaa0000-0000-4000-8000-00000000000a"
        T.write(T.session_file(claude_a, sa), [T.user(sa, "written on machine A about zeppelins")])
        wait_until(lambda: b.cache.search("zeppelins"), 10, what="A's message reached B through FDB")
        sb = "bbbb0000-0000-4000-8000-00000000000b"
        T.write(T.session_file(claude_b, sb), [T.user(sb, "written on machine B about dirigibles"),
                                               *T.assistant_lines(sb, [T.text("dirigibles float")])])
        wait_until(lambda: len(a.cache.search("dirigibles")) == 2, 10, what="B's messages reached A")
        keys = lambda s: sorted(r[0] for r in s.cache.conn.execute("SELECT key FROM messages"))  # noqa: E731
        wait_until(lambda: keys(a) == keys(b) and len(keys(a)) == 3, 10)
        assert a.snapshot()["state"] in ("idle", "syncing")
    finally:
        assert a.stop(10) == [] and b.stop(10) == []
