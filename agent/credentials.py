"""The one secret cxsync holds (a FoundationDB TLS key passphrase or a gateway token), in the OS keyring.

- Service ``cxsync``, username ``"<tenant>/<user>"``: one credential per identity, several profiles side by side.
- ``CXSYNC_TOKEN`` in the environment wins over the keyring (CI, containers, headless boxes without a keyring).
- Every keyring call runs on its own daemon thread with a time limit: a hung D-Bus (a Secret Service waiting on
  an unlock prompt nobody sees) must not freeze the tray or the CLI.  A call that times out is abandoned.
- No usable keyring is an error (``NoCredentials``, exit 4) — never a silent plaintext fallback: ``keyrings.alt``
  file backends and the ``null`` backend are refused by name even when configured explicitly.
- The secret is never logged and never part of an error message.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Callable, TypeVar

from cxsync.sync.errors import CxError, NoCredentials, UsageError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

    from cxsync.agent.config import Identity

log = logging.getLogger(__name__)

SERVICE = "cxsync"
ENV_TOKEN = "CXSYNC_TOKEN"
KEYRING_TIMEOUT = 10.0

_OPTIONS_HINT = (
    "install and unlock a Secret Service (gnome-keyring or KWallet; on a headless box start "
    "`gnome-keyring-daemon --unlock` in a D-Bus session), or set CXSYNC_TOKEN in the agent's environment"
)

T = TypeVar("T")


class KeyringTimeout(CxError):
    """The keyring did not answer in time (exit 1: usually transient — a locked session, a stuck D-Bus)."""


def account(identity: Identity) -> str:
    """The keyring username for an identity."""
    return f"{identity.tenant}/{identity.user}"


def _env_token() -> str | None:
    token = os.environ.get(ENV_TOKEN, "")
    return token if token.strip() else None


def _with_timeout(what: str, fn: Callable[[], T], timeout: float) -> T:
    """Run ``fn`` on a named daemon thread; wait at most ``timeout`` seconds for it.

    A daemon thread, not an executor: a call stuck inside D-Bus cannot be cancelled, and it must not keep the
    process alive at exit either.
    """
    done = threading.Event()
    result: list[T] = []
    error: list[BaseException] = []

    def call() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=call, name=f"cxsync-keyring-{what}", daemon=True).start()
    if not done.wait(timeout):
        raise KeyringTimeout(
            f"the OS keyring did not answer within {timeout:g} s ({what})",
            "check that the Secret Service (gnome-keyring, KWallet) is running and unlocked — a hidden unlock "
            "prompt can block it — or set CXSYNC_TOKEN",
        )
    if error:
        raise error[0]
    return result[0]


def _refusal(backend: KeyringBackend) -> str | None:
    """Why ``backend`` is not acceptable for a secret, or None if it is."""
    from keyring.backends import fail, null

    cls = type(backend)
    qualname = f"{cls.__module__}.{cls.__name__}"
    if isinstance(backend, fail.Keyring):
        return "no keyring backend is available"
    if isinstance(backend, null.Keyring):
        return "the keyring backend is 'null', which silently discards secrets"
    if cls.__module__ == "keyrings.alt" or cls.__module__.startswith("keyrings.alt."):
        # keyrings.alt: plaintext files, or an "encrypted" file whose password is prompted on a terminal the
        # background agent does not have.  Either is a silent downgrade from the OS keyring.
        return f"the keyring backend {qualname} stores secrets in a file (keyrings.alt); cxsync refuses it"
    return None


def _select_backend() -> KeyringBackend:
    """The keyring backend cxsync will use, or NoCredentials naming why there is none.

    When keyring chains several backends, pick the best acceptable one ourselves: the chainer would write to
    the first backend that accepts the secret, which could be a refused one.
    """
    import keyring
    from keyring.backends import chainer

    kr = keyring.get_keyring()
    candidates = list(kr.backends) if isinstance(kr, chainer.ChainerBackend) else [kr]
    reasons = []
    for candidate in candidates:
        reason = _refusal(candidate)
        if reason is None:
            return candidate
        reasons.append(reason)
    why = "; ".join(dict.fromkeys(reasons)) or "no keyring backend is available"
    raise NoCredentials(f"no usable OS keyring for the cxsync credential: {why}", _OPTIONS_HINT)


def _translate(exc: BaseException, doing: str) -> BaseException:
    """Keyring and D-Bus failures become NoCredentials with the options; anything else is left alone."""
    from keyring.errors import KeyringError, KeyringLocked

    if isinstance(exc, KeyringLocked):
        return NoCredentials(f"the OS keyring is locked ({doing})", "unlock it (log in to the desktop "
                             "session, or `gnome-keyring-daemon --unlock`), or set CXSYNC_TOKEN")
    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, KeyringError) or module in ("secretstorage", "jeepney", "dbus"):
        # str(exc) comes from the backend and never contains the secret itself
        return NoCredentials(f"the OS keyring failed ({doing}): {exc}", _OPTIONS_HINT)
    return exc


def _call(what: str, fn: Callable[[KeyringBackend], T], timeout: float) -> T:
    def run() -> T:
        return fn(_select_backend())

    try:
        return _with_timeout(what, run, timeout)
    except CxError:
        raise
    except Exception as exc:
        translated = _translate(exc, what)
        if translated is exc:
            raise
        raise translated from None


def get_secret(identity: Identity, *, timeout: float = KEYRING_TIMEOUT) -> str | None:
    """The stored credential: ``CXSYNC_TOKEN`` if set, else the keyring entry, else None (nothing stored)."""
    token = _env_token()
    if token is not None:
        return token
    return _call("read", lambda kr: kr.get_password(SERVICE, account(identity)), timeout)


def set_secret(identity: Identity, secret: str, *, timeout: float = KEYRING_TIMEOUT) -> None:
    """Store ``secret`` for ``identity`` in the keyring (``CXSYNC_TOKEN``, if set, still wins when reading)."""
    if not secret or not secret.strip():
        raise UsageError("the credential is empty", "paste the passphrase or token, or pipe it to --token-stdin")
    _call("store", lambda kr: kr.set_password(SERVICE, account(identity), secret), timeout)
    log.info("stored the credential for %s in %s", account(identity), "the OS keyring")


def delete_secret(identity: Identity, *, timeout: float = KEYRING_TIMEOUT) -> bool:
    """Remove the keyring entry; False if there was none."""
    from keyring.errors import PasswordDeleteError

    def delete(kr: KeyringBackend) -> bool:
        if kr.get_password(SERVICE, account(identity)) is None:
            return False
        try:
            kr.delete_password(SERVICE, account(identity))
        except PasswordDeleteError:
            return False  # gone in between
        return True

    removed = _call("delete", delete, timeout)
    if removed:
        log.info("removed the credential for %s from the OS keyring", account(identity))
    return removed


def backend_name(*, timeout: float = KEYRING_TIMEOUT) -> str:
    """What ``get_secret`` reads from, for ``cxsync status``: "env:CXSYNC_TOKEN", a keyring name, or "none"."""
    if _env_token() is not None:
        return f"env:{ENV_TOKEN}"
    try:
        backend = _with_timeout("probe", _select_backend, timeout)
    except KeyringTimeout:
        return "none (keyring timed out)"
    except NoCredentials:
        return "none"
    except ImportError:
        return "none (keyring not installed)"
    return str(type(backend).name)
