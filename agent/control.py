"""The local control channel: ``cxsync pause|resume|sync-now|stop`` and the tray talk to the running agent.

``multiprocessing.connection`` over a Unix socket (a named pipe on Windows) in the runtime dir, authenticated with
a random key kept in a 0600 file beside it: only the same user can drive the agent.

Each connection is served on a thread of its own, the authentication handshake included, under a time limit: a
client that connects and says nothing (a hung tray, a stray ``nc``) ties up its own thread for a few seconds,
never the accept loop, so ``pause`` and ``stop`` from everyone else still get through.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any, Callable

from cxsync.sync.errors import AgentNotRunning
from cxsync.agent.paths import Paths, secure_file

log = logging.getLogger("cxsync.control")

COMMANDS = ("pause", "resume", "sync-now", "stop", "status", "ping")
CLIENT_TIMEOUT = 5.0  # seconds a client may take to authenticate and to send its command


def _address(paths: Paths) -> str:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import hashlib

        return r"\\.\pipe\cxsync-" + hashlib.sha256(str(paths.runtime_dir).encode()).hexdigest()[:16]
    return str(paths.control_socket)


def _family() -> str:
    return "AF_PIPE" if sys.platform == "win32" else "AF_UNIX"


def _read_key(paths: Paths) -> bytes | None:
    try:
        return paths.control_key.read_bytes()
    except OSError:
        return None


class ControlServer:
    """Serves commands on a named thread; ``handler(cmd) -> dict`` runs on that thread."""

    def __init__(self, paths: Paths, handler: Callable[[str], dict[str, Any]]) -> None:
        self.paths = paths
        self.handler = handler
        self._stop = threading.Event()
        paths.ensure()
        key = secrets.token_bytes(32)
        tmp = paths.control_key.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        os.replace(tmp, paths.control_key)
        secure_file(paths.control_key)
        self._key = key
        addr = _address(paths)
        if _family() == "AF_UNIX":
            Path(addr).unlink(missing_ok=True)  # a stale socket of a killed agent; we hold the lock
        old = os.umask(0o077)
        try:
            # No authkey here: Listener.accept() would run the handshake on the accepting thread.
            self.listener = Listener(addr, family=_family(), backlog=16)
        finally:
            os.umask(old)
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self.listener.accept()
            except (OSError, EOFError) as exc:
                if self._stop.is_set():
                    return
                log.debug("control accept failed: %s", exc)
                continue
            if self._stop.is_set():
                conn.close()
                return
            threading.Thread(target=self._handle, args=(conn,), name="control-conn", daemon=True).start()

    def _handle(self, conn: Connection) -> None:
        with conn:
            _limit_blocking(conn, CLIENT_TIMEOUT)
            try:
                deliver_challenge(conn, self._key)
                answer_challenge(conn, self._key)
            except Exception as exc:  # noqa: BLE001 - a wrong key, a silent or vanished client: refuse this one only
                log.warning("control connection refused: %s", type(exc).__name__)
                return
            try:
                if not conn.poll(CLIENT_TIMEOUT):
                    return
                msg = conn.recv()
                cmd = msg.get("cmd") if isinstance(msg, dict) else None
                if cmd not in COMMANDS:
                    conn.send({"ok": False, "error": f"unknown command {cmd!r}"})
                    return
                reply: dict[str, Any] = {"ok": True} if cmd == "ping" else self.handler(cmd)
                then: Callable[[], object] | None = reply.pop("_then", None)
                conn.send(reply)
                if then is not None:  # e.g. stop: only once the caller has its answer
                    then()
            except (EOFError, OSError):
                pass
            except Exception as exc:  # noqa: BLE001
                log.exception("control command failed")
                try:
                    conn.send({"ok": False, "error": str(exc)})
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        try:
            # Wake the blocking accept() by connecting once ourselves.
            c = Client(_address(self.paths), family=_family(), authkey=self._key)
            c.close()
        except Exception:  # noqa: BLE001
            pass
        self.listener.close()
        self.thread.join(2)
        try:
            self.paths.control_key.unlink(missing_ok=True)
        except OSError:
            pass


def _limit_blocking(conn: Connection, seconds: float) -> None:
    """Make every blocking read and write on ``conn`` fail after ``seconds`` instead of waiting forever."""
    if sys.platform == "win32":  # pragma: no cover - a pipe has no such option; the thread is a daemon
        return
    import socket
    import struct

    sock = socket.socket(fileno=os.dup(conn.fileno()))  # a duplicate: closing it leaves ``conn`` open
    try:
        tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    finally:
        sock.close()


def send(paths: Paths, command: str, timeout: float = 2.0) -> dict[str, Any]:
    """Send one command to the running agent and return its reply; AgentNotRunning when nobody answers."""
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}")
    key = _read_key(paths)
    not_running = AgentNotRunning("the cxsync agent is not running", "start it with `cxsync run` (or `cxsync tray`)")
    if key is None:
        raise not_running
    result: dict[str, Any] = {}
    error: list[BaseException] = []

    def talk() -> None:
        try:
            with Client(_address(paths), family=_family(), authkey=key) as conn:
                conn.send({"cmd": command})
                if conn.poll(timeout):
                    result.update(conn.recv())
        except BaseException as exc:  # noqa: BLE001
            error.append(exc)

    t = threading.Thread(target=talk, name="control-client", daemon=True)
    t.start()
    t.join(timeout + 1)
    if error or t.is_alive():
        raise not_running
    if not result:
        raise AgentNotRunning("the cxsync agent did not answer in time", "check the log: `cxsync paths`")
    return result
