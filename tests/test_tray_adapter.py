"""tray.app with PYSTRAY_BACKEND=dummy: a recording icon (pystray's own base Icon with the platform hooks
filled in) and a Supervisor double.  Everything above the platform hooks — pystray's setup thread, menus,
default action — is pystray's real code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from cxsync.agent.config import Config, load_config
from cxsync.sync.errors import EXIT_ERROR, CxError, NoCredentials


def _import_dummy_pystray() -> types.ModuleType:
    previous = os.environ.get("PYSTRAY_BACKEND")
    os.environ["PYSTRAY_BACKEND"] = "dummy"
    try:
        import pystray
    finally:
        if previous is None:
            del os.environ["PYSTRAY_BACKEND"]
        else:
            os.environ["PYSTRAY_BACKEND"] = previous
    return pystray


pystray = _import_dummy_pystray()

from cxsync.tray import app as tray_app  # noqa: E402
from cxsync.tray import icons, model  # noqa: E402
from tests.helpers import wait_until  # noqa: E402



class RecordingIcon(pystray.Icon):  # type: ignore[misc, name-defined]
    """The dummy backend's Icon with the platform hooks recorded instead of drawn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []
        self.stopped = threading.Event()

    def _show(self) -> None:
        self.events.append("show")

    def _hide(self) -> None:
        self.events.append("hide")

    def _update_icon(self) -> None:
        self.events.append("icon")
        self._icon_valid = True

    def _update_title(self) -> None:
        self.events.append(("title", self.title))

    def _update_menu(self) -> None:
        self.events.append("menu")

    def _run(self) -> None:
        self._mark_ready()
        self.stopped.wait(30)  # the "UI loop"

    def _stop(self) -> None:
        self.stopped.set()

    # what a user does
    def item(self, label: str) -> Any:
        return next(i for i in self.menu.items if i.text == label)

    def click(self, label: str) -> None:
        item = self.item(label)
        assert item.enabled, f"{label} is disabled"
        self._handler(item)()

    def labels(self) -> list[str]:
        return [i.text for i in self.menu.items if i is not pystray.Menu.SEPARATOR]


class AlreadyRunning(CxError):
    def __init__(self, pid: int) -> None:
        super().__init__(f"cxsync is already running (pid {pid})")
        self.pid = pid


class FakeSupervisor:
    """What the tray needs of cxsync.agent.supervisor.Supervisor."""

    instances: list["FakeSupervisor"] = []

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.calls: list[Any] = []
        self.state = "idle"
        self.outbox = 0
        self.fail_snapshot: Exception | None = None
        FakeSupervisor.instances.append(self)

    def start(self) -> None:
        self.calls.append("start")

    def stop(self, timeout: float = 10.0) -> list[str]:
        self.calls.append(("stop", timeout))
        self.stop_event.set()
        return []

    def pause(self) -> None:
        self.calls.append("pause")
        self.state = "paused"

    def resume(self) -> None:
        self.calls.append("resume")
        self.state = "idle"

    def sync_now(self) -> None:
        self.calls.append("sync-now")

    def snapshot(self) -> dict[str, Any]:
        if self.fail_snapshot is not None:
            raise self.fail_snapshot
        return {"state": self.state, "pid": os.getpid(), "messages": 10, "sessions": 2, "outbox": self.outbox,
                "last_push": None, "last_pull": None, "streams": {}, "last_error": None,
                "credential_backend": "memory", "target": "sqlite:/tmp/x.db"}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("CXSYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    for var in list(os.environ):
        if var.startswith("CXSYNC_") and var != "CXSYNC_HOME":
            monkeypatch.delenv(var)
    return load_config()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    FakeSupervisor.instances.clear()
    yield

    def leaked() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("cxsync-tray") and t.is_alive()]

    wait_until(lambda: not leaked(), timeout=5)


