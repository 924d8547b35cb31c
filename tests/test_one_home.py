"""Each rule has one home: the config and the log adapters read a sync target, a name and an identity alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxsync.agent.config import load_config
from cxsync.sync import events as ev
from cxsync.sync.errors import ConfigError, InvalidValue
from cxsync.sync.names import validate_name
from cxsync.sync.targets import Target, open_log, parse_target


def _config(cxhome: Path, sync: str) -> object:
    cxhome.mkdir(parents=True, exist_ok=True)
    (cxhome / "config.toml").write_text(f'[identity]\ntenant="acme"\nuser="bob"\nmachine="m1"\n[sync]\n{sync}\n')
    return load_config(env={**os.environ, "CXSYNC_HOME": str(cxhome)})


@pytest.mark.parametrize("target", ["sqlite:   ", "sqlite:", "fdbx", "http://log"])
def test_a_target_the_log_cannot_open_is_refused_by_the_config_too(cxhome: Path, target: str) -> None:
    with pytest.raises(InvalidValue):
        open_log(target, "acme")
    with pytest.raises(ConfigError):
        _config(cxhome, f'target = "{target}"')


def test_the_config_and_the_log_read_a_target_the_same_way(cxhome: Path, tmp_path: Path) -> None:
    assert parse_target(" SQLite: ~/log.db ") == Target("sqlite", "~/log.db")
    assert parse_target("fdb") == Target("fdb")
    assert parse_target("FDB:/etc/fdb.cluster") == Target("fdb", "/etc/fdb.cluster")
    cfg = _config(cxhome, 'target = "FDB:/etc/fdb.cluster"')
    assert cfg.sync.cluster_file == "/etc/fdb.cluster"  # type: ignore[attr-defined]
    log = open_log(f"SQLITE:{tmp_path / 'log.db'}", "acme")
    log.close()
    assert _config(cxhome, f'target = "SQLITE:{tmp_path / "log.db"}"').sync.enabled  # type: ignore[attr-defined]


def test_the_configured_identity_is_the_events_identity(cxhome: Path) -> None:
    ident = _config(cxhome, 'target = "none"').identity  # type: ignore[attr-defined]
    assert isinstance(ident, ev.Identity)
    e = ev.session_ended(ident, "s", 1, "2026-01-01T00:00:00Z")
    assert (e.tenant, e.user, e.machine) == ("acme", "bob", "m1")
    assert validate_name("machine", ident.machine) == "m1"
