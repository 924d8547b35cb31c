"""``cxsync doctor``: check what usually goes wrong and say what to do about each, like ``atuin doctor``.

Each check is a function returning ``Check``s; one failing or crashing check never hides the others.  Nothing here
writes: the doctor reads the config, the transcript roots, the cache (read-only), the keyring and the mount table.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

if TYPE_CHECKING:
    from cxsync.agent.cli import Ctx

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
MARK = {OK: "✓", WARN: "!", FAIL: "✗", INFO: "·"}
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "afs", "ceph", "glusterfs",
              "fuse.glusterfs", "lustre", "davfs", "fuse.davfs2", "fuse.rclone", "fuse.s3fs", "gcsfuse",
              "fuse.gcsfuse", "virtiofs", "vboxsf", "fuse.mergerfs"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    hint: str = ""


# ---- pure helpers (unit-tested without a machine in the state they describe) --------------------------------


def _unescape_mount(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def filesystem_of(path: Path, mounts: str) -> tuple[str, str] | None:
    """(mount point, fs type) of the mount holding ``path``, from the text of /proc/mounts."""
    best: tuple[str, str] | None = None
    p = str(path)
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point, fstype = _unescape_mount(parts[1]), parts[2]
        inside = p == point or p.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def watch_check(directories: int, max_watches: int | None) -> Check:
    """inotify needs a watch per folder; a limit below what the roots hold makes the agent fall back to polling."""
    if max_watches is None:
        return Check("watch limit", INFO, "no inotify limit to check on this platform")
    needed = directories + 64
    if max_watches < needed:
        return Check("watch limit", WARN, f"fs.inotify.max_user_watches = {max_watches:,}, the transcript folders "
                     f"need about {needed:,}",
                     "raise it: `echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-cxsync.conf "
                     "&& sudo sysctl --system` (the agent polls until then)")
    return Check("watch limit", OK, f"fs.inotify.max_user_watches = {max_watches:,} (needed: about {needed:,})")


# ---- the checks ---------------------------------------------------------------------------------------------


def check_roots(cfg: Any) -> Iterable[Check]:
    from cxsync.agent import app
    from cxsync.agent.discovery import projects_dir

    roots = app.roots(cfg)
    found = [r for r in roots if r.exists()]
    if not found:
        yield Check("transcripts", FAIL, "no transcript folder found: looked in " + ", ".join(map(str, roots)),
                    "run Claude Code once, or point cxsync at its folder: --root DIR, CLAUDE_CONFIG_DIR, "
                    "or [transcripts] roots in " + str(cfg.paths.config_file))
        return
    dirs = 0
    for root in found:
        proj = projects_dir(root)
        if not os.access(proj, os.R_OK | os.X_OK):
            yield Check("transcripts", FAIL, f"{proj} is not readable", f"fix its permissions: chmod u+rx {proj}")
            continue
        files = unreadable = 0
        for dirpath, dirnames, filenames in os.walk(proj):
            dirs += 1
            for d in dirnames:
                if not os.access(os.path.join(dirpath, d), os.R_OK | os.X_OK):
                    unreadable += 1
            files += sum(1 for f in filenames if f.endswith(".jsonl"))
        if files == 0:
            yield Check("transcripts", WARN, f"{root}: no transcripts yet",
                        "run Claude Code once; the running agent captures new sessions as they are written")
        elif unreadable:
            yield Check("transcripts", WARN, f"{root}: {files:,} transcripts, {unreadable} unreadable folders",
                        f"fix their permissions (chmod -R u+rX {proj}); they are captured once readable")
        else:
            yield Check("transcripts", OK, f"{root}: {files:,} transcripts in {dirs:,} folders")
    max_watches = None
    if sys.platform.startswith("linux"):
        try:
            max_watches = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip())
        except (OSError, ValueError):
            max_watches = None
    yield watch_check(dirs, max_watches)


def check_cache(cfg: Any) -> Iterable[Check]:
    from cxsync.agent import render

    db = cfg.paths.cache_db
    if not db.exists():
        yield Check("cache", WARN, f"no cache yet at {db}", "capture your sessions: `cxsync import`")
        return
    from cxsync.cache.db import connect

    try:
        conn = connect(db, readonly=True)
        try:
            result = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            row = conn.execute("SELECT count(*) FROM messages").fetchone()
            messages = int(row[0]) if row else 0
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the finding
        yield Check("cache", FAIL, f"cannot read the cache {db}: {render.one_line(str(exc), 200)}",
                    "stop the agent and rebuild it from its events: `cxsync stop; cxsync rebuild`, or move it "
                    "aside and `cxsync import` again")
        return
    if result != ["ok"]:
        yield Check("cache", FAIL, f"the cache is damaged: {render.one_line('; '.join(result[:3]), 200)}",
                    "stop the agent and rebuild it: `cxsync stop; cxsync rebuild`")
        return
    from cxsync.agent.status_text import cache_size

    yield Check("cache", OK, f"{messages:,} messages, {render.size(cache_size(str(db)))}, integrity ok")


def check_target(cfg: Any, mounts: str | None = None) -> Iterable[Check]:
    target = cfg.sync.target
    if target in ("", "none"):
        yield Check("sync target", INFO, 'none: this machine only', 'to sync, set [sync] target in '
                    f'{cfg.paths.config_file} ("sqlite:/path/log.db" or "fdb")')
        return
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            mounts = ""
    if target.startswith("sqlite:"):
        path = Path(os.path.expanduser(target[len("sqlite:"):]))
        folder = path.parent
        if not folder.is_dir():
            yield Check("sync target", FAIL, f"{target}: the folder {folder} does not exist",
                        f"create it (mkdir -p {folder}) or fix [sync] target")
            return
        if not os.access(folder, os.W_OK):
            yield Check("sync target", FAIL, f"{target}: {folder} is not writable", "fix its permissions")
            return
        fs = filesystem_of(folder.resolve(), mounts)
        if fs and fs[1] in NETWORK_FS:
            yield Check("sync target", FAIL, f"{target} is on a network filesystem ({fs[1]} at {fs[0]})",
                        "SQLite's locking is unreliable over network filesystems: keep the log on a local disk "
                        "and sync machines through `cxsync serve` (target = \"https://host:8443\")")
            return
        yield Check("sync target", OK, f"{target} (local filesystem {fs[1] if fs else 'unknown'})")
        return
    if target.startswith(("https://", "http://")):
        import httpx

        try:
            status = httpx.get(f"{target.rstrip('/')}/v1/health", timeout=5,
                               verify=cfg.sync.tls.get("ca") or True).status_code
        except httpx.HTTPError as exc:
            yield Check("sync target", FAIL, f"{target}: the gateway does not answer ({exc})",
                        "is `cxsync serve` running there, and its certificate trusted (sync.tls_ca)?")
            return
        yield Check("sync target", OK if status == 200 else FAIL, f"{target} (gateway health: {status})")
        return
    if target.startswith("fdb"):
        import ctypes.util

        cluster = cfg.sync.cluster_file or (target[4:] if target.startswith("fdb:") else None)
        if not ctypes.util.find_library("fdb_c"):
            yield Check("sync target", FAIL, f"{target}: the FoundationDB client library (libfdb_c) is missing",
                        "install the foundationdb-clients package for your platform")
            return
        if cluster and not Path(cluster).is_file():
            yield Check("sync target", FAIL, f"{target}: no cluster file at {cluster}", "fix [sync] cluster_file")
            return
        yield Check("sync target", OK, f"{target} (libfdb_c found)")


def check_keyring(cfg: Any) -> Iterable[Check]:
    from cxsync.agent import credentials
    from cxsync.sync.errors import CxError

    needed = cfg.sync.needs_credential
    try:
        name = credentials.backend_name(timeout=5.0)
        secret = credentials.get_secret(cfg.identity, timeout=5.0) if needed else None
    except CxError as exc:
        yield Check("keyring", FAIL if needed else WARN, exc.title,
                    exc.hint or "set CXSYNC_TOKEN in the agent's environment instead")
        return
    if needed and not secret:
        yield Check("keyring", FAIL, f"{name}: no credential stored for {credentials.account(cfg.identity)}",
                    "store it: `cxsync login`")
        return
    if name.startswith("none"):
        yield Check("keyring", FAIL if needed else INFO, f"no usable keyring ({name})",
                    "install and unlock a Secret Service (gnome-keyring, KeePassXC) or set CXSYNC_TOKEN "
                    "in the agent's environment" + ("" if needed else "; only needed once sync needs a credential"))
        return
    yield Check("keyring", OK, f"{name}" + (": credential stored" if needed else " (no credential needed)"))


def check_agent(cfg: Any) -> Iterable[Check]:
    from importlib.metadata import PackageNotFoundError, version

    from cxsync.agent import render
    from cxsync.agent.lock import holder
    from cxsync.agent.status import read_agent_file

    try:
        mine = version("cxsync")
    except PackageNotFoundError:
        mine = "unknown"
    pid = holder(cfg.paths.lock_file)
    if not pid:
        yield Check("agent", WARN, f"not running (cxsync {mine} installed)",
                    "start it: `cxsync run`, `cxsync tray`, or at login: `cxsync autostart enable`")
        return
    state = read_agent_file(cfg) or {}
    theirs = state.get("version")
    started = state.get("started_at")
    up = f", up {render.duration(__import__('time').time() - started)}" if isinstance(started, (int, float)) else ""
    detail = f"running (pid {pid}{up}), state {state.get('state', 'unknown')}"
    if theirs and theirs != mine:
        yield Check("agent", WARN, f"{detail}, version {theirs} while {mine} is installed",
                    "restart it to run the installed version: `cxsync stop` then start it again")
        return
    err = state.get("error")
    if isinstance(err, dict) and err.get("title"):
        yield Check("agent", WARN, f"{detail}; last error: {render.one_line(str(err['title']), 120)}",
                    render.one_line(str(err.get("hint") or "see `cxsync status`"), 200))
        return
    yield Check("agent", OK, detail + (f", version {theirs}" if theirs else f", cxsync {mine} installed"))


CHECKS: tuple[Callable[[Any], Iterable[Check]], ...] = (check_roots, check_cache, check_target, check_keyring,
                                                        check_agent)


def run_checks(cfg: Any) -> list[Check]:
    out: list[Check] = []
    for fn in CHECKS:
        try:
            out.extend(fn(cfg))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            out.append(Check(fn.__name__.removeprefix("check_").replace("_", " "), FAIL,
                             f"the check itself failed: {type(exc).__name__}: {exc}", "run with --debug"))
    return out


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
    @click.pass_obj
    def doctor(obj: "Ctx", as_json: bool) -> None:
        """Check transcripts, watch limits, cache, sync target, keyring and agent, and say what to fix.

        Exits 1 when a check fails, 0 otherwise (warnings included).
        """
        from cxsync.agent import render
        from cxsync.agent.cli import emit_json

        cfg = obj.config()
        checks = run_checks(cfg)
        if as_json:
            emit_json([asdict(c) for c in checks])
        else:
            width = max(len(c.name) for c in checks)
            for c in checks:
                click.echo(f"{MARK[c.status]} {c.name:<{width}}  {render.visible(c.detail)}")
                if c.hint and c.status != OK:
                    click.echo(f"  {'':<{width}}  → {render.visible(c.hint)}")
        if any(c.status == FAIL for c in checks):
            sys.exit(1)
