"""The FoundationDB emulation (tests/fdbemu) against docs/design/foundationdb.md.

One test per binding fact and per semantic item 1-9 of the design note.  The official binding runs unchanged on
the emulated ``libfdb_c``; these tests assert the behaviour the cxsync adapter relies on, so that an emulation
bug shows up here and not as a mysterious adapter failure.
"""

from __future__ import annotations

import gc
import inspect
import os
import struct
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from tests.fdbemu import ENV_API_VERSION, FaultPlan, cluster_for, install, live_handles, open_client, reset_all
from tests.fdbemu.binding import is_emulated
from tests.fdbemu.capi import LIB

try:
    fdb = install()  # API 730 unless CXSYNC_FDB_API_VERSION says otherwise: one version per process
except RuntimeError as exc:  # another test module loaded the real libfdb_c first (a real-cluster run)
    pytest.skip(f"the emulation cannot be installed: {exc}", allow_module_level=True)
import fdb.tuple  # noqa: E402  (after the API version is selected, as real code does)

API_VERSION = fdb.get_api_version()


# ---- fixtures and helpers -----------------------------------------------------------------------------------


@pytest.fixture
def cluster_file(tmp_path: Any) -> Iterator[str]:
    reset_all()
    yield str(tmp_path / "fdb.cluster")
    reset_all()


@pytest.fixture
def db(cluster_file: str) -> Any:
    return fdb.open(cluster_file)


@pytest.fixture
def cluster(cluster_file: str, db: Any) -> Any:
    return cluster_for(cluster_file)


def error_code(fn: Callable[[], Any]) -> int:
    """The FDBError code ``fn`` raises (fails the test if it raises nothing)."""
    try:
        fn()
    except fdb.FDBError as e:
        return int(e.code)
    pytest.fail("expected an FDBError")


