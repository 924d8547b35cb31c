"""Real gateway servers on 127.0.0.1 for the tests: in a thread of the test process, or as a `cxsync serve`
process (what two servers over one backend need)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import httpx
import uvicorn

from cxsync.sync.gateway import Limits, create_app, open_backend
from cxsync.sync.port import EventLog
from cxsync.sync.tokens import GatewayStore
from tests.helpers import wait_until


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadServer:
    """uvicorn serving the gateway app on a real socket, from a thread of this process."""

    def __init__(self, opener: Callable[[str], EventLog], store: GatewayStore, limits: Limits = Limits(),
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None, log_config: Any = None) -> None:
        self.app = create_app(opener, store, limits)
        self._sock = free_socket()
        self.port = self._sock.getsockname()[1]
        scheme = "https" if ssl_certfile else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, log_level="warning",
                                timeout_graceful_shutdown=2, log_config=log_config, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="test-gateway", daemon=True)

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        wait_until(lambda: self.server.started, 10, what="the gateway started")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


def sqlite_backend(tmp_path: Path) -> tuple[Callable[[str], EventLog], GatewayStore]:
    return open_backend(f"sqlite:{tmp_path / 'server' / 'log.db'}")


class ProcessServer:
    """`cxsync serve` as a child process (its own interpreter, its own connections to the backend)."""

    def __init__(self, log_target: str, env: dict[str, str], extra: tuple[str, ...] = (),
                 verify: str | bool = True) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()  # a tiny race with other binders on this host; the start-up wait below would catch it
        self.url = f"{'https' if '--tls-cert' in extra else 'http'}://127.0.0.1:{self.port}"
        self.verify = verify
        Path(env["CXSYNC_HOME"]).mkdir(parents=True, exist_ok=True)
        self.stderr_path = Path(env["CXSYNC_HOME"]) / f"serve-{self.port}.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cxsync.agent", "serve", "--log", log_target, "--port", str(self.port), *extra],
            env={**os.environ, **env}, stdout=self._stderr, stderr=subprocess.STDOUT)

    def __enter__(self) -> ProcessServer:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"cxsync serve exited: {self.stderr_path.read_text()}")
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=1, verify=self.verify).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, interval=0.1, what="cxsync serve answers /v1/health")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace")
