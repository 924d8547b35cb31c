"""A transaction's own writes, as the read-your-writes layer sees them.

Point entries are either a known value (``None`` = cleared), pending atomic operations on a value the
transaction has not read, or unreadable (a versionstamped value).  Cleared ranges hide storage; versionstamped
keys make a whole key range unreadable, because their final key is only known at commit.
"""

from __future__ import annotations

import bisect
from typing import Optional

from . import atomic

KNOWN = 0
OPS = 1
UNREADABLE = 2


class Entry:
    __slots__ = ("kind", "value", "ops")

    def __init__(self, kind: int, value: Optional[bytes] = None, ops: Optional[list[tuple[int, bytes]]] = None):
        self.kind = kind
        self.value = value  # KNOWN: the value; UNREADABLE: the versionstamped value without its stamp (bypass)
        self.ops = ops or []

    def resolve(self, base: Optional[bytes]) -> Optional[bytes]:
        """The value after applying pending atomic ops to ``base`` (the value at the read version)."""
        value = base
        for op, param in self.ops:
            value = atomic.APPLY[op](value, param)
        return value


class WriteMap:
    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.keys: list[bytes] = []  # sorted keys of ``entries``
        self.cleared: list[tuple[bytes, bytes]] = []  # sorted, disjoint
        self._begins: list[bytes] = []  # the begin keys of ``cleared``
        self.unreadable_ranges: list[tuple[bytes, bytes]] = []

    def is_empty(self) -> bool:
        return not self.entries and not self.cleared and not self.unreadable_ranges

    def is_cleared(self, key: bytes) -> bool:
        i = bisect.bisect_right(self._begins, key) - 1  # the only candidate: the last range starting <= key
        return i >= 0 and key < self.cleared[i][1]

    def lookup(self, key: bytes) -> Optional[Entry]:
        """The local state of ``key``, or None when storage decides."""
        entry = self.entries.get(key)
        if entry is not None:
            return entry
        if self.is_cleared(key):
            return Entry(KNOWN, None)
        return None

    def _put(self, key: bytes, entry: Entry) -> None:
        if key not in self.entries:
            bisect.insort(self.keys, key)
        self.entries[key] = entry

    def set(self, key: bytes, value: Optional[bytes]) -> None:
        self._put(key, Entry(KNOWN, value))

    def set_unreadable(self, key: bytes, raw: bytes) -> None:
        self._put(key, Entry(UNREADABLE, raw))

    def atomic(self, key: bytes, op: int, param: bytes) -> None:
        entry = self.lookup(key)
        if entry is None:
            self._put(key, Entry(OPS, ops=[(op, param)]))
        elif entry.kind == KNOWN:
            self._put(key, Entry(KNOWN, atomic.APPLY[op](entry.value, param)))
        elif entry.kind == OPS:
            entry.ops.append((op, param))
        # UNREADABLE stays unreadable

    def clear_range(self, begin: bytes, end: bytes) -> None:
        i, j = bisect.bisect_left(self.keys, begin), bisect.bisect_left(self.keys, end)
        for k in self.keys[i:j]:
            del self.entries[k]
        del self.keys[i:j]
        merged: list[tuple[bytes, bytes]] = []
        for b, e in sorted(self.cleared + [(begin, end)]):
            if merged and b <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((b, e))
        self.cleared = merged
        self._begins = [b for b, _ in merged]

    def keys_in(self, begin: bytes, end: bytes, reverse: bool) -> list[bytes]:
        i, j = bisect.bisect_left(self.keys, begin), bisect.bisect_left(self.keys, end)
        ks = self.keys[i:j]
        if reverse:
            ks.reverse()
        return ks

    def dependent_segments(self, begin: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """The parts of [begin, end) a read really depends on: RYW adds no read conflict where the transaction
        itself set or cleared the value (only where storage, or a pending atomic op on it, decided)."""
        own = [(max(b, begin), min(e, end)) for b, e in self.cleared if b < end and begin < e]
        own += [(k, k + b"\x00") for k in self.keys_in(begin, end, False) if self.entries[k].kind != OPS]
        out: list[tuple[bytes, bytes]] = []
        cursor = begin
        for b, e in sorted(own):
            if b > cursor:
                out.append((cursor, b))
            cursor = max(cursor, e)
        if cursor < end:
            out.append((cursor, end))
        return out

    def unreadable_in(self, begin: bytes, end: bytes) -> bool:
        if begin >= end:
            return False
        for b, e in self.unreadable_ranges:
            if b < end and begin < e:
                return True
        return any(self.entries[k].kind == UNREADABLE for k in self.keys_in(begin, end, False))

    def key_unreadable(self, key: bytes) -> bool:
        entry = self.entries.get(key)
        if entry is not None and entry.kind == UNREADABLE:
            return True
        return any(b <= key < e for b, e in self.unreadable_ranges)
