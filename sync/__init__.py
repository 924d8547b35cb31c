"""cxsync.sync."""
