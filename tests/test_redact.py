"""Secrets never leave the machine: every kind, wherever it appears in a transcript, is redacted before upload."""

from __future__ import annotations

import glob
import json
import sqlite3
from pathlib import Path

import orjson
import pytest

from cxsync.sync import events as ev
from cxsync.sync.redact import find_secrets, redact_event, redact_text
from tests import transcripts as T
from tests.conftest import REAL_FIXTURES
from tests.test_migrate import Home

SID = "5ec2e75e-0000-4000-8000-000000000001"

# One of every kind the issue names (fake, well-formed values).
SECRETS = {
    "aws-access-key": "AKIAQ3EXAMPLEZX7K2PD",
    "aws-secret-key": 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKY"',  # only known in context
    "github-token": "ghp_R2d2C3poBb8Ww0Kk1Ll2Mm3Nn4Oo5Pp6Qq7Rr",
    "gitlab-token": "glpat-Zq9xY8wV7uT6sR5qP4oN",
    "slack-token": "xoxb-918273645012-1928374655012-AbCdEfGhIjKlMnOpQrStUvWx",
    "stripe-key": "sk_live_51HcBqKLmNoPqRsTuVwXyZ012",
    "openai-key": "sk-proj-Q1w2E3r4T5y6U7i8O9p0AsDfGhJkLzXcVbNm",
    "anthropic-key": "sk-ant-api03-Zm9vYmFyYmF6cXV4cXV1eHh5enp5MTIzNDU2Nzg5MGFi",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGEiLCJpYXQiOjE3MDAwMDAwMDB9."
           "k3Xq9bZ7uYx2Lr0pQ8sVnT4wE6mJ1cH5gF3dA9zB0yC",
    "private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx7Kq2m9Ty4Rw\nQ8sVnT4wE6mJ1cH5gF3dA9zB0yC\n"
                   "-----END RSA PRIVATE KEY-----",
    "connection-password": "postgres://app:Tr0ub4dor-and-3@db.internal:5432/prod",
    "password-assignment": 'db_password = "CorrectHorse-Battery9"',
    "env-secret": "export SERVICE_SIGNING_SECRET=Q9f8e7d6c5b4a3Z2y1x0WvUtSrQpOn",
}
# The part of each that must never reach the log.
NEEDLES = {**SECRETS, "aws-secret-key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKY", "private-key": "MIIEpAIBAAKCAQEAx7Kq2m9Ty4Rw", "connection-password": "Tr0ub4dor-and-3",
           "password-assignment": "CorrectHorse-Battery9", "env-secret": "Q9f8e7d6c5b4a3Z2y1x0WvUtSrQpOn",
           "jwt": "k3Xq9bZ7uYx2Lr0pQ8sVnT4wE6mJ1cH5gF3dA9zB0yC"}


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_kind_is_found_and_typed(kind: str) -> None:
    text = f"here it is: {SECRETS[kind]} — keep it safe"
    out, found = redact_text(text)
    assert [f.kind for f in found] == [kind]
    assert NEEDLES[kind] not in out and f"[REDACTED:{kind}:" in out
    assert out.startswith("here it is: ") and out.endswith(" — keep it safe")


def _transcript(claude: Path) -> Path:
    lines = []
    for kind, secret in SECRETS.items():
        lines.append(T.user(SID, f"my {kind} is {secret} please use it"))  # typed in a prompt
        tid = f"toolu_{kind.replace('-', '')}"
        lines += T.assistant_lines(SID, [T.text(f"Writing the config:\n```python\nCONFIG = '''{secret}'''\n```"),
                                         T.tool_use("Write", {"file_path": "/app/.env", "content": secret}, tid)])
        lines.append(T.tool_result(SID, tid, f"$ cat /app/.env\n{secret}\n"))  # printed by a tool
    lines.append(T.user(SID, "ordinary words stay as they are: zebracrossing"))
    return T.write(T.session_file(claude, SID), lines)


def _log_texts(log: Path) -> list[str]:
    """Everything the log file holds: its raw bytes, and every event payload decompressed."""
    raw = b"".join(p.read_bytes() for p in log.parent.glob(log.name + "*"))
    con = sqlite3.connect(log)
    try:
        payloads = [bytes(p) for (p,) in con.execute("SELECT payload FROM events")]
    finally:
        con.close()
    texts = [raw.decode("latin-1")]
    for p in payloads:
        e = ev.decode(p)
        texts.append(orjson.dumps({"d": e.data}).decode())
        texts.append(json.dumps(e.data, ensure_ascii=False))
    return texts


