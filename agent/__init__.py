"""cxsync.agent."""
