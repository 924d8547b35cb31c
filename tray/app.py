"""The pystray adapter: renders ``tray.model`` views and turns menu clicks into agent commands.

Threads (see ARCHITECTURE.md): the icon's event loop owns the main thread (``icon.run``; macOS insists).  The
setup callback starts the agent — our own ``Supervisor``, or, when another agent already holds the
single-instance lock, that agent through the control socket — and a named refresher thread that redraws from
the agent's status every ``refresh_interval`` seconds, sleeping in ``stop.wait``.  Menu actions run on short
named threads so a slow control round-trip never blocks the UI loop.  Quit hides the icon at once, then stops
the supervisor within its time budget on the main thread.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from cxsync.sync.errors import EXIT_OK, CxError
from cxsync.tray import model

if TYPE_CHECKING:
    from cxsync.agent.config import Config
    from cxsync.agent.status import Status
    from cxsync.agent.supervisor import Supervisor

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 2.0
STOP_BUDGET = 10.0
TRAY_EXTRA_HINT = "pip install 'cxsync[tray]'"


_LATIN1_FALLBACKS = {"\u2014": "-", "\u2013": "-", "\u2026": "...", "\u2192": "->"}


def _latin1(text: str) -> str:
    for uni, plain in _LATIN1_FALLBACKS.items():
        text = text.replace(uni, plain)
    return text.encode("latin-1", "replace").decode("latin-1")


class NoDisplay(CxError):
    def __init__(self, detail: str = "") -> None:
        super().__init__("no display: cxsync tray needs a graphical session"
                         + (f" ({detail})" if detail else ""),
                         "run `cxsync run` for the headless agent")


# ---------------------------------------------------------------------------------------------------------------
# Where the status comes from and where commands go

class Agent(Protocol):
    owner: bool

    def snapshot(self) -> Status: ...

    def command(self, action: str) -> None: ...

    def stopped(self) -> bool: ...

    def stop(self, timeout: float) -> list[str]: ...


class OwnedAgent:
    """The tray runs the agent itself."""

    owner = True

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def snapshot(self) -> Status:
        return self.supervisor.snapshot()

    def command(self, action: str) -> None:
        {"pause": self.supervisor.pause, "resume": self.supervisor.resume,
         "sync-now": self.supervisor.sync_now}[action]()

    def stopped(self) -> bool:
        return bool(self.supervisor.stop_event.is_set())

    def stop(self, timeout: float) -> list[str]:
        return list(self.supervisor.stop(timeout=timeout))


class RemoteAgent:
    """Another process (``cxsync run``, a second tray) holds the lock: be its remote control, never stop it."""

    owner = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def snapshot(self) -> Status:
        from cxsync.agent import status

        return status.collect(self.config)

    def command(self, action: str) -> None:
        from cxsync.agent import control

        control.send(self.config.paths, action)

    def stopped(self) -> bool:
        return False  # the tray outlives the other agent and shows "not running"

    def stop(self, timeout: float) -> list[str]:
        return []


class FailedAgent:
    """The agent could not start: show why (red icon, title and hint in the menu) and let the user quit."""

    owner = True

    def __init__(self, config: Config, error: CxError) -> None:
        self.config, self.error = config, error

    def snapshot(self) -> Status:
        return {"state": "error", "pid": None, "outbox": 0, "messages": 0, "sessions": 0,
                "target": self.config.sync.target,
                "last_error": {"title": self.error.title, "hint": self.error.hint}}

    def command(self, action: str) -> None:
        log.info("ignoring %s: the agent is not running", action)

    def stopped(self) -> bool:
        return False

    def stop(self, timeout: float) -> list[str]:
        return []


def _error_status(exc: BaseException) -> Status:
    title = exc.title if isinstance(exc, CxError) else f"cannot read the agent's status: {exc}"
    hint = exc.hint if isinstance(exc, CxError) else "see the log folder"
    return {"state": "error", "last_error": {"title": title, "hint": hint}}


# ---------------------------------------------------------------------------------------------------------------
# Opening folders and files in the desktop's own application

def open_path(path: Path, platform: str = sys.platform) -> None:
    """Open ``path`` with the desktop's default application, without waiting for that application."""
    if platform == "win32":
        os.startfile(str(path))  # type: ignore[attr-defined]  # Windows only
        return
    opener = "open" if platform == "darwin" else "xdg-open"
    try:
        proc = subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise CxError(f"cannot open {path}: {opener} is not installed",
                      "install xdg-utils, or open the folder by hand (`cxsync paths` lists it)") from None
    proc.wait()  # on our own action thread; reaps the opener, which returns once the app has started


