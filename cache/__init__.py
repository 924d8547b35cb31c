"""cxsync.cache."""
