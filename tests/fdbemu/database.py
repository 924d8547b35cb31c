"""A client connection (``FDBDatabase*``) and what a transaction sends to the commit proxy.

Database options are defaults copied into each new (or reset) transaction; the watch count is per database,
as ``max_watches`` is in FoundationDB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from fdb import fdboptions as _opts

from .cluster import Cluster, Range
from .errors import INVALID_OPTION, INVALID_OPTION_VALUE, TRANSACTION_TIMED_OUT, EmuError
from .futures import NativeFuture

if TYPE_CHECKING:
    from .transaction import EmuTransaction

KEY_SIZE_LIMIT = 10_000
SYSTEM_KEY_SIZE_LIMIT = 30_000
VALUE_SIZE_LIMIT = 100_000
TRANSACTION_SIZE_LIMIT = 10_000_000
DEFAULT_BACKOFF = 0.01  # CLIENT_KNOBS->DEFAULT_BACKOFF
FUTURE_VERSION_RETRY_DELAY = 0.01
DEFAULT_MAX_BACKOFF = 1.0
INT_MAX = 2**31 - 1

TXN_OPTION_CODES = frozenset(v[0] for v in _opts.TransactionOption.values())
DB_OPTION_CODES = frozenset(v[0] for v in _opts.DatabaseOption.values())


@dataclass
class TxnOptions:
    timeout_ms: int = 0
    retry_limit: int = -1
    max_retry_delay: float = DEFAULT_MAX_BACKOFF
    size_limit: int = TRANSACTION_SIZE_LIMIT
    snapshot_ryw: bool = True
    bypass_unreadable: bool = False
    automatic_idempotency: bool = False
    commit_protection_disabled: bool = False
    ryw_disabled: bool = False
    read_system_keys: bool = False
    access_system_keys: bool = False
    next_write_no_conflict: bool = False


def _int_option(param: Optional[bytes], lo: int, hi: int) -> int:
    if param is None or len(param) != 8:
        raise EmuError(INVALID_OPTION_VALUE)
    (n,) = struct.unpack("<q", param)
    if not lo <= n <= hi:
        raise EmuError(INVALID_OPTION_VALUE)
    return int(n)


class EmuDatabase:
    """One client connection (``FDBDatabase*``): database options, transaction defaults, its watch count."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.defaults = TxnOptions()
        self.max_watches: Optional[int] = None  # None: the cluster's max_watches knob (default 10,000)
        self.outstanding_watches = 0

    def set_option(self, code: int, param: Optional[bytes]) -> int:
        if code not in DB_OPTION_CODES:
            return INVALID_OPTION
        d = self.defaults
        try:
            if code == 20:
                self.max_watches = _int_option(param, 0, 1_000_000)
            elif code in (26, 27):
                d.snapshot_ryw = code == 26
            elif code == 500:
                d.timeout_ms = _int_option(param, 0, INT_MAX)
            elif code == 501:
                d.retry_limit = _int_option(param, -1, INT_MAX)
            elif code == 502:
                d.max_retry_delay = _int_option(param, 0, INT_MAX) / 1000.0
            elif code == 503:
                d.size_limit = _int_option(param, 32, TRANSACTION_SIZE_LIMIT)
            elif code == 506:
                d.automatic_idempotency = True
            elif code == 700:
                d.bypass_unreadable = True
            elif code == 701:
                d.commit_protection_disabled = True
        except EmuError as e:
            return e.code
        return 0

    def create_transaction(self) -> "EmuTransaction":
        from .transaction import EmuTransaction

        return EmuTransaction(self)


class CommitRequest:
    """What the client sends to a commit proxy; finished (under the cluster lock) by the proxy."""

    __slots__ = ("txn", "read_version", "reads", "writes", "mutations", "watches", "vs_futures", "future",
                 "has_timeout", "idempotent", "cancelled")

    def __init__(self, txn: "EmuTransaction", read_version: Optional[int], reads: list[Range],
                 writes: list[Range], future: NativeFuture) -> None:
        self.txn = txn
        self.read_version = read_version
        self.reads = reads
        self.writes = writes
        self.mutations = txn.mutations
        self.watches = txn.watches
        self.vs_futures = txn.vs_futures
        self.future = future
        self.has_timeout = txn.options.timeout_ms > 0
        self.idempotent = txn.options.automatic_idempotency
        self.cancelled = False

    def finish(self, cluster: Cluster, code: int, version: int = -1, stamp: bytes = b"") -> None:
        txn = self.txn
        if txn.commit_request is self:
            txn.commit_request = None
        if code == 0:
            txn.committed_version = version
            for f in self.vs_futures:
                f.set_result(stamp)
            for rec in self.watches:
                cluster.arm_watch(rec)  # a watch is armed when its transaction commits
            self.future.set_result(None)
            return
        for f in self.vs_futures:
            f.set_error(code)
        for rec in self.watches:  # "the watch will be set with that error"
            if not rec.done:
                rec.done = True
                rec.future.set_error(code)
        if code == TRANSACTION_TIMED_OUT:
            txn._poison(code)
        self.future.set_error(code)

    def abort(self, cluster: Cluster, code: int) -> None:
        self.cancelled = True
        self.finish(cluster, code)
