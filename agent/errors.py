"""One error hierarchy for everything the CLI reports: a title, a hint, and a documented exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_CREDENTIALS = 4


class CxError(Exception):
    """A failure the user can act on.  ``title`` says what went wrong, ``hint`` what to do about it."""

    exit_code = EXIT_ERROR

    def __init__(self, title: str, hint: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.hint = hint


class UsageError(CxError):
    exit_code = EXIT_USAGE


class ConfigError(CxError):
    exit_code = EXIT_USAGE


class AgentNotRunning(CxError):
    exit_code = EXIT_NOT_RUNNING


class NoCredentials(CxError):
    exit_code = EXIT_NO_CREDENTIALS
