"""pystray's bare-X11 (XEmbed) icon, made safe for a multi-threaded app.

pystray 0.19's ``_xorg.Icon`` runs its X event loop on the thread that called ``run()`` and hands ``_show``,
``_hide``, ``_update_icon``, ``_update_title`` and ``_stop`` to that loop by sending itself a ClientMessage —
over the *same* python-xlib connection, from whatever thread asked.  python-xlib's locking does not survive
that: under trayer we saw, one run in a few, a title that never reached the server, a UI loop dead-locked waiting
for a reply that another thread had taken, and a ``stop()`` whose DestroyNotify never came, so the process
never exited.  ``X11Icon`` fixes that without touching the drawing code:

- only the UI loop's thread uses the main connection; other threads wake it through a second connection of
  their own (``_waker``), one request at a time;
- the loop also ends right after running ``_stop``, instead of only on a DestroyNotify for its window;
- the icon asks to be docked only when it is not docked (pystray re-docked on every icon change);
- the icon window selects ButtonPress events, so a click runs the default action (pystray 0.19 registers a
  handler for them but never asks the server for them: under trayer a click did nothing);
- the image keeps its aspect ratio in a slot that is not square (pystray stretched it).

Importing this module connects to the X display (through pystray's backend): call ``icon_class`` only once a
display is known to be there.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable


def icon_class(pystray: Any) -> Any:
    """The backend's Icon class, replaced by ``X11Icon`` when the backend is pystray's bare-X11 one."""
    base = pystray.Icon
    needed = ("_events", "_dock_window", "_stop", "_assert_docked", "_rewrite_implementation", "_mainloop")
    if base.__module__ != "pystray._xorg" or not all(hasattr(base, a) for a in needed):
        return base
    import Xlib.display
    import Xlib.protocol.event
    import Xlib.X

    class X11Icon(base):  # type: ignore[misc, valid-type]
        _cx_stopping = False
        _cx_loop_done = False

        def _rewrite_implementation(self, *methods: Callable[[], None]) -> None:
            """pystray's scheme — these methods run on the UI thread, the caller waits for them — but the wake-up
            travels over a connection that only the waking threads use, and the wait ends if the loop does."""
            self._waker: Any = None
            self._waker_lock = threading.Lock()  # one call in flight: its result cannot go to another caller
            self._pending: tuple[threading.Event, list[Any]] | None = None
            atoms = [self._display.intern_atom(f"_PYSTRAY_{m.__name__.upper()}") for m in methods]
            handlers: dict[int, Callable[[], None]] = {}

            def on_ui_thread(method: Callable[[], None]) -> Callable[[], None]:
                def run() -> None:
                    try:
                        method()
                        result: Any = True
                    except BaseException:
                        result = sys.exc_info()
                    pending = self._pending
                    if pending is not None:
                        pending[1].append(result)
                        pending[0].set()
                return run

            def dispatcher(method: Callable[[], None], atom: int) -> Callable[[], None]:
                def call() -> None:
                    ui = getattr(self, "_thread", None)  # set by pystray once its loop runs
                    if ui is not None and threading.current_thread().ident == ui.ident:
                        method()
                        return
                    with self._waker_lock:
                        if self._cx_loop_done:
                            return  # the icon is gone; nothing left to update
                        done = threading.Event()
                        box: list[Any] = []
                        self._pending = (done, box)
                        try:
                            self._wake(atom)
                            while not done.wait(1.0):
                                if self._cx_loop_done:
                                    return
                        finally:
                            self._pending = None
                    if box and box[0] is not True:
                        raise box[0][1].with_traceback(box[0][2])
                return call

            for method, atom in zip(methods, atoms):
                handlers[atom] = on_ui_thread(method)
                setattr(self, method.__name__, dispatcher(method, atom))

            def on_client_message(event: Any) -> None:
                handlers.get(event.client_type, lambda: None)()

            self._message_handlers[Xlib.X.ClientMessage] = on_client_message

        def _wake(self, atom: int) -> None:
            """Send the UI loop's window a ClientMessage over our own connection (caller holds the lock)."""
            if self._waker is None:
                self._waker = Xlib.display.Display()
            window = self._waker.create_resource_object("window", self._window.id)
            window.send_event(Xlib.protocol.event.ClientMessage(
                window=window, client_type=atom, data=(32, (Xlib.X.CurrentTime, 0, 0, 0, 0))),
                event_mask=Xlib.X.NoEventMask)
            self._waker.flush()

        def _create_window(self) -> Any:
            window = super()._create_window()
            window.change_attributes(event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask
                                     | Xlib.X.ButtonPressMask)
            return window

        def _assert_icon_data(self, width: int, height: int) -> None:
            current: Any = getattr(self, "_icon_data", None)
            if current and current.size == (width, height):
                return
            from cxsync.tray.icons import fit

            data: Any = fit(self._icon, width, height)
            data.tostring = data.tobytes  # what pystray's put_pil_image calls
            self._icon_data = data

        def _assert_docked(self) -> None:
            if not self._systray_manager:
                self._dock_window()
            assert self._systray_manager

        def _stop(self) -> None:  # runs on the UI thread
            self._cx_stopping = True
            super()._stop()

        def _mainloop(self) -> None:
            try:
                for event in self._events():
                    if event.type == Xlib.X.DestroyNotify and event.window == self._window:
                        break
                    self._message_handlers.get(event.type, lambda e: None)(event)
                    if self._cx_stopping:
                        break
            except Exception:
                self._log.error("An error occurred in the main loop", exc_info=True)
            finally:
                self._cx_loop_done = True  # a caller still waiting gives up within a second

    return X11Icon
