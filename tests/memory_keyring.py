"""Keyring backends for tests: real ``keyring.backend.KeyringBackend`` subclasses, set with ``keyring.set_keyring``.

- ``MemoryKeyring``: a dict; what a working OS keyring does.
- ``LockedKeyring``: every call raises ``KeyringLocked`` (a Secret Service whose collection nobody unlocked).
- ``HangingKeyring``: every call blocks until ``release()`` (a D-Bus call stuck on an invisible unlock prompt).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import keyring
import keyring.core
from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked, PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, str, str]] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.calls.append(("get", service, username))
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.calls.append(("set", service, username))
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.calls.append(("delete", service, username))
        try:
            del self.store[(service, username)]
        except KeyError:
            raise PasswordDeleteError("no such password") from None


class LockedKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked("Failed to unlock the collection!")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringLocked("Failed to unlock the collection!")

    def delete_password(self, service: str, username: str) -> None:
        raise KeyringLocked("Failed to unlock the collection!")


class HangingKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self._release = threading.Event()
        self.entered = threading.Event()

    def release(self) -> None:
        self._release.set()

    def _hang(self) -> None:
        self.entered.set()
        self._release.wait(30)

    def get_password(self, service: str, username: str) -> str | None:
        self._hang()
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self._hang()

    def delete_password(self, service: str, username: str) -> None:
        self._hang()


@contextmanager
def using(backend: KeyringBackend) -> Iterator[KeyringBackend]:
    """Make ``backend`` keyring's process-wide backend for the duration; restore the previous one after."""
    previous = keyring.core._keyring_backend
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.core._keyring_backend = previous
