"""cxsync.cache — the local apsw/FTS5 cache: schema, ``apply``, search, outbox and cursors.

Names are loaded on first use (PEP 562) so that ``cxsync status``, which needs only ``cxsync.cache.db``, does
not pay for importing the apply and codec machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxsync.cache.db import CacheError
    from cxsync.cache.search import Hit, QueryError
    from cxsync.cache.store import Cache, OutboxRow, open_cache

_LAZY = {
    "Cache": "cxsync.cache.store",
    "OutboxRow": "cxsync.cache.store",
    "open_cache": "cxsync.cache.store",
    "CacheError": "cxsync.cache.db",
    "Hit": "cxsync.cache.search",
    "QueryError": "cxsync.cache.search",
}

__all__ = ["Cache", "CacheError", "Hit", "OutboxRow", "QueryError", "open_cache"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cxsync.cache' has no attribute {name!r}")