# ---------------------------------------------------------------------------------------------------------------
# The app

class TrayApp:
    """Owns the icon, the agent handle and the refresher thread.  ``run()`` blocks on the UI loop."""

    def __init__(self, config: Config, *, icon_cls: Any, menu_cls: Any, item_cls: Any,
                 render: Callable[[model.IconLook], Any], supervisor_factory: Callable[[Config], Any],
                 already_running: type[BaseException], refresh_interval: float = REFRESH_INTERVAL,
                 stop_budget: float = STOP_BUDGET, opener: Callable[[Path], None] | None = None) -> None:
        self.config = config
        self._icon_cls, self._menu_cls, self._item_cls = icon_cls, menu_cls, item_cls
        self._render = render
        self._supervisor_factory = supervisor_factory
        self._already_running = already_running
        self.refresh_interval = refresh_interval
        self.stop_budget = stop_budget
        self._opener = opener
        self.stop_event = threading.Event()  # the tray's own: set on Quit, SIGTERM, or when the agent stops
        self._lock = threading.RLock()  # lifecycle and thread bookkeeping; short, never held across backend calls
        self._render_lock = threading.Lock()  # one redraw at a time
        self._quitting = False
        self._closing = False  # run() is shutting down: setup must not start anything any more
        self._starting = False  # setup has begun starting the agent
        self._agent_settled = threading.Event()  # ... and has finished doing so
        self._refresher: threading.Thread | None = None
        self._action_threads: list[threading.Thread] = []
        self.agent: Agent | None = None
        self.stragglers: list[str] = []
        first = model.view({"state": "not-running", "target": config.sync.target})
        self.view = first
        # pystray's bare-X11 backend writes the title as WM_NAME, a Latin-1 STRING property, already in its
        # constructor: create with a Latin-1 title, then use the full one wherever the backend allows it.
        self.icon = icon_cls("cxsync", icon=render(first.icon), title=_latin1(first.title), menu=self._menu(first))
        self._bare_x11 = any(c.__module__.endswith("._xorg") for c in type(self.icon).__mro__)
        self.icon.title = self._title(first)
        self.icon.icon = self._image(first.icon)

    # -- rendering ------------------------------------------------------------------------------------------
    def _title(self, view: model.TrayView) -> str:
        return _latin1(view.title) if self._bare_x11 else view.title

    def _image(self, look: model.IconLook) -> Any:
        img = self._render(look)
        if self._bare_x11:
            # pystray's X11 backend drops the alpha channel: the anti-aliased rim would show its raw colour as a
            # bright fringe.  Flatten onto black, which is what the transparent pixels become there anyway.
            from PIL import Image

            img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
        return img

    def _menu(self, view: model.TrayView) -> Any:
        items = []
        for entry in view.menu:
            if entry.kind == "separator":
                items.append(self._menu_cls.SEPARATOR)
            elif entry.kind == "info":
                items.append(self._item_cls(entry.label, None, enabled=False))
            else:
                items.append(self._item_cls(entry.label, self._handler(entry.action or ""),
                                            enabled=entry.enabled, default=entry.default))
        return self._menu_cls(*items)

    def _handler(self, action: str) -> Callable[[Any, Any], None]:
        def on_click(icon: Any, item: Any) -> None:
            self.dispatch(action)

        return on_click

    def show(self, status: Mapping[str, Any]) -> model.TrayView:
        """Redraw from one status snapshot; only what changed is pushed to the backend."""
        owner = self.agent.owner if self.agent is not None else True
        new = model.view(status, owner=owner)
        # Not self._lock: a backend may run these updates on its UI thread and wait for it, while that thread
        # takes self._lock in dispatch() — the UI thread must never wait for the render lock.
        with self._render_lock:
            old = self.view
            try:
                if new.icon != old.icon:
                    self.icon.icon = self._image(new.icon)
                if new.title != old.title:
                    self.icon.title = self._title(new)
                if new.menu != old.menu:
                    self.icon.menu = self._menu(new)
                    self.icon.update_menu()
            except Exception as exc:  # a backend hiccup: keep the old view, so the next refresh retries
                log.warning("tray: cannot update the icon: %s", exc)
                return old
            if new.state != old.state:
                log.info("tray: %s", new.title)
            self.view = new
        return new

    def refresh(self) -> model.TrayView:
        agent = self.agent
        if agent is None:
            return self.view
        try:
            status = agent.snapshot()
        except Exception as exc:  # a status hiccup must never kill the refresher
            log.warning("tray: cannot read the agent status: %s", exc)
            status = _error_status(exc)
        return self.show(status)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start_agent(self) -> Agent:
        try:
            supervisor = self._supervisor_factory(self.config)
            supervisor.start()
        except self._already_running as exc:
            log.info("tray: another agent is running (%s); acting as its remote control", exc)
            return RemoteAgent(self.config)
        except CxError as exc:
            log.error("tray: the agent could not start: %s — %s", exc.title, exc.hint)
            return FailedAgent(self.config, exc)
        except Exception as exc:
            log.exception("tray: the agent crashed while starting")
            return FailedAgent(self.config, CxError(f"the agent could not start: {exc}", "see the log folder"))
        return OwnedAgent(supervisor)

    def setup(self, icon: Any) -> None:
        """pystray's setup callback, on its own thread once the UI loop runs.

        Quit or SIGTERM may arrive at any point in here, and ``run`` may already be shutting down: the agent is
        started only while the app is not closing, and ``run`` waits for a start in progress before it stops it.
        """
        # Show the icon first (grey, "not running"): opening a large cache can take a moment, and the icon
        # must be there to say so.  The first refresh below then pushes the real state to the backend.
        icon.visible = True
        with self._lock:
            if self._closing:
                return
            self._starting = True
        try:
            self.agent = self.start_agent()
        finally:
            self._agent_settled.set()
        if self.stop_event.is_set():
            self.icon.stop()  # quit arrived while the agent was starting; ``run`` stops it
            return
        self.refresh()
        with self._lock:
            if self._closing:
                return
            self._refresher = threading.Thread(target=self._refresh_loop, name="cxsync-tray-refresh",
                                               daemon=True)
            self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self.stop_event.wait(self.refresh_interval):
            agent = self.agent
            if agent is not None and agent.stopped():
                log.info("tray: the agent stopped; closing the tray")
                self.quit()
                return
            self.refresh()

    def dispatch(self, action: str) -> None:
        """Run a menu action off the UI thread.  Disabled entries (a default click on bare X11) do nothing."""
        entry = self.view.entry(action)
        if entry is None or not entry.enabled:
            log.debug("tray: %s is not available now", action)
            return
        if action == "quit":
            self.quit()
            return
        t = threading.Thread(target=self._run_action, args=(action,), name=f"cxsync-tray-{action}", daemon=True)
        with self._lock:
            self._action_threads = [a for a in self._action_threads if a.is_alive()] + [t]
        t.start()

    def _run_action(self, action: str) -> None:
        try:
            if action == "open-log":
                self.config.paths.log_dir.mkdir(parents=True, exist_ok=True)
                self._open(self.config.paths.log_dir)
            elif action == "open-config":
                cfg = self.config.paths.config_file
                self._open(cfg if cfg.exists() else self.config.paths.config_dir)
            elif self.agent is not None:
                self.agent.command(action)
        except CxError as exc:
            log.warning("tray: %s failed: %s — %s", action, exc.title, exc.hint)
        except Exception:
            log.exception("tray: %s failed", action)
        if not self.stop_event.is_set():
            self.refresh()

    def _open(self, path: Path) -> None:
        (self._opener or open_path)(path)

    def quit(self) -> None:
        """Hide the icon and leave the UI loop; ``run`` then stops the agent.  Safe from any thread, twice."""
        with self._lock:
            if self._quitting:
                return
            self._quitting = True
        self.stop_event.set()
        # Not on the caller's thread: that is often the UI loop (a menu click), and pystray's stop() waits up to
        # 5 s for a setup still starting the agent; the UI must not freeze meanwhile.
        t = threading.Thread(target=self.icon.stop, name="cxsync-tray-quit", daemon=True)
        with self._lock:
            self._action_threads.append(t)
        t.start()

    def join_threads(self, timeout: float) -> list[str]:
        """Wait for the tray's own threads; the names of any still running."""
        with self._lock:
            threads = [t for t in [self._refresher, *self._action_threads] if t is not None]
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)
        return [t.name for t in threads if t.is_alive()]

    def run(self) -> int:
        previous = _install_signal_handlers(self.quit)
        try:
            self.icon.run(setup=self.setup)
        finally:
            self.stop_event.set()
            _restore_signal_handlers(previous)
            with self._lock:
                self._closing = True
                starting = self._starting
            if starting and not self._agent_settled.wait(self.stop_budget):
                log.warning("tray: the agent is still starting after %.0f s; leaving it", self.stop_budget)
            agent = self.agent
            if agent is not None:
                self.stragglers = agent.stop(self.stop_budget)
                if self.stragglers:
                    log.warning("tray: agent threads still running after %.0f s: %s", self.stop_budget,
                                ", ".join(self.stragglers))
            # the refresher's wait returns at once now; action threads are short (an opener may linger)
            self.join_threads(2.0)
        return EXIT_OK


