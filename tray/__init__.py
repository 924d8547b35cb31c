"""cxsync.tray."""
