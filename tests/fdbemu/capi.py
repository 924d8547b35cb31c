"""An in-process stand-in for ``libfdb_c``: the C functions the official binding's ``fdb/impl.py`` calls.

The binding talks to the library through ctypes: opaque pointers, out-parameters passed with ``byref`` and
error codes checked by ``errcheck``.  This module answers those calls from Python: pointers are integer
handles, out-parameters are filled through the ctypes objects behind ``byref`` (``CArgObject._obj``) and
result bytes are lent to the binding in ctypes buffers kept alive by their future.  ``impl.py`` itself runs
unchanged on top (see ``binding.py``).
"""

from __future__ import annotations

import ctypes
import itertools
import json
from typing import Any, Callable, Optional

from .cluster import cluster_for
from .errors import (
    API_VERSION_NOT_SUPPORTED,
    NETWORK_ALREADY_SETUP,
    NETWORK_NOT_SETUP,
    describe,
    error_predicate,
)
from .futures import NETWORK, NativeFuture
from .database import EmuDatabase
from .transaction import EmuTransaction

MIN_API_VERSION = 630
MAX_API_VERSION = 800
_ADDRESS = b"127.0.0.1:4500"


class CFunction:
    """A C entry point: carries the ``argtypes``/``restype``/``errcheck`` the binding assigns and honours
    ``errcheck`` the way ctypes does."""

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.__name__ = name
        self._fn = fn
        self.argtypes: Any = None
        self.restype: Any = None
        self.errcheck: Optional[Callable[..., Any]] = None

    def __call__(self, *args: Any) -> Any:
        result = self._fn(*args)
        if self.errcheck is not None:
            return self.errcheck(result, self, args)
        return result

    def __repr__(self) -> str:
        return f"<emulated libfdb_c function {self.__name__}>"


def _out(ref: Any) -> Any:
    """The ctypes object behind ``ctypes.byref(obj)``."""
    return ref._obj


def _lend(future: NativeFuture, data: bytes) -> int:
    """Copy ``data`` into a buffer owned by ``future``; returns its address."""
    buf = ctypes.create_string_buffer(data, max(1, len(data)))
    future.keepalive.append(buf)
    return ctypes.addressof(buf)


