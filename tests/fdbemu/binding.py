"""Load the official binding's ``fdb/impl.py`` unchanged, with the emulated library as its ``_capi``.

``impl.py`` finds ``libfdb_c`` with ``ctypes.CDLL`` at import time.  We execute the installed source file as
module ``fdb.impl`` with one difference in its namespace: its ``import ctypes`` yields a copy of ``ctypes``
whose ``CDLL`` returns the emulated library for ``fdb_c``.  Nothing global is patched, and every line of the
binding - futures, ``transactional``, ranges, options, ``Database`` helpers - is the real one.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import sys
import types
from typing import Any

from .capi import LIB

_MARK = "__fdbemu__"


def _ctypes_view() -> types.ModuleType:
    real = sys.modules["ctypes"]
    view = types.ModuleType("ctypes")
    view.__dict__.update(real.__dict__)
    real_cdll = real.CDLL

    def CDLL(name: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - mirrors ctypes.CDLL
        if "fdb_c" in os.fspath(name):
            return LIB
        return real_cdll(name, *args, **kwargs)

    view.CDLL = CDLL  # type: ignore[attr-defined]
    return view


def _importer() -> Any:
    real_import = builtins.__import__

    def __import__(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        module = real_import(name, globals, locals, fromlist, level)
        if level == 0 and not fromlist and (name == "ctypes" or name.startswith("ctypes.")):
            return _ctypes_view()  # fresh each time so that ``ctypes.util`` & co. are present
        return module

    return __import__


def is_emulated(module: Any) -> bool:
    return bool(getattr(module, _MARK, False))


def load_impl() -> types.ModuleType:
    """Create ``fdb.impl`` from the installed binding source on top of the emulated ``libfdb_c``."""
    import fdb

    existing = sys.modules.get("fdb.impl")
    if existing is not None:
        if is_emulated(existing):
            return existing
        raise RuntimeError("fdbemu: the real fdb.impl (libfdb_c) is already loaded in this process")
    path = os.path.join(os.path.dirname(fdb.__file__), "impl.py")
    spec = importlib.util.spec_from_file_location("fdb.impl", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    namespace = dict(builtins.__dict__)
    namespace["__import__"] = _importer()
    module.__dict__["__builtins__"] = namespace
    setattr(module, _MARK, True)
    sys.modules["fdb.impl"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["fdb.impl"]
        raise
    fdb.impl = module  # what a normal ``import fdb.impl`` would bind
    assert module._capi is LIB, "impl.py did not pick up the emulated library"
    return module


__all__ = ["load_impl", "is_emulated"]