def ready_within(future: Any, timeout: float) -> bool:
    """Wait for a future through the binding's own on_ready (callbacks arrive on the network thread)."""
    ev = threading.Event()
    future.on_ready(lambda _f: ev.set())
    return ev.wait(timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def commit(tr: Any) -> None:
    tr.commit().wait()


# ---- binding facts ---------------------------------------------------------------------------------------


def test_api_version_selected_once_per_process_and_impl_is_the_official_code() -> None:
    assert install() is fdb  # idempotent for the same version
    other = 800 if API_VERSION == 730 else 730
    with pytest.raises(RuntimeError, match="already loaded"):
        fdb.api_version(other)
    with pytest.raises(RuntimeError, match="already loaded"):
        install(other)
    assert is_emulated(fdb.impl) and fdb.impl._capi is LIB
    # The Python layers are the installed binding's own files, not copies.
    package_dir = os.path.dirname(fdb.__file__)
    assert inspect.getsourcefile(fdb.impl.Transaction) == os.path.join(package_dir, "impl.py")
    assert fdb.tuple.__file__ == os.path.join(package_dir, "tuple.py")
    for name in ("FDBError", "Future", "Database", "Transaction", "KeyValue", "KeySelector", "open",
                 "transactional", "options", "StreamingMode", "predicates", "Subspace", "directory"):
        assert hasattr(fdb, name), name


_FRESH_PROCESS = """
import fdb
try:
    fdb.api_version({version})  # the real native layer: no libfdb_c here
    print("real libfdb_c")
    raise SystemExit(0)
except Exception:
    pass
from tests.fdbemu import install, cluster_for
assert install({version}) is fdb and fdb.get_api_version() == {version}
db = fdb.open("/nonexistent/fdb.cluster")
db[b"k"] = b"v"
assert db[b"k"] == b"v" and db.open_tenant(b"t") is None
assert cluster_for("/nonexistent/fdb.cluster").stats.commits == 1
print("ok")
"""


@pytest.mark.parametrize("version", [730, 800])
def test_install_works_in_a_fresh_process_even_after_a_failed_real_load(version: int) -> None:
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(ENV_API_VERSION, None)
    out = subprocess.run([sys.executable, "-c", _FRESH_PROCESS.format(version=version)], env=env, cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "real libfdb_c":
        pytest.skip("libfdb_c is installed here: the emulation is not needed")
    assert out.stdout.split() == ["ok"]


def test_reads_return_lazy_futures_and_value_behaves_as_bytes(db: Any) -> None:
    db[b"k"] = b"hello"
    tr = db.create_transaction()
    v = tr.get(b"k")
    assert isinstance(v, fdb.impl.Value) and isinstance(v, fdb.Future)
    assert v.is_ready() and v.wait() is v
    assert v == b"hello" and v.present() and bytes(v) == b"hello" and len(v) == 5
    assert v + b"!" == b"hello!" and v.startswith(b"he") and v[1:3] == b"el"
    missing = tr[b"nope"]
    assert not missing.present() and missing == None  # noqa: E711 - FutureString compares its value
    assert isinstance(tr.get_read_version().wait(), int)
    seen = []
    tr.get(b"k").on_ready(lambda f: seen.append(f.value))
    assert seen == [b"hello"]  # ready futures call back at once, in the calling thread
    kvs = list(tr.get_range(b"a", b"z"))
    assert [(kv.key, kv.value) for kv in kvs] == [(b"k", b"hello")]
    key, value = kvs[0]  # KeyValue unpacks
    assert (key, value) == (b"k", b"hello")


def test_write_errors_are_deferred_to_next_future_or_commit(db: Any) -> None:
    tr = db.create_transaction()
    tr.set(b"x" * 10_001, b"v")  # no exception here ...
    tr.set(b"ok", b"v")
    f = tr.get(b"ok")  # ... but on the next future-returning call
    assert error_code(f.wait) == 2102
    assert error_code(lambda: commit(tr)) == 2102
    assert db[b"ok"] is None  # nothing of the transaction was applied

    tr = db.create_transaction()
    tr.clear_range(b"b", b"a")  # inverted range: deferred too
    assert error_code(lambda: commit(tr)) == 2005
    tr = db.create_transaction()
    with pytest.raises(fdb.FDBError) as exc:  # conflict ranges fail at once (KeyRangeRef in fdb_c)
        tr.add_read_conflict_range(b"b", b"a")
    assert exc.value.code == 2005


def test_keys_and_values_must_be_bytes(db: Any) -> None:
    tr = db.create_transaction()
    for call in (lambda: tr.set("k", b"v"), lambda: tr.set(b"k", "v"), lambda: tr.get("k"),
                 lambda: tr.get(1), lambda: tr.clear("k"), lambda: tr.add(b"k", 1)):
        with pytest.raises(TypeError):
            call()
    tr.set(fdb.tuple.pack(("k",)), fdb.tuple.pack((1,)))
    tr.set(fdb.Subspace(("s",))["k"], b"v")  # objects with as_foundationdb_key are accepted
    commit(tr)


def test_tenants_are_gone_in_the_8_0_binding(db: Any) -> None:
    assert db.open_tenant(b"tenant") is None
    with pytest.raises(ImportError):
        import fdb.tenant_management  # noqa: F401


def test_same_cluster_file_shares_one_cluster_and_reset_all_isolates(cluster_file: str, tmp_path: Any) -> None:
    db = fdb.open(cluster_file)
    assert fdb.open(cluster_file) is db  # fdb.open caches one Database per path
    other_client = open_client(cluster_file)
    assert other_client is not db
    db[b"k"] = b"v"
    assert other_client[b"k"] == b"v"
    assert fdb.open(str(tmp_path / "other.cluster"))[b"k"] is None
    reset_all()
    assert fdb.open(cluster_file) is not db and fdb.open(cluster_file)[b"k"] is None


# ---- 1. one read version, read-your-writes, snapshot reads ---------------------------------------------------


def test_transaction_uses_one_read_version(db: Any, cluster_file: str) -> None:
    db[b"k"] = b"v1"
    other = open_client(cluster_file)
    tr = db.create_transaction()
    assert tr[b"k"] == b"v1"
    rv = tr.get_read_version().wait()
    other[b"k"] = b"v2"
    other[b"k2"] = b"new"
    assert tr[b"k"] == b"v1"
    assert [kv.key for kv in tr[b"k":b"l"]] == [b"k"]
    assert tr.get_read_version().wait() == rv
    assert db.create_transaction()[b"k"] == b"v2"


def test_read_your_writes(db: Any) -> None:
    db[b"a"] = b"1"
    db[b"c"] = b"3"
    db[b"n"] = struct.pack("<q", 40)
    tr = db.create_transaction()
    tr[b"b"] = b"2"
    del tr[b"a"]
    assert tr[b"b"] == b"2" and not tr[b"a"].present()
    assert [(kv.key, kv.value) for kv in tr[b"a":b"z"]] == [(b"b", b"2"), (b"c", b"3"), (b"n", struct.pack("<q", 40))]
    tr.add(b"n", struct.pack("<q", 2))  # atomic op over a value the transaction never read
    assert struct.unpack("<q", tr[b"n"].value)[0] == 42
    tr.clear_range(b"a", b"c")
    assert [kv.key for kv in tr[b"a":b"z"]] == [b"c", b"n"]
    assert tr.snapshot[b"c"] == b"3" and not tr.snapshot[b"b"].present()  # snapshot reads see own writes too
    tr2 = db.create_transaction()
    tr2.options.set_snapshot_ryw_disable()
    tr2[b"c"] = b"changed"
    assert tr2.snapshot[b"c"] == b"3" and tr2[b"c"] == b"changed"
    tr3 = db.create_transaction()
    tr3.options.set_read_your_writes_disable()
    tr3[b"c"] = b"changed"
    assert tr3[b"c"] == b"3"


def test_snapshot_read_adds_no_conflict(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    db[b"k"] = b"0"
    snap = db.create_transaction()
    assert snap.snapshot[b"k"] == b"0"
    assert [kv.key for kv in snap.snapshot.get_range(b"a", b"z")] == [b"k"]
    snap[b"out"] = b"1"
    plain = db.create_transaction()
    assert plain[b"k"] == b"0"
    plain[b"out2"] = b"1"
    other[b"k"] = b"changed"
    commit(snap)  # its reads were snapshot reads: no conflict
    assert error_code(lambda: commit(plain)) == 1020


# ---- 2. conflicts --------------------------------------------------------------------------------------


def test_conflict_only_when_read_range_written_after_read_version(db: Any, cluster_file: str, cluster: Any) -> None:
    other = open_client(cluster_file)
    db[b"k"] = b"before"  # committed before the reader's read version: never a conflict
    reader = db.create_transaction()
    assert reader[b"k"] == b"before"
    reader[b"w"] = b"1"
    other[b"unrelated"] = b"x"  # outside the read-conflict ranges
    commit(reader)

    reader = db.create_transaction()
    assert reader[b"k"] == b"before"
    reader[b"w"] = b"2"
    other[b"k"] = b"after"  # inside, after the read version
    assert error_code(lambda: commit(reader)) == 1020
    assert cluster.stats.conflicts == 1
    assert db[b"w"] == b"1"

    explicit = db.create_transaction()
    explicit.get_read_version().wait()
    explicit.add_read_conflict_key(b"e")
    explicit[b"w"] = b"3"
    writer = other.create_transaction()
    writer.add_write_conflict_key(b"e")  # a conflict range without a mutation still conflicts
    commit(writer)
    assert writer.get_committed_version() > 0
    assert error_code(lambda: commit(explicit)) == 1020

    own = db.create_transaction()
    own[b"mine"] = b"1"
    own.clear_range(b"r", b"s")
    assert own[b"mine"] == b"1" and list(own[b"r":b"s"]) == []  # reading its own writes ...
    other[b"mine"] = b"theirs"
    other[b"r1"] = b"theirs"
    commit(own)  # ... adds no read conflict there (RYW only conflicts where storage decided)
    assert db[b"mine"] == b"1" and db[b"r1"] is None

    partly_own = db.create_transaction()
    partly_own.clear_range(b"r", b"s")
    assert list(partly_own[b"q":b"t"]) == []
    other[b"s5"] = b"theirs"  # in the read range, outside the transaction's own clear
    assert error_code(lambda: commit(partly_own)) == 1020


def test_write_only_transactions_never_conflict(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    blind = db.create_transaction()
    rv = blind.get_read_version().wait()  # a read version alone is no read
    blind[b"k"] = b"blind"
    blind.add(b"n", b"\x01")
    blind.clear_range(b"r", b"s")
    for i in range(3):
        other[b"k"] = b"other%d" % i
        other[b"n"] = b"\x05"
    commit(blind)
    assert blind.get_committed_version() > rv
    assert db[b"k"] == b"blind" and db[b"n"] == b"\x06"


def test_limited_range_read_conflicts_only_on_scanned_span(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    for i in range(10):
        db[b"a%d" % i] = b"v"

    def limited_reader(reverse: bool) -> Any:
        tr = db.create_transaction()
        keys = [kv.key for kv in tr.get_range(b"a", b"b", limit=3, reverse=reverse)]
        assert keys == ([b"a9", b"a8", b"a7"] if reverse else [b"a0", b"a1", b"a2"])
        tr[b"out"] = b"1"
        return tr

    tr = limited_reader(reverse=False)
    other[b"a7"] = b"x"  # past the scanned span [a, a2]
    other[b"a3"] = b"x"  # just after the last key returned
    commit(tr)

    tr = limited_reader(reverse=False)
    other[b"a1"] = b"y"  # inside the scanned span
    assert error_code(lambda: commit(tr)) == 1020

    tr = limited_reader(reverse=True)
    other[b"a1"] = b"z"  # before the reverse scan's span [a7, b)
    commit(tr)
    tr = limited_reader(reverse=True)
    other[b"a8"] = b"z"
    assert error_code(lambda: commit(tr)) == 1020

    full = db.create_transaction()  # an unlimited read covers the whole [begin, end)
    assert len(list(full.get_range(b"a", b"b"))) == 10
    full[b"out"] = b"2"
    other[b"a99"] = b"z"
    assert error_code(lambda: commit(full)) == 1020


# ---- 3. limits ------------------------------------------------------------------------------------------


def test_key_too_large_2102(db: Any) -> None:
    tr = db.create_transaction()
    tr[b"k" * 10_000] = b"v"  # exactly the limit is fine
    commit(tr)
    tr = db.create_transaction()
    tr[b"k" * 10_001] = b"v"
    assert error_code(lambda: commit(tr)) == 2102
    tr = db.create_transaction()
    assert not tr[b"k" * 10_001].present()  # reading such a key is legal: it cannot exist
    tr.add(b"k" * 10_001, b"\x01")
    assert error_code(lambda: commit(tr)) == 2102
    tr = db.create_transaction()
    assert error_code(tr.watch(b"k" * 10_001).wait) == 2102


def test_value_too_large_2103(db: Any) -> None:
    tr = db.create_transaction()
    tr[b"v"] = b"x" * 100_000
    commit(tr)
    assert len(db[b"v"]) == 100_000
    tr = db.create_transaction()
    tr[b"v2"] = b"x" * 100_001
    assert error_code(lambda: commit(tr)) == 2103
    tr = db.create_transaction()
    tr.byte_max(b"v3", b"x" * 100_001)
    assert error_code(lambda: commit(tr)) == 2103


def test_transaction_too_large_2101_at_commit(db: Any) -> None:
    tr = db.create_transaction()
    chunk = b"x" * 99_990
    for i in range(101):  # 101 x ~100 kB > 10,000,000 bytes
        tr[b"big%03d" % i] = chunk
    assert tr.get_approximate_size().wait() > 10_000_000
    assert tr[b"big000"] == chunk  # the limit is checked at commit, not before
    assert error_code(lambda: commit(tr)) == 2101
    assert db[b"big000"] is None
    tr = db.create_transaction()
    tr.options.set_size_limit(1_000)
    tr[b"k"] = b"x" * 2_000
    assert error_code(lambda: commit(tr)) == 2101


def test_transaction_too_old_1007_after_5s(db: Any, cluster: Any) -> None:
    db[b"k"] = b"v"
    tr = db.create_transaction()
    assert tr[b"k"] == b"v"
    cluster.advance_time(4.9)  # the injectable clock: no real sleep
    assert tr[b"k2"] == None  # noqa: E711 - still within 5 s of the read version
    cluster.advance_time(0.2)
    assert error_code(tr[b"k3"].wait) == 1007
    tr[b"w"] = b"1"
    assert error_code(lambda: commit(tr)) == 1007  # it has read conflicts older than the MVCC window
    tr.on_error(1007).wait()  # retryable: a fresh read version
    assert tr[b"k"] == b"v"
    tr[b"w"] = b"2"
    commit(tr)
    blind = db.create_transaction()
    blind.get_read_version().wait()
    cluster.advance_time(6)
    blind[b"w"] = b"3"
    commit(blind)  # without reads, an old read version does not matter
    assert cluster.stats.too_old == 2


# ---- 4. on_error ----------------------------------------------------------------------------------------


RETRYABLE = (1020, 1021, 1007, 1009, 1037, 1038, 1042, 1078, 1213, 1039)


def test_on_error_retries_retryable_codes_with_backoff_capped_by_max_retry_delay(db: Any, cluster: Any) -> None:
    for code in RETRYABLE:
        tr = db.create_transaction()
        tr[b"pending"] = b"x"
        tr.on_error(code).wait()  # resets the transaction ...
        assert not tr[b"pending"].present(), code  # ... dropping its writes
        assert fdb.predicates.is_retryable(fdb.FDBError(code)), code
    assert fdb.predicates.is_maybe_committed(fdb.FDBError(1021))
    assert fdb.predicates.is_maybe_committed(fdb.FDBError(1039))
    assert not fdb.predicates.is_maybe_committed(fdb.FDBError(1020))

    cluster.backoff_scale = 0.0  # do not sleep; Stats.backoffs keeps the computed delays
    tr = db.create_transaction()
    tr.options.set_max_retry_delay(40)  # ms
    del cluster.stats.backoffs[:]
    for _ in range(12):
        tr.on_error(1020).wait()
    delays = cluster.stats.backoffs
    caps = [min(0.01 * 2**i, 0.04) for i in range(12)]  # 10 ms x random, doubling, capped
    assert all(0 <= d <= cap for d, cap in zip(delays, caps)), delays
    assert max(delays[3:]) > 0.02  # the cap, not the first step, bounds the later delays

    tr = db.create_transaction()
    del cluster.stats.backoffs[:]
    for _ in range(12):
        tr.on_error(1021).wait()
    assert max(cluster.stats.backoffs) <= 1.0 and max(cluster.stats.backoffs) > 0.25  # default cap: 1 s

    del cluster.stats.backoffs[:]
    tr.on_error(1007).wait()
    tr.options.set_max_retry_delay(4)
    tr.on_error(1009).wait()
    assert cluster.stats.backoffs == [0.01, 0.004]  # too_old/future_version: min(10 ms, max_retry_delay)

    cluster.backoff_scale = 1.0  # and the future really is delayed on the network thread
    tr = db.create_transaction()
    t0 = time.monotonic()
    tr.on_error(1009).wait()
    assert time.monotonic() - t0 >= 0.009


def test_on_error_reraises_non_retryable(db: Any) -> None:
    for code in (2102, 2101, 2103, 1025, 2017, 4100, 1031):
        tr = db.create_transaction()
        assert error_code(tr.on_error(code).wait) == code
        assert error_code(tr[b"k"].wait) == 1025  # the transaction is cancelled until reset()
        tr.reset()
        assert not tr[b"k"].present()
    tr = db.create_transaction()
    tr.options.set_retry_limit(2)
    tr.on_error(1020).wait()
    tr.on_error(1020).wait()
    assert error_code(tr.on_error(1020).wait) == 1020  # the retry limit turns a retryable error final
    with pytest.raises(ValueError):
        tr.on_error(ValueError("not an FDBError")).wait()


def test_1031_timeout_not_retryable(db: Any, cluster: Any) -> None:
    tr = db.create_transaction()
    tr.options.set_timeout(100)
    tr[b"k"] = b"v"
    cluster.advance_time(0.2)
    assert error_code(tr[b"k"].wait) == 1031
    assert error_code(tr.on_error(1031).wait) == 1031
    assert error_code(lambda: commit(tr)) == 1031
    tr.reset()
    assert not tr[b"k"].present()

    tr = db.create_transaction()  # the timeout runs from the transaction's creation, not from set_timeout
    cluster.advance_time(0.2)
    tr.options.set_timeout(150)
    assert error_code(tr[b"k"].wait) == 1031

    db.options.set_transaction_timeout(50)  # the database default applies to new transactions
    tr = db.create_transaction()
    cluster.advance_time(0.1)
    assert error_code(tr.get_read_version().wait) == 1031
    db.options.set_transaction_timeout(0)

    # "the commit may still land": the timer fires while the commit is in flight.
    cluster.set_faults(FaultPlan(commit_timeout_rate=1.0, seed=3))
    tr = db.create_transaction()
    tr.options.set_timeout(10_000)
    tr[b"landed"] = b"yes"
    assert error_code(lambda: commit(tr)) == 1031
    cluster.set_faults(None)
    assert db[b"landed"] == b"yes" and cluster.stats.injected_1031_applied == 1


# ---- 5. versionstamps ------------------------------------------------------------------------------------


def _append(tr: Any, prefix: str, payload: bytes, user_version: int = 0) -> Any:
    key = fdb.tuple.pack_with_versionstamp((prefix, fdb.tuple.Versionstamp(user_version=user_version)))
    tr.set_versionstamped_key(key, payload)


def test_set_versionstamped_key_takes_trailing_4_byte_little_endian_offset(db: Any) -> None:
    tr = db.create_transaction()
    vs = tr.get_versionstamp()
    tr.set_versionstamped_key(b"p/" + b"\x00" * 10 + b"/s" + struct.pack("<I", 2), b"k")
    tr.set_versionstamped_value(b"v", b"<" + b"\x00" * 10 + b">" + struct.pack("<I", 1))
    commit(tr)
    stamp = vs.wait()
    assert len(stamp) == 10
    assert [kv.key for kv in db[b"p/":b"p0"]] == [b"p/" + stamp + b"/s"]
    assert db[b"v"] == b"<" + stamp + b">"
    tr = db.create_transaction()
    tr.set_versionstamped_key(b"p/short" + struct.pack("<I", 5), b"")  # stamp would not fit
    assert error_code(lambda: commit(tr)) == 2000


def test_versionstamps_strictly_increase_across_clients(db: Any, cluster_file: str, cluster: Any) -> None:
    clients = [db] + [open_client(cluster_file) for _ in range(3)]
    sequential = []
    for i in range(8):  # alternating clients, one after the other: commit order is known
        tr = clients[i % len(clients)].create_transaction()
        vs = tr.get_versionstamp()
        _append(tr, "seq", b"%d" % i)
        commit(tr)
        sequential.append(vs.wait())
    assert sequential == sorted(sequential) and len(set(sequential)) == len(sequential)

    cluster.batch_interval = 0.002  # let commits from several threads share batches
    per_client: dict[int, list[bytes]] = {}

    def work(n: int) -> None:
        stamps = per_client.setdefault(n, [])
        for j in range(15):
            tr = clients[n].create_transaction()
            vs = tr.get_versionstamp()
            _append(tr, "par", b"%d-%d" % (n, j))
            commit(tr)
            stamps.append(vs.wait())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    everything = [s for stamps in per_client.values() for s in stamps]
    assert len(everything) == 60 and len(set(everything)) == 60
    for stamps in per_client.values():  # each client's commits happen one after the other
        assert stamps == sorted(stamps)
    stored = [fdb.tuple.unpack(kv.key)[1].tr_version for kv in db[fdb.tuple.range(("par",))]]
    assert stored == sorted(everything)  # the log order is the stamp order


def test_versionstamp_batch_order_distinguishes_transactions_of_one_commit_batch(db: Any, cluster: Any) -> None:
    cluster.batch_interval = 0.05
    trs = [db.create_transaction() for _ in range(3)]
    stamps = [tr.get_versionstamp() for tr in trs]
    for i, tr in enumerate(trs):
        _append(tr, "b", b"%d" % i)
    futures = [tr.commit() for tr in trs]  # in flight together: one batch
    for f in futures:
        f.wait()
    versions = {tr.get_committed_version() for tr in trs}
    assert len(versions) == 1
    values = [s.wait() for s in stamps]
    assert [v[:8] for v in values] == [struct.pack(">Q", versions.pop())] * 3
    assert [struct.unpack(">H", v[8:])[0] for v in values] == [0, 1, 2]


def test_versionstamp_shared_by_all_ops_of_a_transaction(db: Any) -> None:
    tr = db.create_transaction()
    vs = tr.get_versionstamp()
    for user_version in range(3):
        _append(tr, "ev", b"e%d" % user_version, user_version)
    tr.set_versionstamped_value(b"head", fdb.tuple.pack_with_versionstamp((fdb.tuple.Versionstamp(),)))
    commit(tr)
    stamp = vs.wait()
    events = [fdb.tuple.unpack(kv.key)[1] for kv in db[fdb.tuple.range(("ev",))]]
    assert [e.user_version for e in events] == [0, 1, 2]
    assert {e.tr_version for e in events} == {stamp}
    assert all(e.is_complete() for e in events)
    assert fdb.tuple.unpack(db[b"head"])[0].tr_version == stamp
    assert stamp[:8] == struct.pack(">Q", tr.get_committed_version())


def test_commit_after_read_version_gets_higher_version(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    for _ in range(5):
        reader = db.create_transaction()
        read_version = reader.get_read_version().wait()
        writer = other.create_transaction()
        vs = writer.get_versionstamp()
        _append(writer, "ev", b"x")
        commit(writer)
        assert writer.get_committed_version() > read_version
        assert struct.unpack(">Q", vs.wait()[:8])[0] > read_version  # no event can land behind a cursor


def test_get_versionstamp_only_after_commit_2021_for_read_only(db: Any, cluster_file: str) -> None:
    tr = db.create_transaction()
    vs = tr.get_versionstamp()
    tr[b"k"] = b"v"
    assert not vs.is_ready()  # resolves only once the commit succeeded
    commit(tr)
    assert len(vs.wait()) == 10
    assert error_code(tr.get_versionstamp().wait) == 2017  # must be asked for before commit

    read_only = db.create_transaction()
    vs = read_only.get_versionstamp()
    assert read_only[b"k"] == b"v"
    commit(read_only)
    assert error_code(vs.wait) == 2021
    assert read_only.get_committed_version() == -1

    loser = db.create_transaction()
    vs = loser.get_versionstamp()
    assert loser[b"k"] == b"v"
    loser[b"k"] = b"mine"
    open_client(cluster_file)[b"k"] = b"theirs"
    assert error_code(lambda: commit(loser)) == 1020
    assert error_code(vs.wait) == 1020


def test_reading_own_versionstamped_key_raises_1036(db: Any) -> None:
    tr = db.create_transaction()
    _append(tr, "ev", b"payload")
    assert error_code(lambda: list(tr[fdb.tuple.range(("ev",))])) == 1036
    assert error_code(lambda: list(tr.snapshot.get_range_startswith(fdb.tuple.pack(("ev",))))) == 1036
    assert list(tr[fdb.tuple.range(("other",))]) == []  # elsewhere reads are fine
    tr.set_versionstamped_value(b"head", b"\x00" * 10 + struct.pack("<I", 0))
    assert error_code(tr[b"head"].wait) == 1036
    tr.reset()
    tr.options.set_bypass_unreadable()
    tr.set_versionstamped_value(b"head", b"\x00" * 10 + struct.pack("<I", 0))
    assert tr[b"head"] == b"\x00" * 10  # bypass: read as a set without the stamp
    tr.reset()
    _append(tr, "ev", b"payload")
    commit(tr)
    assert len(list(db.create_transaction()[fdb.tuple.range(("ev",))])) == 1


# ---- 6. watches -----------------------------------------------------------------------------------------


def test_watch_fires_once_on_change_not_on_same_value(db: Any, cluster_file: str, cluster: Any) -> None:
    other = open_client(cluster_file)
    db[b"head"] = b"1"
    tr = db.create_transaction()
    assert tr[b"head"] == b"1"
    watch = tr.watch(b"head")
    commit(tr)
    other[b"head"] = b"1"  # rewriting the same value is no change
    assert not ready_within(watch, 0.05)
    fired_on: list[str] = []
    watch.on_ready(lambda f: fired_on.append(threading.current_thread().name))
    other[b"head"] = b"2"
    assert ready_within(watch, 2.0)
    assert watch.wait() is None
    assert fired_on == ["fdb-network-thread"]  # resolved from the network thread, not the caller
    other[b"head"] = b"3"
    assert cluster.watch_count() == 0 and cluster.stats.watches_fired == 1  # once: the future is spent

    tr = db.create_transaction()  # a clear is a change too
    watch = tr.watch(b"head")
    commit(tr)
    del other[b"head"]
    assert ready_within(watch, 2.0)


def test_watch_armed_at_commit(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    db[b"k"] = b"seen"
    tr = db.create_transaction()
    watch = tr.watch(b"k")
    other[b"k"] = b"changed"  # before the watch's transaction commits: not reported ...
    assert not ready_within(watch, 0.05)
    commit(tr)  # ... until it is armed, when it compares with the value its transaction saw
    assert ready_within(watch, 2.0)

    tr = db.create_transaction()
    watch = tr.watch(b"k")
    tr[b"k"] = b"own write"  # a watch reports its own transaction's change at once
    assert ready_within(watch, 2.0)

    tr = db.create_transaction()
    watch = tr.watch(b"k")
    tr.reset()  # never committed
    assert error_code(watch.wait) == 1025

    tr = db.create_transaction()
    watch = tr.watch(b"k")
    tr[b"other"] = b"1"
    other[b"k"] = b"again"
    assert error_code(lambda: commit(tr)) == 1020  # the watch read k: a conflict ...
    assert error_code(watch.wait) == 1020  # ... and the watch carries the commit's error

    tr = db.create_transaction()
    tr.options.set_read_your_writes_disable()
    assert error_code(tr.watch(b"k").wait) == 1034


def test_watch_cancel_1101(db: Any, cluster: Any) -> None:
    tr = db.create_transaction()
    watch = tr.watch(b"k")
    commit(tr)
    assert cluster.watch_count() == 1
    watch.cancel()
    assert error_code(watch.wait) == 1101
    assert watch.cancelled()
    assert cluster.watch_count() == 0
    tr = db.create_transaction()
    tr.watch(b"k")  # dropping the future destroys it, which cancels the watch
    commit(tr)
    gc.collect()
    assert wait_until(lambda: cluster.watch_count() == 0)


def test_watch_limit_1032(db: Any, cluster_file: str, cluster: Any) -> None:
    assert cluster.max_watches == 10_000  # per database, by default
    cluster.max_watches = 3
    tr = db.create_transaction()
    watches = [tr.watch(b"w%d" % i) for i in range(4)]
    commit(tr)
    assert error_code(watches[3].wait) == 1032
    assert not any(w.is_ready() for w in watches[:3])
    watches[0].cancel()  # cancelled watches stop counting
    tr = db.create_transaction()
    again = tr.watch(b"again")
    commit(tr)
    assert not again.is_ready()
    other = open_client(cluster_file)  # the limit is per database (client)
    other.options.set_max_watches(1)
    tr = other.create_transaction()
    first, second = tr.watch(b"a"), tr.watch(b"b")
    commit(tr)
    assert not first.is_ready() and error_code(second.wait) == 1032
    for w in (*watches[1:3], again, first):
        w.cancel()


# ---- 7. range reads -------------------------------------------------------------------------------------


MODES = ("want_all", "iterator", "exact", "small", "medium", "large", "serial")


def test_range_reads_half_open_limit_reverse_streaming_mode_independent(db: Any, cluster: Any) -> None:
    @fdb.transactional
    def fill(tr: Any) -> None:
        for i in range(60):
            tr[b"r%02d" % i] = b"v" * (1 + (i * 97) % 3000)

    fill(db)
    everything = [b"r%02d" % i for i in range(60)]
    tr = db.create_transaction()
    assert [kv.key for kv in tr.get_range(b"r10", b"r20")] == everything[10:20]  # [begin, end)
    assert [kv.key for kv in tr[b"r10":b"r20"]] == everything[10:20]
    assert [kv.key for kv in tr.get_range(b"r10", b"r20", reverse=True)] == everything[19:9:-1]
    assert [kv.key for kv in tr.get_range_startswith(b"r0")] == everything[:10]
    sel = fdb.KeySelector
    assert tr.get_key(sel.first_greater_than(b"r05")) == b"r06"
    assert tr.get_key(sel.last_less_than(b"r05")) == b"r04"
    assert tr.get_key(sel.last_less_or_equal(b"r05")) == b"r05"
    assert tr.get_key(sel.first_greater_or_equal(b"r055")) == b"r06"
    assert tr.get_key(sel.first_greater_or_equal(b"r05") + 3) == b"r08"
    assert tr.get_key(sel.first_greater_than(b"zz")) == b"\xff"
    assert tr.get_key(sel.last_less_than(b"a")) == b""
    assert [kv.key for kv in tr.get_range(sel.first_greater_than(b"r10"), sel.last_less_or_equal(b"r13"))] \
        == everything[11:13]

    reads_before = cluster.stats.reads
    for mode_name in MODES:
        mode = getattr(fdb.StreamingMode, mode_name)
        for reverse in (False, True):
            for limit in (0, 1, 7, 59, 60, 100):
                if mode_name == "exact" and limit == 0:
                    continue
                got = [kv.key for kv in tr.get_range(b"r", b"s", limit=limit, reverse=reverse,
                                                      streaming_mode=mode)]
                want = everything[::-1] if reverse else everything
                assert got == (want[:limit] if limit else want), (mode_name, reverse, limit)
    assert cluster.stats.reads - reads_before > 2 * len(MODES) * 6  # small modes really came in chunks
    assert error_code(lambda: list(tr.get_range(b"r", b"s", streaming_mode=fdb.StreamingMode.exact))) == 2210

    # Paging a backlog in short transactions, always bounded by explicit prefix keys.
    paged: list[bytes] = []
    begin = fdb.KeySelector.first_greater_or_equal(b"r")
    while True:
        page = db.create_transaction().get_range(begin, b"r\xff", limit=7)
        keys = [kv.key for kv in page]
        if not keys:
            break
        paged += keys
        begin = fdb.KeySelector.first_greater_than(keys[-1])
    assert paged == everything


# ---- 8. atomic ops ------------------------------------------------------------------------------------


def test_atomic_ops_add_no_read_conflict(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    db[b"counter"] = struct.pack("<q", 0)
    trs = [db.create_transaction() for _ in range(2)]
    for tr in trs:
        tr.get_read_version().wait()
        tr.add(b"counter", struct.pack("<q", 1))
        tr.max(b"hi", struct.pack("<q", 5))
        tr.byte_max(b"latest", b"2024")
        tr.min(b"lo", struct.pack("<q", 5))
        tr.set_versionstamped_value(b"head", b"\x00" * 10 + struct.pack("<I", 0))
    other.add(b"counter", struct.pack("<q", 10))
    other.byte_max(b"latest", b"2025")
    for tr in trs:
        commit(tr)  # neither conflicts: atomic ops read nothing
    assert struct.unpack("<q", db[b"counter"])[0] == 12
    assert db[b"latest"] == b"2025"

    reading = db.create_transaction()  # reading the value back in the transaction does add a read conflict
    reading.add(b"counter", struct.pack("<q", 1))
    assert struct.unpack("<q", reading[b"counter"].value)[0] == 13
    other.add(b"counter", struct.pack("<q", 1))
    assert error_code(lambda: commit(reading)) == 1020


def test_atomic_op_results(db: Any) -> None:
    @fdb.transactional
    def run(tr: Any, op: str, existing: bytes | None, param: bytes) -> bytes | None:
        if existing is None:
            del tr[b"x"]
        else:
            tr[b"x"] = existing
        return None

    def apply(op: str, existing: bytes | None, param: bytes) -> bytes | None:
        run(db, op, existing, param)
        getattr(db, op)(b"x", param)  # Database-level atomic op: its own transaction
        value = db[b"x"]
        return None if value is None else bytes(value)

    assert apply("add", b"\xff\x00", b"\x01\x00") == b"\x00\x01"  # little-endian carry
    assert apply("add", b"\x01\x02\x03", b"\x01") == b"\x02"  # truncated to the operand's length
    assert apply("add", None, b"\x05\x00") == b"\x05\x00"
    assert apply("max", b"\x05", b"\x03\x00") == b"\x05\x00"  # existing extended with zeros
    assert apply("min", None, b"\x07") == b"\x07"
    assert apply("min", b"\x05\x01", b"\x06\x00") == b"\x06\x00"
    assert apply("byte_min", b"b", b"ab") == b"ab"
    assert apply("byte_max", b"b", b"ab") == b"b"
    assert apply("bit_and", None, b"\x0f") == b"\x0f"
    assert apply("bit_and", b"\x3c", b"\x0f") == b"\x0c"
    assert apply("bit_or", b"\x30", b"\x0f\x01") == b"\x3f\x01"
    assert apply("bit_xor", b"\xff", b"\x0f") == b"\xf0"
    assert apply("append_if_fits", b"ab", b"cd") == b"abcd"
    assert apply("append_if_fits", b"a" * 99_999, b"cd") == b"a" * 99_999
    assert apply("compare_and_clear", b"same", b"same") is None
    assert apply("compare_and_clear", b"same", b"other") == b"same"


# ---- 9. fault injection -------------------------------------------------------------------------------


def test_fault_injection_1020_and_applied_but_reported_1021(db: Any, cluster: Any) -> None:
    cluster.set_faults(FaultPlan(commit_failure_rate=1.0, unknown_result_fraction=0.0, seed=1))
    tr = db.create_transaction()
    tr[b"k"] = b"not applied"
    assert error_code(lambda: commit(tr)) == 1020
    cluster.set_faults(FaultPlan(commit_failure_rate=1.0, unknown_result_fraction=1.0, seed=1))
    tr = db.create_transaction()
    tr[b"k2"] = b"applied"
    assert error_code(lambda: commit(tr)) == 1021
    cluster.set_faults(None)
    assert db[b"k"] is None and db[b"k2"] == b"applied"
    assert (cluster.stats.injected_1020, cluster.stats.injected_1021_applied) == (1, 1)
    cluster.set_faults(FaultPlan(commit_failure_rate=1.0, unknown_result_fraction=1.0, unknown_result_applied=0.0))
    tr = db.create_transaction()
    tr[b"k3"] = b"lost"
    assert error_code(lambda: commit(tr)) == 1021  # 1021 may also mean "not applied"
    cluster.set_faults(None)
    assert db[b"k3"] is None and cluster.stats.injected_1021_not_applied == 1

    # The hazard: a non-idempotent append retried after "applied but 1021" writes twice ...
    cluster.set_faults(FaultPlan(commit_failure_rate=0.4, unknown_result_fraction=1.0, seed=7))

    @fdb.transactional
    def naive_append(tr: Any, event_id: str) -> None:
        _append(tr, "naive", event_id.encode())

    @fdb.transactional
    def idempotent_append(tr: Any, event_id: str) -> None:
        if tr[fdb.tuple.pack(("event-ids", event_id))].present():
            return
        _append(tr, "safe", event_id.encode())
        tr.set_versionstamped_value(fdb.tuple.pack(("event-ids", event_id)),
                                    fdb.tuple.pack_with_versionstamp((fdb.tuple.Versionstamp(),)))

    cluster.backoff_scale = 0.0
    for i in range(20):
        naive_append(db, "e%d" % i)
        idempotent_append(db, "e%d" % i)
    cluster.set_faults(None)
    assert len(list(db[fdb.tuple.range(("naive",))])) > 20
    assert len(list(db[fdb.tuple.range(("safe",))])) == 20  # ... a dedup key makes the replay a no-op

    cluster.set_faults(FaultPlan(read_failure_rate=1.0, seed=2))
    tr = db.create_transaction()
    code = error_code(tr[b"k2"].wait)
    assert code in (1009, 1037) and fdb.predicates.is_retryable(fdb.FDBError(code))
    cluster.set_faults(None)
    tr.on_error(code).wait()
    assert tr[b"k2"] == b"applied"


def test_fault_plan_is_deterministic_for_a_seed(cluster_file: str) -> None:
    def outcomes() -> list[int]:
        reset_all()
        db = fdb.open(cluster_file)
        c = cluster_for(cluster_file)
        c.set_faults(FaultPlan(commit_failure_rate=0.5, unknown_result_fraction=0.5, read_failure_rate=0.2,
                               seed=42))
        codes = []
        for i in range(30):
            tr = db.create_transaction()
            try:
                tr[b"r"].wait()
                tr[b"k%d" % i] = b"v"
                commit(tr)
                codes.append(0)
            except fdb.FDBError as e:
                codes.append(e.code)
        return codes

    first = outcomes()
    assert first == outcomes()
    assert {0, 1020, 1021} <= set(first)


# ---- the official layers and the decorator -----------------------------------------------------------------


def test_official_tuple_subspace_directory_layers_run_unchanged(db: Any) -> None:
    space = fdb.Subspace(("app",))
    db[space.pack(("a", 1))] = b"1"
    db[space.pack(("a", 2))] = b"2"
    db[space.pack(("b",))] = b"3"
    assert [space.unpack(kv.key) for kv in db[space.range(("a",))]] == [("a", 1), ("a", 2)]
    assert space.contains(space.pack(("b",))) and space["a"].key() == space.pack(("a",))

    root = fdb.directory
    users = root.create_or_open(db, ("cxsync", "users"))
    assert root.exists(db, ("cxsync", "users")) and root.list(db, ("cxsync",)) == ["users"]
    prefixes = {root.create_or_open(db, ("cxsync", "t%d" % i)).key() for i in range(30)}  # HCA allocator
    assert len(prefixes) == 30 and users.key() not in prefixes
    moved = root.move(db, ("cxsync", "users"), ("cxsync", "people"))
    assert moved.key() == users.key() and not root.exists(db, ("cxsync", "users"))
    with pytest.raises(ValueError):
        root.create(db, ("cxsync", "people"))

    tr = db.create_transaction()
    tr.set_versionstamped_key(moved.pack_with_versionstamp(("log", fdb.tuple.Versionstamp(user_version=3))), b"e")
    vs = tr.get_versionstamp()
    commit(tr)
    (name, stamp), = [moved.unpack(kv.key) for kv in db[moved.range(("log",))]]
    assert name == "log" and stamp == fdb.tuple.Versionstamp(vs.wait(), 3)
    root.remove(db, ("cxsync",))
    assert not root.exists(db, ("cxsync",))


def test_fdb_transactional_decorator_retries(db: Any, cluster_file: str) -> None:
    other = open_client(cluster_file)
    db[b"n"] = b"0"
    attempts: list[int] = []

    @fdb.transactional
    def increment(tr: Any) -> int:
        value = int(tr[b"n"])
        attempts.append(value)
        if len(attempts) == 1:
            other[b"n"] = b"10"  # a concurrent writer: this attempt must conflict and be retried
        tr[b"n"] = b"%d" % (value + 1)
        return value + 1

    assert increment(db) == 11
    assert attempts == [0, 10] and db[b"n"] == b"11"

    tr = db.create_transaction()
    assert increment(tr) == 12  # given a Transaction, the decorator neither commits nor retries
    assert db[b"n"] == b"11"
    commit(tr)
    assert db[b"n"] == b"12"

    with pytest.raises(ValueError):
        @fdb.transactional
        def generator(tr: Any) -> Iterator[bytes]:
            yield tr[b"n"]

        generator(db)


# ---- concurrency ------------------------------------------------------------------------------------------


def test_concurrent_clients_lose_no_update(db: Any, cluster_file: str, cluster: Any) -> None:
    clients = [open_client(cluster_file) for _ in range(6)]
    db[b"counter"] = b"0"
    errors: list[BaseException] = []

    @fdb.transactional
    def increment(tr: Any) -> None:
        tr[b"counter"] = b"%d" % (int(tr[b"counter"]) + 1)
        tr.add(b"atomic", struct.pack("<q", 1))

    def work(client: Any) -> None:
        try:
            for _ in range(20):
                increment(client)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,), name="client-%d" % i) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors and not any(t.is_alive() for t in threads)
    assert db[b"counter"] == b"120"
    assert struct.unpack("<q", db[b"atomic"])[0] == 120
    assert cluster.stats.commits >= 121


def test_native_handles_are_released(db: Any) -> None:
    gc.collect()
    assert wait_until(lambda: live_handles() < 10_000)
    baseline = live_handles()
    for i in range(200):
        tr = db.create_transaction()
        tr[b"h%d" % i] = tr[b"h"].value or b""
        list(tr[b"a":b"z"])
        commit(tr)
    del tr
    gc.collect()
    assert wait_until(lambda: live_handles() <= baseline + 5)
