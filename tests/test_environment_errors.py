"""Every environment problem has its own message and exit code, through the real CLI: never a traceback, never
"unexpected error … report it".

Disk full and a read-only home are real: a small tmpfs and a read-only bind mount in a private mount namespace
(``unshare -m``, available to root and in most CI containers; skipped elsewhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import transcripts as T

CX = [sys.executable, "-m", "cxsync.agent"]


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


needs_mounts = pytest.mark.skipif(not _can_unshare(), reason="needs unshare -m and mount (a private mount namespace)")


def cx(*args: str, home: Path, prefix: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI with CXSYNC_HOME=home; ``prefix`` is shell run first in a private mount namespace."""
    env = {**os.environ, "CXSYNC_HOME": str(home)}
    if not prefix:
        return subprocess.run([*CX, *args], env=env, capture_output=True, text=True, timeout=timeout)
    cmd = prefix + " && exec " + " ".join(f"'{a}'" for a in (*CX, *args))
    return subprocess.run(["unshare", "-m", "sh", "-c", cmd], env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_clean_failure(r: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "unexpected error" not in r.stderr
    assert r.stderr.startswith("Error: "), r.stderr
    for p in phrases:
        assert p in r.stderr, (p, r.stderr)


def write_config(home: Path, sync: str = 'target = "none"', extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m1"\n[sync]\n{sync}\n{extra}', encoding="utf-8")


def many_sessions(claude: Path, n: int = 40) -> None:
    for i in range(n):
        T.write(T.session_file(claude, f"s{i}"), [T.user(f"s{i}", "words " * 2000 + str(j)) for j in range(20)])


@needs_mounts
def test_disk_full_during_import_says_so_and_exits_1(tmp_path: Path, claude_home: Path) -> None:
    home = tmp_path / "cxhome"
    home.mkdir()
    many_sessions(claude_home)  # ~19 MB of transcripts for a 512 KB disk
    r = cx("import", "--root", str(claude_home), home=home,
           prefix=f"mount -t tmpfs -o size=512k tmpfs '{home}'")
    assert_clean_failure(r, 1, "disk is full", "Hint: free some space")


@needs_mounts
def test_read_only_home_says_so_and_exits_1(tmp_path: Path, claude_home: Path) -> None:
    home = tmp_path / "cxhome"
    write_config(home)  # the config exists; the cache cannot be created beside it
    T.write(T.session_file(claude_home, "s1"), [T.user("s1", "hello")])
    r = cx("import", "--root", str(claude_home), home=home,
           prefix=f"mount --bind '{home}' '{home}' && mount -o remount,bind,ro '{home}'")
    assert_clean_failure(r, 1, "read-only file system", "Hint: make the folder writable")


def test_damaged_cache_points_at_import_rebuild_and_restore(tmp_path: Path, claude_home: Path) -> None:
    home = tmp_path / "cxhome"
    write_config(home)
    (home / "data").mkdir()
    (home / "data" / "cache.db").write_bytes(b"this is not a database, it is a hostile file\n" * 200)
    for args in (("query", "hello"), ("import", "--root", str(claude_home)), ("sessions",)):
        r = cx(*args, home=home)
        assert_clean_failure(r, 1, "is damaged", "cxsync import", "backup", "cxsync rebuild")


def test_empty_cache_file_says_empty_not_a_bad_query(tmp_path: Path) -> None:
    home = tmp_path / "cxhome"
    write_config(home)
    (home / "data").mkdir()
    (home / "data" / "cache.db").write_bytes(b"")
    r = cx("query", "hello", home=home)
    assert_clean_failure(r, 1, "is empty", "cxsync import")
    assert "full-text query" not in r.stderr


def test_config_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "cxhome"
    home.mkdir()
    (home / "config.toml").write_bytes(b'[identity]\ntenant = "caf\xe9"\n')
    assert_clean_failure(cx("status", home=home), 2, "not UTF-8", "config.toml")


def test_config_that_is_not_toml_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "cxhome"
    home.mkdir()
    (home / "config.toml").write_text("[sync\ntarget = none\n", encoding="utf-8")
    assert_clean_failure(cx("status", home=home), 2, "not valid TOML")


@pytest.mark.parametrize("target", ["sqlite:", "sqlite:   "])
def test_blank_sqlite_target_names_the_missing_file(tmp_path: Path, target: str) -> None:
    home = tmp_path / "cxhome"
    write_config(home, sync=f'target = "{target}"')
    assert_clean_failure(cx("config", home=home), 2, "sync.target", "names no file")


@pytest.mark.parametrize("value", ['"ture"', '"maybe"', "1", "[true]"])
def test_value_of_the_wrong_type_is_rejected_at_load(tmp_path: Path, value: str) -> None:
    home = tmp_path / "cxhome"
    write_config(home, sync=f'target = "none"\nneeds_credential = {value}')
    assert_clean_failure(cx("config", home=home), 2, "sync.needs_credential must be true or false")


@pytest.mark.parametrize("line, key", [("batch_events = true", "sync.batch_events"),
                                       ("cluster_file = 5", "sync.cluster_file"),
                                       ("tls_cert = {a = 1}", "sync.tls_cert"),
                                       ("api_version = true", "sync.api_version")])
def test_other_values_of_the_wrong_type_name_their_key(tmp_path: Path, line: str, key: str) -> None:
    home = tmp_path / "cxhome"
    write_config(home, sync=f'target = "none"\n{line}')
    assert_clean_failure(cx("config", home=home), 2, key)


def test_unknown_config_keys_are_warned_about_with_the_nearest_valid_key(tmp_path: Path) -> None:
    home = tmp_path / "cxhome"
    write_config(home, sync='targt = "none"\nneeds_credentials = true', extra='[transcript]\nroots = []\n')
    r = cx("config", "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "unknown config key sync.targt" in r.stderr and "did you mean sync.target?" in r.stderr
    assert "did you mean sync.needs_credential?" in r.stderr
    assert "unknown config section [transcript]" in r.stderr and "did you mean [transcripts]?" in r.stderr


def test_cache_damaged_inside_says_so_for_reads_and_writes(tmp_path: Path, claude_home: Path) -> None:
    home = tmp_path / "cxhome"
    write_config(home)
    for i in range(30):
        T.write(T.session_file(claude_home, f"s{i}"), [T.user(f"s{i}", "hello world " * 40 + str(j))
                                                       for j in range(20)])
    assert cx("import", "--root", str(claude_home), home=home).returncode == 0
    db = home / "data" / "cache.db"
    size = db.stat().st_size
    with open(db, "r+b") as fh:  # a valid header, damaged pages after it
        for off in range(8192, size, 16384):
            fh.seek(off)
            fh.write(bytes(range(256)) * 8)
    for args in (("query", "hello"), ("status",), ("import", "--root", str(claude_home))):
        assert_clean_failure(cx(*args, home=home), 1, "is damaged", "backup", "cxsync rebuild")


def test_every_documented_section_loads_without_a_warning(tmp_path: Path) -> None:
    home = tmp_path / "cxhome"
    write_config(home, sync='target = "none"\nbatch_events = 100\nneeds_credential = false',
                 extra='[transcripts]\nroots = []\n[backup]\ndaily = true\nkeep = 3\n[redact]\npush = true\n'
                       '[paths]\n"/Users/ada/src" = "/home/ada/src"\n')
    r = cx("config", "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert "unknown config" not in r.stderr, r.stderr