def _install_signal_handlers(quit: Callable[[], None]) -> dict[int, Any]:
    """SIGTERM (logout, systemd, `kill`) and SIGINT quit cleanly.  Only the main thread may install them."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # icon.stop() waits on the UI loop, which is this very thread: hand it to another one
        threading.Thread(target=quit, name="cxsync-tray-signal", daemon=True).start()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, on_signal)
    return previous


def _restore_signal_handlers(previous: Mapping[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------------------
# Entry point

def require_display(platform: str = sys.platform, environ: Mapping[str, str] | None = None) -> None:
    """Fail early and clearly on a Linux/BSD box without a graphical session."""
    environ = os.environ if environ is None else environ
    if platform in ("darwin", "win32", "cygwin") or environ.get("PYSTRAY_BACKEND") == "dummy":
        return
    if not environ.get("DISPLAY", "").strip() and not environ.get("WAYLAND_DISPLAY", "").strip():
        raise NoDisplay("neither DISPLAY nor WAYLAND_DISPLAY is set")


def load_pystray() -> Any:
    """Import pystray, telling a missing extra apart from a missing display."""
    try:
        import pystray
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("pystray", "PIL", "six", "Xlib"):
            raise CxError(f"the tray needs pystray and Pillow ({exc.name} is not installed)",
                          TRAY_EXTRA_HINT) from None
        raise NoDisplay(str(exc)) from None
    except ImportError as exc:
        # pystray tried every backend; a missing X library is an install problem, anything else a display one
        if "No module named 'Xlib'" in str(exc) or "No module named 'six'" in str(exc):
            raise CxError(f"the tray needs pystray's X11 support: {exc}", TRAY_EXTRA_HINT) from None
        raise NoDisplay(str(exc)) from None
    except Exception as exc:  # Xlib raises its own DisplayConnectionError at import time
        raise NoDisplay(f"{type(exc).__name__}: {exc}") from None
    return pystray


def _load_render() -> Callable[[model.IconLook], Any]:
    try:
        from cxsync.tray.icons import render
    except ModuleNotFoundError as exc:
        raise CxError(f"the tray needs pystray and Pillow ({exc.name} is not installed)", TRAY_EXTRA_HINT) from None
    return render


def _default_supervisor() -> tuple[Callable[[Config], Any], type[BaseException]]:
    from cxsync.agent.supervisor import AlreadyRunning, Supervisor

    return Supervisor, AlreadyRunning


def run_tray(config: Config, *, supervisor_factory: Callable[[Config], Any] | None = None,
             already_running: type[BaseException] | None = None, icon_cls: Any = None,
             refresh_interval: float = REFRESH_INTERVAL, stop_budget: float = STOP_BUDGET) -> int:
    """Run the tray until Quit, SIGTERM or ``cxsync stop``; the exit code.

    The keyword arguments exist for tests (a Supervisor double, a recording icon class); production passes
    none of them.
    """
    require_display()
    pystray = load_pystray()
    render = _load_render()
    if supervisor_factory is None or already_running is None:
        default_factory, default_already = _default_supervisor()
        supervisor_factory = supervisor_factory or default_factory
        already_running = already_running or default_already
    if icon_cls is None:
        from cxsync.tray.x11 import icon_class

        icon_cls = icon_class(pystray)
    app = TrayApp(config, icon_cls=icon_cls, menu_cls=pystray.Menu, item_cls=pystray.MenuItem,
                  render=render, supervisor_factory=supervisor_factory, already_running=already_running,
                  refresh_interval=refresh_interval, stop_budget=stop_budget)
    return app.run()
