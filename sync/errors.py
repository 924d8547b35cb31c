"""The one error root: every failure a user can act on has a title, a hint and a documented exit code.

A leaf module (it imports nothing of cxsync), so that ``cache``, ``sync`` and ``agent`` all raise from it and the CLI
catches by type, never by class name or message text.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_CREDENTIALS = 4


class CxError(Exception):
    """A failure the user can act on.  ``title`` says what went wrong, ``hint`` what to do about it."""

    exit_code = EXIT_ERROR
    default_hint = ""

    def __init__(self, title: str, hint: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.hint = hint or self.default_hint


class UsageError(CxError):
    exit_code = EXIT_USAGE


class ConfigError(CxError):
    exit_code = EXIT_USAGE


class AgentNotRunning(CxError):
    exit_code = EXIT_NOT_RUNNING


class NoCredentials(CxError):
    exit_code = EXIT_NO_CREDENTIALS


class InvalidValue(UsageError, ValueError):
    """A name, cursor or setting that breaks its rule (also a ``ValueError``, for callers that validate)."""
