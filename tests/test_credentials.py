"""cxsync.agent.credentials: keyring service `cxsync`, env override, timeouts, refusal of unsafe backends."""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator

import pytest
from keyring.backends import chainer, fail, null

from cxsync.agent import credentials
from cxsync.agent.config import Identity
from cxsync.sync.errors import EXIT_ERROR, EXIT_NO_CREDENTIALS, NoCredentials, UsageError
from tests.memory_keyring import HangingKeyring, LockedKeyring, MemoryKeyring, using

ALICE = Identity("acme", "alice", "laptop-1")
BOB = Identity("acme", "bob", "desk-2")


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXSYNC_TOKEN", raising=False)


@pytest.fixture
def memory() -> Iterator[MemoryKeyring]:
    with using(MemoryKeyring()) as kr:
        yield kr  # type: ignore[misc]


def test_secret_is_stored_under_service_cxsync_and_tenant_slash_user(memory: MemoryKeyring) -> None:
    credentials.set_secret(ALICE, "s3cret")
    assert memory.store == {("cxsync", "acme/alice"): "s3cret"}
    assert credentials.get_secret(ALICE) == "s3cret"
    assert credentials.get_secret(BOB) is None


def test_delete_reports_whether_something_was_removed(memory: MemoryKeyring) -> None:
    credentials.set_secret(ALICE, "s3cret")
    assert credentials.delete_secret(ALICE) is True
    assert credentials.get_secret(ALICE) is None
    assert credentials.delete_secret(ALICE) is False


def test_env_token_overrides_the_keyring_without_touching_it(memory: MemoryKeyring,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    credentials.set_secret(ALICE, "from-keyring")
    memory.calls.clear()
    monkeypatch.setenv("CXSYNC_TOKEN", "from-env")
    assert credentials.get_secret(ALICE) == "from-env"
    assert credentials.backend_name() == "env:CXSYNC_TOKEN"
    assert memory.calls == []


def test_blank_env_token_is_ignored(memory: MemoryKeyring, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSYNC_TOKEN", "  ")
    credentials.set_secret(ALICE, "from-keyring")
    assert credentials.get_secret(ALICE) == "from-keyring"


def test_empty_secret_is_a_usage_error(memory: MemoryKeyring) -> None:
    with pytest.raises(UsageError):
        credentials.set_secret(ALICE, "   ")
    assert memory.store == {}


def test_backend_name_names_the_keyring_in_use(memory: MemoryKeyring) -> None:
    assert credentials.backend_name() == "memory keyring MemoryKeyring"


def test_keyring_calls_run_off_the_calling_thread(memory: MemoryKeyring) -> None:
    seen: list[str] = []
    original = memory.get_password

    def spy(service: str, username: str) -> str | None:
        seen.append(threading.current_thread().name)
        return original(service, username)

    memory.get_password = spy  # type: ignore[method-assign]
    credentials.get_secret(ALICE)
    assert seen and seen[0] != threading.current_thread().name
    assert seen[0].startswith("cxsync-keyring")


@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()], ids=["fail", "null"])
def test_no_usable_keyring_is_no_credentials_naming_the_options(backend: object) -> None:
    with using(backend), pytest.raises(NoCredentials) as info:  # type: ignore[arg-type]
        credentials.get_secret(ALICE)
    err = info.value
    assert err.exit_code == EXIT_NO_CREDENTIALS == 4
    assert "gnome-keyring" in err.hint and "KWallet" in err.hint and "CXSYNC_TOKEN" in err.hint
    with using(backend):  # type: ignore[arg-type]
        assert credentials.backend_name() == "none"
        with pytest.raises(NoCredentials):
            credentials.set_secret(ALICE, "s3cret")


def test_an_empty_chain_is_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [])
    with using(chainer.ChainerBackend()), pytest.raises(NoCredentials):
        credentials.get_secret(ALICE)


class PlaintextKeyring(MemoryKeyring):
    """Stands in for keyrings.alt.file.PlaintextKeyring (not installed, and must never be)."""


PlaintextKeyring.__module__ = "keyrings.alt.file"


def test_keyrings_alt_plaintext_backend_is_refused_even_when_configured() -> None:
    plaintext = PlaintextKeyring()
    with using(plaintext), pytest.raises(NoCredentials) as info:
        credentials.set_secret(ALICE, "s3cret")
    assert "keyrings.alt" in info.value.title
    assert plaintext.store == {}


def test_a_chain_skips_refused_backends_and_uses_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    plaintext, real = PlaintextKeyring(), MemoryKeyring()
    monkeypatch.setattr(chainer.ChainerBackend, "backends", [plaintext, real])
    with using(chainer.ChainerBackend()):
        credentials.set_secret(ALICE, "s3cret")
    assert plaintext.store == {}
    assert real.store == {("cxsync", "acme/alice"): "s3cret"}


def test_a_locked_keyring_is_no_credentials_telling_to_unlock() -> None:
    with using(LockedKeyring()), pytest.raises(NoCredentials) as info:
        credentials.get_secret(ALICE)
    assert "locked" in info.value.title
    assert "unlock" in info.value.hint and "CXSYNC_TOKEN" in info.value.hint


def test_a_hung_keyring_times_out_with_a_clear_error_instead_of_freezing() -> None:
    hanging = HangingKeyring()
    try:
        with using(hanging):
            t0 = time.monotonic()
            with pytest.raises(credentials.KeyringTimeout) as info:
                credentials.get_secret(ALICE, timeout=0.3)
            assert time.monotonic() - t0 < 2.0
            assert info.value.exit_code == EXIT_ERROR
            assert "did not answer within 0.3 s" in info.value.title
            assert "unlock" in info.value.hint
            assert credentials.backend_name(timeout=5) == "memory keyring HangingKeyring"
    finally:
        hanging.release()


def test_the_secret_never_reaches_the_log(memory: MemoryKeyring, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    credentials.set_secret(ALICE, "hunter2-very-secret")
    credentials.get_secret(ALICE)
    credentials.delete_secret(ALICE)
    assert caplog.records, "set/delete are expected to log that they happened"
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


def test_unexpected_backend_bugs_are_not_disguised_as_missing_credentials() -> None:
    class Buggy(MemoryKeyring):
        def get_password(self, service: str, username: str) -> str | None:
            raise TypeError("a bug")

    with using(Buggy()), pytest.raises(TypeError):
        credentials.get_secret(ALICE)
