"""The one set of name rules, and the ``Identity`` they name.

A leaf module (it imports nothing of cxsync but the error root), light enough for ``cxsync status``: the config,
the event codec, the key layout and the log adapters all validate with these rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxsync.sync.errors import InvalidValue

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
STREAM_RE = re.compile(r"^(team|u/[A-Za-z0-9._@+-]{1,128}|p/[A-Za-z0-9._-]{1,128})$")
NAME_RULE = "use 1-128 characters from A-Z a-z 0-9 . _ @ + -, starting with a letter or digit"
STREAM_RULE = "streams are 'u/<user>', 'team' or 'p/<project>'"


@dataclass(frozen=True)
class Identity:
    """Who produced an event: the tenant (organisation), the user, and the machine."""

    tenant: str
    user: str
    machine: str


def validate_name(kind: str, value: str) -> str:
    """Tenant, user and machine names: short, no separators, nothing that could escape a key prefix."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidValue(f"invalid {kind} name {value!r}: {NAME_RULE}")
    return value


def validate_stream(stream: str) -> str:
    if not isinstance(stream, str) or not STREAM_RE.match(stream):
        raise InvalidValue(f"invalid stream {stream!r}: expected 'u/<user>', 'team' or 'p/<project>'")
    return stream
