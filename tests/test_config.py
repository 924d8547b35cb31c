from __future__ import annotations

from pathlib import Path

import pytest

from cxsync.agent.config import load_config
from cxsync.sync.errors import ConfigError


def _write(cxhome: Path, text: str) -> None:
    cxhome.mkdir(parents=True, exist_ok=True)
    (cxhome / "config.toml").write_text(text)


def test_identity_is_generated_once_and_kept(cxhome: Path) -> None:
    a = load_config()
    b = load_config()
    assert a.identity == b.identity
    assert (cxhome / "config.toml").exists()


def test_identity_missing_from_users_file_is_kept_beside_the_state(cxhome: Path) -> None:
    _write(cxhome, '[identity]\ntenant = "acme"\n')
    a, b = load_config(), load_config()
    assert a.identity.tenant == "acme" and a.identity == b.identity
    assert "machine" not in (cxhome / "config.toml").read_text()


def test_precedence_flag_over_env_over_file(cxhome: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(cxhome, '[identity]\ntenant="t"\nuser="u"\nmachine="m"\n[sync]\ntarget="sqlite:/from/file"\n')
    assert load_config().sync.target == "sqlite:/from/file"
    monkeypatch.setenv("CXSYNC_SYNC_TARGET", "sqlite:/from/env")
    assert load_config().sync.target == "sqlite:/from/env"
    assert load_config({"sync.target": "sqlite:/from/flag"}).sync.target == "sqlite:/from/flag"


def test_roots_from_env_and_file(cxhome: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(cxhome, '[identity]\ntenant="t"\nuser="u"\nmachine="m"\n[transcripts]\nroots=["/a", "/b"]\n')
    assert [str(r) for r in load_config().roots] == ["/a", "/b"]
    monkeypatch.setenv("CXSYNC_ROOTS", "/c,/d")
    assert [str(r) for r in load_config().roots] == ["/c", "/d"]


@pytest.mark.parametrize("text,key", [
    ('[identity]\ntenant="bad/name"\nuser="u"\nmachine="m"\n', "identity.tenant"),
    ('[identity]\ntenant="t"\nuser="u"\nmachine="m"\n[sync]\nsubscribe=["nope"]\n', "sync.subscribe"),
    ('[identity]\ntenant="t"\nuser="u"\nmachine="m"\n[sync]\napi_version=600\n', "sync.api_version"),
    ('[identity]\ntenant="t"\nuser="u"\nmachine="m"\n[transcripts]\nroots=3\n', "transcripts.roots"),
    ('[identity]\ntenant="t"\nuser="u"\nmachine="m"\n[sync]\nbatch_events=0\n', "sync.batch_events"),
])
def test_bad_values_name_the_key(cxhome: Path, text: str, key: str) -> None:
    _write(cxhome, text)
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert key in exc.value.title


def test_claude_config_dir_with_several_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cxsync.agent.discovery import default_roots

    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{tmp_path}/one, {tmp_path}/two")
    assert default_roots() == [tmp_path / "one", tmp_path / "two"]
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    (tmp_path / "h" / ".config" / "claude").mkdir(parents=True)
    assert default_roots(home=tmp_path / "h") == [tmp_path / "h" / ".claude", tmp_path / "h" / ".config" / "claude"]