class TrayRun:
    """run_tray on a background thread (the test thread plays the user)."""

    def __init__(self, config: Config, factory: Callable[[Config], Any] = FakeSupervisor,
                 icon_base: type[RecordingIcon] = RecordingIcon, **kw: Any) -> None:
        self.icon_base = icon_base
        self.result: list[int] = []
        self.error: list[BaseException] = []
        self.kw = {"supervisor_factory": factory, "already_running": AlreadyRunning, "icon_cls": self.make_icon,
                   "refresh_interval": 0.05, "stop_budget": 1.5, **kw}
        self.config = config
        self.icon: RecordingIcon | None = None
        self.thread = threading.Thread(target=self._main, name="test-tray-ui", daemon=True)

    def make_icon(self, *args: Any, **kwargs: Any) -> RecordingIcon:
        self.icon = self.icon_base(*args, **kwargs)
        return self.icon

    def _main(self) -> None:
        try:
            self.result.append(tray_app.run_tray(self.config, **self.kw))
        except BaseException as exc:
            self.error.append(exc)

    def __enter__(self) -> "TrayRun":
        self.thread.start()
        # the icon shows at once as "not running"; the test starts once the agent's first state is drawn
        wait_until(lambda: self.icon is not None and self.icon.visible
                   and "Agent not running" not in self.icon.title)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive() and self.icon is not None:
            self.icon.stop()
        self.thread.join(5)

    def finished(self, timeout: float = 5.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run_tray did not return"
        if self.error:
            raise self.error[0]
        return self.result[0]

    @property
    def sup(self) -> FakeSupervisor:
        return FakeSupervisor.instances[-1]


def test_setup_starts_the_supervisor_and_shows_its_state(config: Config) -> None:
    with TrayRun(config) as run:
        icon = run.icon
        assert icon is not None and icon.visible and "show" in icon.events
        assert run.sup.calls == ["start"]
        assert icon.title == "cxsync — Up to date · 10 messages"
        expected = icons.render(model.view(run.sup.snapshot()).icon)
        assert icon.icon.tobytes() == expected.tobytes()
        assert icon.labels()[:2] == ["cxsync: Up to date", "10 messages in 2 sessions"]
        assert any(t.name == "cxsync-tray-refresh" for t in threading.enumerate())


def test_the_refresher_follows_the_agent_state(config: Config) -> None:
    with TrayRun(config) as run:
        icon = run.icon
        assert icon is not None
        before = icon.icon.tobytes()
        run.sup.state, run.sup.outbox = "offline", 3
        wait_until(lambda: icon.title == "cxsync — Offline — 3 events queued")
        assert icon.icon.tobytes() != before
        badge = model.view({"state": "offline", "outbox": 3}).icon
        assert badge.badge == "3" and icon.icon.tobytes() == icons.render(badge).tobytes()
        assert "Outbox: 3 events to push" in icon.labels()


def test_pause_then_resume_from_the_menu(config: Config) -> None:
    with TrayRun(config) as run:
        icon = run.icon
        assert icon is not None
        icon.click("Pause syncing")
        wait_until(lambda: "Resume syncing" in icon.labels())
        assert "pause" in run.sup.calls
        assert not icon.item("Sync now").enabled
        icon.click("Resume syncing")
        wait_until(lambda: "Pause syncing" in icon.labels())
        assert run.sup.calls[1:] == ["pause", "resume"]


def test_a_plain_click_runs_sync_now_or_resume_when_paused(config: Config) -> None:
    with TrayRun(config) as run:
        icon = run.icon
        assert icon is not None
        icon()  # the default action: what a left click does on bare X11
        wait_until(lambda: "sync-now" in run.sup.calls)
        run.sup.state = "paused"
        wait_until(lambda: "Resume syncing" in icon.labels())
        icon()
        wait_until(lambda: "resume" in run.sup.calls)
        assert run.sup.calls.count("sync-now") == 1


def test_disabled_actions_are_ignored_even_if_invoked(config: Config) -> None:
    with TrayRun(config) as run:
        run.sup.state = "paused"
        assert run.icon is not None
        wait_until(lambda: "Resume syncing" in run.icon.labels())  # type: ignore[union-attr]
        tray = run.icon.item("Sync now")
        tray(run.icon)  # as if a backend ignored `enabled`
        threading.Event().wait(0.2)
        assert "sync-now" not in run.sup.calls


def test_quit_hides_the_icon_then_stops_the_supervisor_within_its_budget(config: Config) -> None:
    with TrayRun(config, stop_budget=2.5) as run:
        assert run.icon is not None
        run.icon.click("Quit cxsync")
        assert run.finished() == 0
        assert run.icon.stopped.is_set()
        assert run.sup.calls[-1] == ("stop", 2.5)
        assert run.sup.calls.count(("stop", 2.5)) == 1


def test_the_agent_stopping_itself_closes_the_tray(config: Config) -> None:
    # `cxsync stop` through the control socket sets the supervisor's stop event
    with TrayRun(config) as run:
        run.sup.stop_event.set()
        assert run.finished() == 0
        assert run.icon is not None and run.icon.stopped.is_set()


def test_a_second_agent_makes_the_tray_a_remote_control(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    import cxsync.agent

    sent: list[str] = []
    remote_state = {"state": "syncing", "pid": 999, "messages": 5, "sessions": 1, "outbox": 0,
                    "target": "sqlite:/x"}
    status_mod = types.ModuleType("cxsync.agent.status")
    status_mod.collect = lambda cfg: dict(remote_state)  # type: ignore[attr-defined]
    control_mod = types.ModuleType("cxsync.agent.control")

    def send(paths: Any, command: str, timeout: float = 2.0) -> dict[str, Any]:
        assert paths == config.paths
        sent.append(command)
        return {"ok": True}

    control_mod.send = send  # type: ignore[attr-defined]
    for name, mod in (("status", status_mod), ("control", control_mod)):
        monkeypatch.setitem(sys.modules, f"cxsync.agent.{name}", mod)
        monkeypatch.setattr(cxsync.agent, name, mod, raising=False)

    def factory(cfg: Config) -> FakeSupervisor:
        sup = FakeSupervisor(cfg)
        sup.start = lambda: (_ for _ in ()).throw(AlreadyRunning(999))  # type: ignore[method-assign]
        return sup

    with TrayRun(config, factory=factory) as run:
        icon = run.icon
        assert icon is not None
        wait_until(lambda: icon.title.startswith("cxsync — Syncing"))
        icon.click("Pause syncing")
        wait_until(lambda: sent == ["pause"])
        icon.click("Sync now")
        wait_until(lambda: sent == ["pause", "sync-now"])
        remote_state["state"] = "not-running"
        wait_until(lambda: icon.title == "cxsync — Agent not running")
        assert not icon.item("Sync now").enabled
        icon.click("Quit tray (agent keeps running)")
        assert run.finished() == 0
    assert "stop" not in sent
    assert not any(isinstance(c, tuple) and c[0] == "stop" for c in run.sup.calls)


def test_an_agent_that_cannot_start_shows_why_and_quit_still_works(config: Config) -> None:
    def factory(cfg: Config) -> FakeSupervisor:
        sup = FakeSupervisor(cfg)

        def start() -> None:
            raise NoCredentials("no usable OS keyring", "run `cxsync login` or set CXSYNC_TOKEN")

        sup.start = start  # type: ignore[method-assign]
        return sup

    with TrayRun(config, factory=factory) as run:
        icon = run.icon
        assert icon is not None
        assert icon.title == "cxsync — Error: no usable OS keyring"
        assert "→ run `cxsync login` or set CXSYNC_TOKEN" in icon.labels()
        icon.click("Quit cxsync")
        assert run.finished() == 0


def test_a_failing_status_read_shows_an_error_and_the_tray_recovers(config: Config) -> None:
    with TrayRun(config) as run:
        icon = run.icon
        assert icon is not None
        run.sup.fail_snapshot = RuntimeError("database is locked")
        wait_until(lambda: icon.title.startswith("cxsync — Error: cannot read the agent's status"))
        run.sup.fail_snapshot = None
        wait_until(lambda: icon.title == "cxsync — Up to date · 10 messages")


def test_open_log_folder_and_open_config_hand_the_paths_to_the_desktop(config: Config,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    monkeypatch.setattr(tray_app, "open_path", lambda p: opened.append(p))
    with TrayRun(config) as run:
        assert run.icon is not None
        run.icon.click("Open log folder")
        run.icon.click("Open config")
        wait_until(lambda: len(opened) == 2)
    assert set(opened) == {config.paths.log_dir, config.paths.config_file}
    assert config.paths.log_dir.is_dir()


def test_open_path_runs_xdg_open_detached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "opened.txt"
    script = bin_dir / "xdg-open"
    script.write_text(f"#!/bin/sh\necho \"$1\" > {record}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    tray_app.open_path(tmp_path / "logs", platform="linux")
    assert record.read_text().strip() == str(tmp_path / "logs")


def test_open_path_without_xdg_open_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CxError) as info:
        tray_app.open_path(tmp_path, platform="linux")
    assert "xdg-open is not installed" in info.value.title


def test_no_display_variables_is_a_clear_error_pointing_at_cxsync_run(config: Config,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CxError) as info:
        tray_app.run_tray(config, supervisor_factory=FakeSupervisor, already_running=AlreadyRunning)
    err = info.value
    assert err.title.startswith("no display: cxsync tray needs a graphical session")
    assert err.hint == "run `cxsync run` for the headless agent"
    assert err.exit_code == EXIT_ERROR
    assert FakeSupervisor.instances == []
    tray_app.require_display("darwin", {})  # macOS and Windows always have a session to draw in
    tray_app.require_display("linux", {"WAYLAND_DISPLAY": "wayland-0"})


def test_an_unreachable_x_display_is_the_same_clear_error(tmp_path: Path) -> None:
    # pystray picks its backend at import time; Xlib then fails to connect — in a fresh interpreter
    code = textwrap.dedent("""
        from cxsync.tray import app
        from cxsync.sync.errors import CxError
        try:
            app.load_pystray()
        except CxError as e:
            print(e.title); print(e.hint)
        else:
            print("imported")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "PYSTRAY_BACKEND")}
    env.update(DISPLAY=":4242", CXSYNC_HOME=str(tmp_path), XAUTHORITY=str(tmp_path / "none"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    lines = out.stdout.strip().splitlines()
    assert lines and lines[0].startswith("no display: cxsync tray needs a graphical session"), out
    assert lines[1] == "run `cxsync run` for the headless agent"


def test_missing_pystray_names_the_tray_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pystray", None)
    with pytest.raises(CxError) as info:
        tray_app.load_pystray()
    assert info.value.hint == "pip install 'cxsync[tray]'"
    assert "pystray" in info.value.title


def test_sigterm_quits_cleanly_when_the_tray_owns_the_main_thread(config: Config) -> None:
    icon_box: list[RecordingIcon] = []
    sup_box: list[FakeSupervisor] = []
    handler_missing: list[bool] = []

    def make_icon(*args: Any, **kwargs: Any) -> RecordingIcon:
        icon_box.append(RecordingIcon(*args, **kwargs))
        return icon_box[0]

    def terminator() -> None:
        wait_until(lambda: icon_box and icon_box[0].visible)
        # only signal once our handler is in place: the default SIGTERM action would end pytest itself
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            handler_missing.append(True)
            icon_box[0].stop()
            return
        os.kill(os.getpid(), signal.SIGTERM)

    def factory(cfg: Config) -> FakeSupervisor:
        sup_box.append(FakeSupervisor(cfg))
        return sup_box[0]

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=terminator, name="test-terminator", daemon=True)
    t.start()
    code = tray_app.run_tray(config, supervisor_factory=factory, already_running=AlreadyRunning,
                             icon_cls=make_icon, refresh_interval=0.05, stop_budget=1.0)
    t.join(5)
    assert not handler_missing, "run_tray must handle SIGTERM while it owns the main thread"
    assert code == 0
    assert sup_box[0].calls[-1] == ("stop", 1.0), "SIGTERM must stop the supervisor, not just the icon"
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is restored"


def test_quit_while_the_agent_is_still_starting_stops_it_once_started(config: Config) -> None:
    release = threading.Event()

    class SlowStart(FakeSupervisor):
        def start(self) -> None:
            self.calls.append("start")
            release.wait(5)  # opening a large cache

    run = TrayRun(config, factory=SlowStart, stop_budget=3.0)
    run.thread.start()
    wait_until(lambda: FakeSupervisor.instances and "start" in FakeSupervisor.instances[-1].calls)
    assert run.icon is not None and run.icon.visible, "the icon shows before the agent has started"
    assert run.icon.title == "cxsync — Agent not running"
    run.icon.click("Quit cxsync")
    threading.Event().wait(0.1)
    assert run.thread.is_alive(), "run_tray waits for the start in progress"
    release.set()
    assert run.finished() == 0
    assert run.sup.calls == ["start", ("stop", 3.0)]


class X11Icon(RecordingIcon):
    """Looks like pystray's bare-X11 Icon, whose title becomes a Latin-1 WM_NAME."""


X11Icon.__module__ = "pystray._xorg"


def test_titles_are_latin1_safe_on_the_bare_x11_backend(config: Config) -> None:
    with TrayRun(config, icon_base=X11Icon) as run:
        assert run.icon is not None
        assert run.icon.title == "cxsync - Up to date · 10 messages"
        run.sup.state, run.sup.outbox = "offline", 4
        wait_until(lambda: run.icon.title == "cxsync - Offline - 4 events queued")  # type: ignore[union-attr]
        run.icon.title.encode("latin-1")  # what python-xlib does with it
