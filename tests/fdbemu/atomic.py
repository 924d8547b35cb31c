"""Atomic mutations, as ``fdbclient/Atomic.h`` applies them at the storage servers.

Each function maps the existing value (``None`` when absent) and the operand to the new value (``None`` clears).
``and``/``min`` are the ``_V2`` forms, which the client substitutes for API versions >= 510.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

from .errors import CLIENT_INVALID_OPERATION, EmuError

VALUE_SIZE_LIMIT = 100_000

ADD = 2
AND = 6
OR = 7
XOR = 8
APPEND_IF_FITS = 9
MAX = 12
MIN = 13
SET_VERSIONSTAMPED_KEY = 14
SET_VERSIONSTAMPED_VALUE = 15
BYTE_MIN = 16
BYTE_MAX = 17
MIN_V2 = 18
AND_V2 = 19
COMPARE_AND_CLEAR = 20

Existing = Optional[bytes]


def _fit(existing: bytes, n: int) -> bytes:
    """Truncate or zero-extend (little-endian: on the right) to n bytes."""
    return existing[:n].ljust(n, b"\x00")


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _add(existing: Existing, param: bytes) -> Existing:
    if not existing or not param:
        return param
    n = len(param)
    return ((_le(existing[:n]) + _le(param)) % (1 << (8 * n))).to_bytes(n, "little")


def _and_v2(existing: Existing, param: bytes) -> Existing:
    if existing is None or not param:
        return param
    e = _fit(existing, len(param))
    return bytes(a & b for a, b in zip(e, param))


def _or(existing: Existing, param: bytes) -> Existing:
    if not existing or not param:
        return param
    e = _fit(existing, len(param))
    return bytes(a | b for a, b in zip(e, param))


def _xor(existing: Existing, param: bytes) -> Existing:
    if not existing or not param:
        return param
    e = _fit(existing, len(param))
    return bytes(a ^ b for a, b in zip(e, param))


def _append_if_fits(existing: Existing, param: bytes) -> Existing:
    if not existing:
        return param
    if not param:
        return existing
    if len(existing) + len(param) > VALUE_SIZE_LIMIT:
        return existing  # silently not applied, as documented
    return existing + param


def _max(existing: Existing, param: bytes) -> Existing:
    if not existing or not param:
        return param
    e = _fit(existing, len(param))
    return param if _le(param) > _le(e) else e


def _min_v2(existing: Existing, param: bytes) -> Existing:
    if existing is None or not param:
        return param
    e = _fit(existing, len(param))
    return param if _le(param) < _le(e) else e


def _byte_min(existing: Existing, param: bytes) -> Existing:
    return param if existing is None else min(existing, param)


def _byte_max(existing: Existing, param: bytes) -> Existing:
    return param if existing is None else max(existing, param)


def _compare_and_clear(existing: Existing, param: bytes) -> Existing:
    return None if existing is not None and existing == param else existing


APPLY: dict[int, Callable[[Existing, bytes], Existing]] = {
    ADD: _add,
    AND: _and_v2,
    AND_V2: _and_v2,
    OR: _or,
    XOR: _xor,
    APPEND_IF_FITS: _append_if_fits,
    MAX: _max,
    MIN: _min_v2,
    MIN_V2: _min_v2,
    BYTE_MIN: _byte_min,
    BYTE_MAX: _byte_max,
    COMPARE_AND_CLEAR: _compare_and_clear,
}

VERSIONSTAMP_OPS = frozenset({SET_VERSIONSTAMPED_KEY, SET_VERSIONSTAMPED_VALUE})
VALID_OPS = frozenset(APPLY) | VERSIONSTAMP_OPS


def split_versionstamp_param(data: bytes) -> tuple[bytes, int]:
    """Strip the trailing 4-byte little-endian offset (API >= 520) and check the 10-byte stamp fits."""
    if len(data) < 4:
        raise EmuError(CLIENT_INVALID_OPERATION)
    (pos,) = struct.unpack("<i", data[-4:])
    body = data[:-4]
    if pos < 0 or pos + 10 > len(body):
        raise EmuError(CLIENT_INVALID_OPERATION)
    return body, pos


def fill_versionstamp(body: bytes, pos: int, stamp: bytes) -> bytes:
    return body[:pos] + stamp + body[pos + 10 :]
