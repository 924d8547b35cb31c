"""FoundationDB error codes the emulated ``libfdb_c`` produces, and how the client classifies them.

Codes, descriptions and the retry classification follow ``flow/error_definitions.h``,
``fdb_c.cpp::fdb_error_predicate`` and ``NativeAPI Transaction::onError`` of FoundationDB 7.3/8.0.
"""

from __future__ import annotations

DESCRIPTIONS: dict[int, str] = {
    0: "Success",
    1000: "Operation failed",
    1004: "Operation timed out",
    1007: "Transaction is too old to perform reads or be committed",
    1009: "Request for future version",
    1020: "Transaction not committed due to conflict with another transaction",
    1021: "Transaction may or may not have committed",
    1025: "Operation aborted because the transaction was cancelled",
    1031: "Operation aborted because the transaction timed out",
    1032: "Too many watches currently set",
    1034: "Watches cannot be set if read your writes is disabled",
    1036: "Read or wrote an unreadable key",
    1037: "Storage process does not have recent mutations",
    1038: "Database is locked",
    1039: "The protocol version of the cluster has changed",
    1042: "CommitProxy commit memory limit exceeded",
    1051: "Batch GRV request rate limit exceeded",
    1078: "GetReadVersion proxy memory limit exceeded",
    1101: "Asynchronous operation cancelled",
    1102: "Future has been released",
    1213: "Transaction tag is being throttled",
    1223: "Exceeded maximum proxy tag throttling duration",
    2000: "Invalid API call",
    2004: "Key outside legal range",
    2005: "Range begin key larger than end key",
    2006: "Option set with an invalid value",
    2007: "Option not valid in this context",
    2008: "Action not possible before the network is configured",
    2009: "Network can be configured only once",
    2010: "Transaction already has a read version set",
    2011: "Version not valid",
    2012: "Range limits not valid",
    2013: "Database name must be 'DB'",
    2015: "Future not ready",
    2017: "Operation issued while a commit was outstanding",
    2018: "Unrecognized atomic mutation type",
    2021: "Transaction is read-only and therefore does not have a commit version",
    2101: "Transaction exceeds byte limit",
    2102: "Key length exceeds limit",
    2103: "Value length exceeds limit",
    2108: "Operation is not supported",
    2200: "API version is not set",
    2201: "API version may be set only once",
    2202: "API version not valid",
    2203: "API version not supported",
    2210: "EXACT streaming mode requires limits, but none were given",
    4000: "An unknown error occurred",
    4100: "An internal error occurred",
}

# Named codes used by the emulation (the names are FoundationDB's).
TRANSACTION_TOO_OLD = 1007
FUTURE_VERSION = 1009
NOT_COMMITTED = 1020
COMMIT_UNKNOWN_RESULT = 1021
TRANSACTION_CANCELLED = 1025
TRANSACTION_TIMED_OUT = 1031
TOO_MANY_WATCHES = 1032
WATCHES_DISABLED = 1034
ACCESSED_UNREADABLE = 1036
CLUSTER_VERSION_CHANGED = 1039
OPERATION_CANCELLED = 1101
FUTURE_RELEASED = 1102
CLIENT_INVALID_OPERATION = 2000
KEY_OUTSIDE_LEGAL_RANGE = 2004
INVERTED_RANGE = 2005
INVALID_OPTION_VALUE = 2006
INVALID_OPTION = 2007
NETWORK_NOT_SETUP = 2008
NETWORK_ALREADY_SETUP = 2009
READ_VERSION_ALREADY_SET = 2010
VERSION_INVALID = 2011
RANGE_LIMITS_INVALID = 2012
FUTURE_NOT_SET = 2015
USED_DURING_COMMIT = 2017
INVALID_MUTATION_TYPE = 2018
NO_COMMIT_VERSION = 2021
TRANSACTION_TOO_LARGE = 2101
KEY_TOO_LARGE = 2102
VALUE_TOO_LARGE = 2103
API_VERSION_NOT_SUPPORTED = 2203
EXACT_MODE_WITHOUT_LIMITS = 2210

# fdb_error_predicate (fdb_c.cpp)
MAYBE_COMMITTED = frozenset({1021, 1039})
RETRYABLE_NOT_COMMITTED = frozenset({1020, 1007, 1009, 1038, 1078, 1042, 1051, 1037, 1213, 1223})

# Transaction::onError: these reset and back off exponentially (10 ms x random, doubling, capped) ...
BACKOFF_RETRY = frozenset({1020, 1021, 1038, 1042, 1078, 1037, 1051, 1213, 1223})
# ... these retry after min(FUTURE_VERSION_RETRY_DELAY, max_retry_delay) ...
SHORT_RETRY = frozenset({1007, 1009})
# ... and the multi-version client retries this one at once after switching clients.
IMMEDIATE_RETRY = frozenset({1039})

PREDICATE_RETRYABLE = 50000
PREDICATE_MAYBE_COMMITTED = 50001
PREDICATE_RETRYABLE_NOT_COMMITTED = 50002


def describe(code: int) -> bytes:
    """What ``fdb_get_error`` returns: the C string as bytes (ctypes ``c_char_p``)."""
    return DESCRIPTIONS.get(code, "Unknown error").encode()


def error_predicate(predicate: int, code: int) -> bool:
    if predicate == PREDICATE_RETRYABLE:
        return code in MAYBE_COMMITTED or code in RETRYABLE_NOT_COMMITTED
    if predicate == PREDICATE_MAYBE_COMMITTED:
        return code in MAYBE_COMMITTED
    if predicate == PREDICATE_RETRYABLE_NOT_COMMITTED:
        return code in RETRYABLE_NOT_COMMITTED
    return False


class EmuError(Exception):
    """An FDB error inside the emulation; the C layer turns it into an error code on a future or a return."""

    def __init__(self, code: int) -> None:
        super().__init__(code, DESCRIPTIONS.get(code, "Unknown error"))
        self.code = code