def test_no_secret_reaches_the_log(tmp_path: Path, claude_home: Path) -> None:
    log = tmp_path / "log.db"
    a, b = Home(tmp_path, "laptop", log), Home(tmp_path, "desktop", log)
    _transcript(claude_home)
    a.js("import", "--root", str(claude_home))
    assert a.js("sync", "--once")["pushed"] > 0
    texts = _log_texts(log)
    assert len(texts) > 10
    leaked = {k for k, needle in NEEDLES.items() for t in texts
              if needle in t or json.dumps(needle)[1:-1] in t}
    assert leaked == set()
    for kind in SECRETS:
        assert any(f"[REDACTED:{kind}:" in t for t in texts), kind
    # the other machine gets the redacted copy, and ordinary text untouched
    b.js("sync", "--once")
    assert len(b.js("query", "zebracrossing")) == 1
    hits = b.js("query", "REDACTED")
    assert hits and all(NEEDLES["github-token"] not in json.dumps(h) for h in hits)
    # the local verbatim records stay as they were (redact.local is off by default)
    assert len(a.js("query", "R2d2C3poBb8Ww0Kk1Ll2Mm3Nn4Oo5Pp6Qq7Rr")) >= 1
    # verify knows redaction is not a difference
    assert a.cx("verify").returncode == 0, a.cx("verify").stdout


@pytest.mark.parametrize("processes", ["1", "2"])
def test_local_redaction_when_configured(tmp_path: Path, claude_home: Path, processes: str) -> None:
    """Also when a reader process made the events' payloads: those the redaction changes are made afresh."""
    h = Home(tmp_path)
    h.env["CXSYNC_IMPORT_PROCESSES"] = processes
    with open(h.home / "config.toml", "a") as fh:
        fh.write("[redact]\nlocal = true\n")
    written = _transcript(claude_home)
    h.js("import", "--root", str(claude_home))
    con = sqlite3.connect(h.db_path)
    try:
        blobs = [bytes(p) for (p,) in con.execute("SELECT payload FROM events")]
        # A message's text lives in its stored event (checked below); the FTS index holds no copy of it.
        contents = [str(ev.decode(bytes(p)).data.get("content", "")) for (p,) in con.execute(
            "SELECT e.payload FROM messages m JOIN events e ON e.event_id = m.event_id")]
    finally:
        con.close()
    everything = contents + [orjson.dumps(ev.decode(b).data).decode() for b in blobs]
    assert not {k for k, n in NEEDLES.items() for t in everything if n in t or json.dumps(n)[1:-1] in t}
    # and every line is kept, redacted: none is lost with its secret
    from cxsync.cache import open_cache
    from cxsync.cache.records import transcript

    cache = open_cache(h.db_path, readonly=True)
    try:
        held = transcript(cache.conn, SID)
    finally:
        cache.close()
    assert [n for n, _ in held.lines] == list(range(1, len(written.read_text().splitlines()) + 1))
    assert held.redacted == len(held.lines) - 1  # all but the line without a secret


def test_redact_check_shows_findings_without_the_secret(tmp_path: Path, claude_home: Path) -> None:
    f = _transcript(claude_home)
    r = Home(tmp_path).cx("redact", "--check", str(f), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {x["kind"] for x in data["findings"]} >= set(SECRETS)
    assert all(n not in r.stdout for n in NEEDLES.values())
    human = Home(tmp_path).cx("redact", "--check", str(f))
    assert "secret(s) would be redacted" in human.stderr and NEEDLES["github-token"] not in human.stdout


def test_an_event_without_secrets_travels_unchanged() -> None:
    e = ev.ContextEvent(ev.MESSAGE_INDEXED, "id1", "acme", "ada", "m", "2026-01-01T00:00:00Z",
                        {"content": "def add(a, b):\n    return a + b", "records": ['{"type":"user","x":1}']})
    assert redact_event(e) is e


def test_verbatim_lines_stay_valid_json() -> None:
    raw = json.dumps({"type": "user", "message": {"content": f'set password="{"Hunter2-Hunter2"}" ok'}})
    e = ev.ContextEvent(ev.MESSAGE_INDEXED, "id1", "acme", "ada", "m", "2026-01-01T00:00:00Z",
                        {"content": "x", "records": [raw]})
    out = redact_event(e)
    line = out.data["records"][0]
    assert "Hunter2-Hunter2" not in line and json.loads(line)["type"] == "user"
    assert out.data["redacted"] == ["password-assignment"]


def test_false_positives_on_the_real_fixtures_are_counted() -> None:
    if not REAL_FIXTURES.is_dir():
        pytest.skip("real transcripts not present")
    lines = [line for p in glob.glob(str(REAL_FIXTURES / "projects" / "**" / "*.jsonl"), recursive=True)
             for line in Path(p).read_text(encoding="utf-8", errors="replace").splitlines()]
    found = [(f.kind, f.secret[:6]) for line in lines for f in find_secrets(line)]
    print(f"\nfalse positives on {len(lines)} real transcript lines: {len(found)} {found[:10]}")
    assert len(found) <= len(lines) // 100  # ordinary code is left alone
