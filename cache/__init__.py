"""cxsync.cache — the local apsw/FTS5 cache: schema, ``apply``, search, outbox and cursors."""

from __future__ import annotations

from cxsync.cache.db import CacheError
from cxsync.cache.search import Hit, QueryError
from cxsync.cache.store import Cache, OutboxRow, open_cache

__all__ = ["Cache", "CacheError", "Hit", "OutboxRow", "QueryError", "open_cache"]