class EmulatedLibFDB:
    """The library object ``impl._capi`` (normally ``ctypes.CDLL("libfdb_c.so")``)."""

    def __init__(self) -> None:
        self.api_version: Optional[int] = None
        self._handles: dict[int, Any] = {}
        self._ids = itertools.count(0x7F0000001000, 16)  # pointer-like, never 0 (NULL)
        for name in dir(self):
            if name.startswith("fdb_"):
                setattr(self, name, CFunction(name, getattr(self, name)))

    def __repr__(self) -> str:
        return "<EmulatedLibFDB (fdbemu)>"

    # ---- handles -------------------------------------------------------------------------------------------

    def _put(self, obj: Any) -> int:
        h = next(self._ids)
        self._handles[h] = obj
        return h

    def _get(self, h: Any) -> Any:
        if not isinstance(h, int):  # create_database hands the binding a c_void_p, not its value
            h = h.value
        try:
            return self._handles[h]
        except KeyError:
            raise RuntimeError(f"fdbemu: use of a destroyed or unknown handle 0x{h or 0:x}") from None

    def _f(self, h: Any) -> NativeFuture:
        fut: NativeFuture = self._get(h)
        return fut

    def _future(self, f: NativeFuture) -> int:
        return self._put(f)

    def live_handles(self) -> int:
        return len(self._handles)

    def _release(self, h: Any, finalizer: Optional[Callable[[Any], None]] = None) -> None:
        # Called from __del__ (any thread, possibly inside an emulation lock): only enqueue, the network
        # thread does the work.
        if not isinstance(h, int):
            h = h.value
        NETWORK.call_soon(lambda: self._finish_release(h, finalizer))

    def _finish_release(self, h: int, finalizer: Optional[Callable[[Any], None]]) -> None:
        obj = self._handles.pop(h, None)
        if obj is not None and finalizer is not None:
            finalizer(obj)

    # ---- API version, errors, network ------------------------------------------------------------------------

    def fdb_select_api_version_impl(self, runtime_version: int, header_version: int) -> int:
        if self.api_version is not None and self.api_version != runtime_version:
            return 2201  # api_version_already_set
        if not MIN_API_VERSION <= runtime_version <= MAX_API_VERSION or header_version > MAX_API_VERSION:
            return API_VERSION_NOT_SUPPORTED
        if runtime_version > header_version:
            return 2202  # api_version_invalid
        self.api_version = runtime_version
        return 0

    def fdb_get_max_api_version(self) -> int:
        return MAX_API_VERSION

    def fdb_get_error(self, code: int) -> bytes:
        return describe(code)

    def fdb_error_predicate(self, predicate: int, code: int) -> int:
        return int(error_predicate(predicate, code))

    def fdb_network_set_option(self, option: int, value: Optional[bytes], length: int) -> int:
        return 0  # trace, TLS, knobs, buggify ...: accepted and ignored

    def fdb_setup_network(self) -> int:
        if NETWORK.is_setup:
            return NETWORK_ALREADY_SETUP
        NETWORK.is_setup = True
        return 0

    def fdb_run_network(self) -> int:
        if not NETWORK.is_setup:
            return NETWORK_NOT_SETUP
        NETWORK.run()
        return 0

    def fdb_stop_network(self) -> int:
        if not NETWORK.is_setup:
            return NETWORK_NOT_SETUP
        NETWORK.stop()
        return 0

    # ---- futures -------------------------------------------------------------------------------------------

    def fdb_future_destroy(self, f: int) -> None:
        # Destroying a pending future cancels it (an unwanted watch stops counting against max_watches).
        self._release(f, lambda fut: fut.cancel())

    def fdb_future_release_memory(self, f: int) -> None:
        fut = self._f(f)
        fut.released = True
        fut.keepalive.clear()

    def fdb_future_cancel(self, f: int) -> None:
        self._get(f).cancel()

    def fdb_future_is_ready(self, f: int) -> int:
        return int(self._get(f).is_ready())

    def fdb_future_block_until_ready(self, f: int) -> int:
        self._get(f).wait()
        return 0

    def fdb_future_set_callback(self, f: int, callback: Any, parameter: Any) -> int:
        self._get(f).add_callback(lambda: callback(parameter))
        return 0

    def fdb_future_get_error(self, f: int) -> int:
        return self._f(f).outcome()[0]

    def fdb_future_get_int64(self, f: int, out: Any) -> int:
        err, value = self._f(f).outcome()
        if not err:
            _out(out).value = value
        return err

    fdb_future_get_uint64 = fdb_future_get_int64

    def fdb_future_get_key(self, f: int, out_key: Any, out_length: Any) -> int:
        fut = self._f(f)
        err, value = fut.outcome()
        if not err:
            _out(out_key).contents = ctypes.c_byte.from_address(_lend(fut, value))
            _out(out_length).value = len(value)
        return err

    def fdb_future_get_value(self, f: int, out_present: Any, out_value: Any, out_length: Any) -> int:
        fut = self._f(f)
        err, value = fut.outcome()
        if not err:
            _out(out_present).value = int(value is not None)
            if value is not None:
                _out(out_value).contents = ctypes.c_byte.from_address(_lend(fut, value))
                _out(out_length).value = len(value)
            else:
                _out(out_length).value = 0
        return err

    def fdb_future_get_keyvalue_array(self, f: int, out_kvs: Any, out_count: Any, out_more: Any) -> int:
        fut = self._f(f)
        err, value = fut.outcome()
        if err:
            return err
        rows, more = value
        ptr = _out(out_kvs)
        if rows:
            struct_type = type(ptr)._type_  # impl.KeyValueStruct
            arr = (struct_type * len(rows))()
            base = _lend(fut, b"".join(k + v for k, v in rows))
            pointer_type = ctypes.POINTER(ctypes.c_byte)
            offset = 0
            for i, (k, v) in enumerate(rows):
                arr[i].key = ctypes.cast(base + offset, pointer_type)
                arr[i].key_length = len(k)
                offset += len(k)
                arr[i].value = ctypes.cast(base + offset, pointer_type)
                arr[i].value_length = len(v)
                offset += len(v)
            fut.keepalive.append(arr)
            ptr.contents = arr[0]
        _out(out_count).value = len(rows)
        _out(out_more).value = int(more)
        return err

    def fdb_future_get_key_array(self, f: int, out_keys: Any, out_count: Any) -> int:
        fut = self._f(f)
        err, keys = fut.outcome()
        if err:
            return err
        ptr = _out(out_keys)
        if keys:
            arr = (type(ptr)._type_ * len(keys))()  # impl.KeyStruct
            pointer_type = ctypes.POINTER(ctypes.c_byte)
            for i, k in enumerate(keys):
                arr[i].key = ctypes.cast(_lend(fut, k), pointer_type)
                arr[i].key_length = len(k)
            fut.keepalive.append(arr)
            ptr.contents = arr[0]
        _out(out_count).value = len(keys)
        return err

    def fdb_future_get_string_array(self, f: int, out_strings: Any, out_count: Any) -> int:
        fut = self._f(f)
        err, strings = fut.outcome()
        if err:
            return err
        if strings:
            arr = (ctypes.c_char_p * len(strings))(*strings)
            fut.keepalive.append(arr)
            _out(out_strings).contents = ctypes.c_char_p.from_buffer(arr)
        _out(out_count).value = len(strings)
        return err

    # ---- databases -----------------------------------------------------------------------------------------

    def fdb_create_database(self, cluster_file: Optional[bytes], out_database: Any) -> int:
        if not NETWORK.is_setup:
            return NETWORK_NOT_SETUP
        _out(out_database).value = self._put(EmuDatabase(cluster_for(cluster_file)))
        return 0

    def fdb_database_destroy(self, d: int) -> None:
        self._release(d)

    def _db(self, d: Any) -> EmuDatabase:
        db: EmuDatabase = self._get(d)
        return db

    def fdb_database_set_option(self, d: int, option: int, value: Optional[bytes], length: int) -> int:
        return self._db(d).set_option(option, None if value is None else bytes(value[:length]))

    def fdb_database_create_transaction(self, d: int, out_transaction: Any) -> int:
        _out(out_transaction).value = self._put(self._db(d).create_transaction())
        return 0

    def fdb_database_open_tenant(self, d: int, name: Any, length: int, out_tenant: Any) -> int:
        return 0  # FDB 8.0 has no tenants: the binding returns None whatever happens here

    def fdb_database_get_client_status(self, d: int) -> int:
        db = self._db(d)
        status = {"Healthy": True, "ClusterID": "fdbemu", "Connections": [{"Address": _ADDRESS.decode(),
                  "Status": "connected"}], "Emulated": True, "ClusterFile": db.cluster.name}
        return self._future(NativeFuture.ready("key", json.dumps(status).encode()))

    def fdb_tenant_create_transaction(self, t: int, out_transaction: Any) -> int:
        return 2108  # unsupported_operation

    def fdb_tenant_destroy(self, t: int) -> None:
        return None

    def fdb_tenant_get_id(self, t: int) -> int:
        return self._future(NativeFuture.failed("int64", 2108))

    # ---- transactions --------------------------------------------------------------------------------------

    def _txn(self, t: int) -> EmuTransaction:
        txn: EmuTransaction = self._get(t)
        return txn

    def fdb_transaction_destroy(self, t: int) -> None:
        self._release(t, lambda txn: txn.destroy())

    def fdb_transaction_cancel(self, t: int) -> None:
        self._txn(t).cancel()

    def fdb_transaction_reset(self, t: int) -> None:
        self._txn(t).reset()

    def fdb_transaction_set_option(self, t: int, option: int, value: Optional[bytes], length: int) -> int:
        return self._txn(t).set_option(option, None if value is None else bytes(value[:length]))

    def fdb_transaction_set_read_version(self, t: int, version: int) -> None:
        self._txn(t).set_read_version(int(version))

    def fdb_transaction_get_read_version(self, t: int) -> int:
        return self._future(self._txn(t).get_read_version())

    def fdb_transaction_get(self, t: int, key: bytes, length: int, snapshot: int) -> int:
        return self._future(self._txn(t).get(bytes(key[:length]), bool(snapshot)))

    def fdb_transaction_get_key(self, t: int, key: bytes, length: int, or_equal: int, offset: int,
                                snapshot: int) -> int:
        return self._future(self._txn(t).get_key(bytes(key[:length]), bool(or_equal), int(offset), bool(snapshot)))

    def fdb_transaction_get_range(self, t: int, begin: bytes, begin_length: int, begin_or_equal: int,
                                  begin_offset: int, end: bytes, end_length: int, end_or_equal: int,
                                  end_offset: int, limit: int, target_bytes: int, mode: int, iteration: int,
                                  snapshot: int, reverse: int) -> int:
        return self._future(self._txn(t).get_range(
            bytes(begin[:begin_length]), bool(begin_or_equal), int(begin_offset), bytes(end[:end_length]),
            bool(end_or_equal), int(end_offset), int(limit), int(target_bytes), int(mode), int(iteration),
            bool(snapshot), bool(reverse)))

    def fdb_transaction_get_estimated_range_size_bytes(self, t: int, begin: bytes, begin_length: int, end: bytes,
                                                       end_length: int) -> int:
        return self._future(self._txn(t).estimated_range_size(bytes(begin[:begin_length]), bytes(end[:end_length])))

    def fdb_transaction_get_range_split_points(self, t: int, begin: bytes, begin_length: int, end: bytes,
                                               end_length: int, chunk_size: int) -> int:
        return self._future(self._txn(t).range_split_points(
            bytes(begin[:begin_length]), bytes(end[:end_length]), int(chunk_size)))

    def fdb_transaction_get_range_split_points_with_limit(self, t: int, begin: bytes, begin_length: int,
                                                          end: bytes, end_length: int, chunk_size: int,
                                                          limit: int) -> int:
        return self._future(self._txn(t).range_split_points(
            bytes(begin[:begin_length]), bytes(end[:end_length]), int(chunk_size), int(limit)))

    def fdb_transaction_get_addresses_for_key(self, t: int, key: bytes, length: int) -> int:
        self._txn(t)
        return self._future(NativeFuture.ready("strings", [_ADDRESS]))

    def fdb_transaction_set(self, t: int, key: bytes, key_length: int, value: bytes, value_length: int) -> None:
        self._txn(t).set(bytes(key[:key_length]), bytes(value[:value_length]))

    def fdb_transaction_clear(self, t: int, key: bytes, length: int) -> None:
        self._txn(t).clear(bytes(key[:length]))

    def fdb_transaction_clear_range(self, t: int, begin: bytes, begin_length: int, end: bytes,
                                    end_length: int) -> None:
        self._txn(t).clear_range(bytes(begin[:begin_length]), bytes(end[:end_length]))

    def fdb_transaction_atomic_op(self, t: int, key: bytes, key_length: int, param: bytes, param_length: int,
                                  operation: int) -> None:
        self._txn(t).atomic_op(bytes(key[:key_length]), bytes(param[:param_length]), int(operation))

    def fdb_transaction_add_conflict_range(self, t: int, begin: bytes, begin_length: int, end: bytes,
                                           end_length: int, kind: int) -> int:
        return self._txn(t).add_conflict_range(bytes(begin[:begin_length]), bytes(end[:end_length]), int(kind))

    def fdb_transaction_watch(self, t: int, key: bytes, length: int) -> int:
        return self._future(self._txn(t).watch(bytes(key[:length])))

    def fdb_transaction_commit(self, t: int) -> int:
        return self._future(self._txn(t).commit())

    def fdb_transaction_get_committed_version(self, t: int, out_version: Any) -> int:
        _out(out_version).value = self._txn(t).get_committed_version()
        return 0

    def fdb_transaction_get_approximate_size(self, t: int) -> int:
        return self._future(self._txn(t).get_approximate_size())

    def fdb_transaction_get_versionstamp(self, t: int) -> int:
        return self._future(self._txn(t).get_versionstamp())

    def fdb_transaction_on_error(self, t: int, code: int) -> int:
        return self._future(self._txn(t).on_error(int(code)))


LIB = EmulatedLibFDB()
