"""Configuration: ``config.toml`` in the config dir, overridden by ``CXSYNC_*`` env vars, overridden by flags.

    [identity]            tenant, user, machine — generated once if absent
    [transcripts]         roots = ["~/.claude", ...]    (default: discovered, see agent/discovery.py)
    [sync]                target = "https://gateway:8443" | "sqlite:/path/log.db" | "fdb" | "fdb:/path/fdb.cluster"
                          | "none"
                          publish = ["u/<user>"]   subscribe = ["u/<user>", "team"]
                          api_version = 730        cluster_file = "..."   tls_cert/tls_key/tls_ca = "..."
    [paths]               "/Users/ada/src" = "/home/ada/src"   — where another machine's projects are here

A bad value is a ConfigError naming the key, never a traceback.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cxsync.sync.errors import ConfigError, InvalidValue
from cxsync.sync.names import NAME_RE, NAME_RULE, STREAM_RE, STREAM_RULE
from cxsync.sync.targets import parse_target
from cxsync.sync.names import Identity as Identity  # one Identity: the config names the events' producer
from cxsync.agent.paths import Paths, resolve_paths, secure_file

log = logging.getLogger("cxsync.config")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


ENV_KEYS = {
    "CXSYNC_TENANT": ("identity", "tenant"),
    "CXSYNC_USER": ("identity", "user"),
    "CXSYNC_MACHINE": ("identity", "machine"),
    "CXSYNC_ROOTS": ("transcripts", "roots"),
    "CXSYNC_SYNC_TARGET": ("sync", "target"),
    "CXSYNC_PUBLISH": ("sync", "publish"),
    "CXSYNC_SUBSCRIBE": ("sync", "subscribe"),
    "CXSYNC_FDB_CLUSTER_FILE": ("sync", "cluster_file"),
    "CXSYNC_FDB_API_VERSION": ("sync", "api_version"),
}
_LIST_KEYS = {("transcripts", "roots"), ("sync", "publish"), ("sync", "subscribe")}

# Every key config.toml may hold: anything else is warned about with the nearest of these (a typo would
# otherwise be ignored without a word).  Add a key here when you add one to the config.
KNOWN_KEYS: dict[str, frozenset[str] | None] = {  # None: a table of the user's own keys
    "identity": frozenset({"tenant", "user", "machine"}),
    "transcripts": frozenset({"roots"}),
    "sync": frozenset({"target", "publish", "subscribe", "api_version", "cluster_file", "batch_events",
                       "batch_bytes", "needs_credential", "tls_cert", "tls_key", "tls_ca", "tls_cert_path",
                       "tls_key_path", "tls_ca_path", "tls_verify_peers", "tls_disable_plaintext"}),
    "backup": frozenset({"daily", "dir", "keep"}),
    "redact": frozenset({"push", "local"}),
    "paths": None,
}
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})



def _sanitize(name: str, fallback: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "-", name).strip("-.")[:64]
    return cleaned if cleaned and cleaned[0].isalnum() else fallback


@dataclass(frozen=True)
class SyncConfig:
    target: str = "none"
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    api_version: int = 730
    cluster_file: str | None = None
    tls: Mapping[str, str] = field(default_factory=dict)
    batch_events: int = 500
    batch_bytes: int = 4_000_000
    needs_credential: bool = False  # the sync credential (FDB TLS key passphrase, gateway token) is required

    @property
    def enabled(self) -> bool:
        return self.target not in ("", "none")


@dataclass(frozen=True)
class BackupConfig:
    daily: bool = False  # the running agent takes a backup once a day
    dir: Path | None = None  # None: <data dir>/backups
    keep: int = 7


@dataclass(frozen=True)
class RedactConfig:
    push: bool = True  # secrets are replaced in every event before it leaves the machine
    local: bool = False  # also in the local cache (the verbatim records included)


@dataclass(frozen=True)
class Config:
    paths: Paths
    identity: Identity
    roots: tuple[Path, ...] | None  # None: discover the defaults
    sync: SyncConfig
    source: Path
    backup: BackupConfig = field(default_factory=BackupConfig)
    redact: RedactConfig = field(default_factory=RedactConfig)
    path_map: tuple[tuple[str, str], ...] = ()  # [paths]: a project path elsewhere → the same project here

    @property
    def backup_dir(self) -> Path:
        return self.backup.dir or self.paths.data_dir / "backups"

    def as_dict(self) -> dict[str, Any]:
        return {
            "config_file": str(self.source),
            "identity": {"tenant": self.identity.tenant, "user": self.identity.user,
                         "machine": self.identity.machine},
            "transcripts": {"roots": [str(r) for r in self.roots] if self.roots is not None else None},
            "sync": {"target": self.sync.target, "publish": list(self.sync.publish),
                     "subscribe": list(self.sync.subscribe), "api_version": self.sync.api_version,
                     "cluster_file": self.sync.cluster_file},
            "backup": {"daily": self.backup.daily, "dir": str(self.backup_dir), "keep": self.backup.keep},
            "redact": {"push": self.redact.push, "local": self.redact.local},
            "paths": dict(self.path_map),
        }


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "fix the file or move it away") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)",
                          "save it as UTF-8, or move it away to start from the defaults") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    return data


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _generated_identity(paths: Paths) -> dict[str, str]:
    """Identity generated on first use and kept: in config.toml when we create it, else in the state dir."""
    import getpass
    import secrets
    import socket

    user = _sanitize(getpass.getuser(), "user")
    return {
        "tenant": "personal",
        "user": user,
        "machine": f"{_sanitize(socket.gethostname(), 'machine')}-{secrets.token_hex(3)}",
    }


def _ensure_identity(paths: Paths, file_identity: Mapping[str, Any]) -> dict[str, Any]:
    if all(k in file_identity for k in ("tenant", "user", "machine")):
        return dict(file_identity)
    paths.ensure()
    if not paths.config_file.exists():
        ident = _generated_identity(paths)
        text = (
            "# cxsync configuration — see `cxsync paths` and the README\n"
            "[identity]\n" + "".join(f"{k} = {_toml_str(v)}\n" for k, v in ident.items())
            + "\n[transcripts]\n# roots = [\"~/.claude\"]\n\n[sync]\ntarget = \"none\"\n"
        )
        tmp = paths.config_file.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        secure_file(tmp)
        os.replace(tmp, paths.config_file)
        return {**ident, **file_identity}
    # The user's file lacks (part of) an identity: keep a generated one beside the state, never rewrite their file.
    store = paths.state_dir / "identity.json"
    try:
        saved = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = _generated_identity(paths)
        store.write_text(json.dumps(saved), encoding="utf-8")
        secure_file(store)
    return {**saved, **file_identity}


def _warn_unknown(raw: Mapping[str, Any], path: Path) -> None:
    """Warn (never fail) about keys this cxsync does not know, naming the nearest known one."""
    for section, table in raw.items():
        if section not in KNOWN_KEYS:
            near = difflib.get_close_matches(section, list(KNOWN_KEYS), n=1)
            log.warning("unknown config section [%s] in %s ignored%s", section, path,
                        f" (did you mean [{near[0]}]?)" if near else "")
            continue
        known = KNOWN_KEYS[section]
        if not isinstance(table, dict) or known is None:
            continue
        for key in table:
            if key not in known:
                near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
                log.warning("unknown config key %s.%s in %s ignored%s", section, key, path,
                            f" (did you mean {section}.{near[0]}?)" if near else "")


def _as_bool(section: str, key: str, value: Any) -> bool:
    """true/false, or (from an environment variable) one of the usual spellings; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"config key {section}.{key} must be true or false, got {value!r}",
                      f"write {key} = true or {key} = false (without quotes)")


def _as_list(section: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in re.split(r"[,%s]" % re.escape(os.pathsep), value) if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"config key {section}.{key} must be a list of strings, got {value!r}")


def load_config(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load with precedence flag (``overrides``, keys like ``"sync.target"``) > env > file > defaults."""
    env = dict(os.environ) if env is None else dict(env)
    paths = resolve_paths(env)
    raw = _read_file(paths.config_file)
    for section in ("identity", "transcripts", "sync", "backup", "redact"):
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"config key [{section}] must be a table")
    _warn_unknown(raw, paths.config_file)
    merged: dict[str, dict[str, Any]] = {s: dict(raw.get(s, {})) for s in ("identity", "transcripts", "sync")}
    merged["identity"] = _ensure_identity(paths, merged["identity"])
    for var, (section, key) in ENV_KEYS.items():
        if env.get(var, "").strip():
            merged[section][key] = env[var].strip()
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        merged.setdefault(section, {})[key] = value

    ident = merged["identity"]
    for key in ("tenant", "user", "machine"):
        v = ident.get(key)
        if not isinstance(v, str) or not NAME_RE.match(v):
            raise ConfigError(f"config key identity.{key} = {v!r} is invalid", NAME_RULE)
    identity = Identity(ident["tenant"], ident["user"], ident["machine"])

    roots_val = merged["transcripts"].get("roots")
    roots = None
    if roots_val is not None:
        roots = tuple(Path(os.path.expanduser(r)) for r in _as_list("transcripts", "roots", roots_val))

    s = merged["sync"]
    target = s.get("target", "none")
    if not isinstance(target, str):
        raise ConfigError(f"config key sync.target must be a string, got {target!r}")
    try:
        parsed = parse_target(target)
    except InvalidValue as exc:  # "sqlite:" with no file says so, not just "invalid"
        raise ConfigError(f"config key {exc.title}",
                          'use "https://gateway:8443", "sqlite:/path/to/log.db", "fdb", "fdb:/path/to/fdb.cluster"'
                          ' or "none"') from None
    publish = _as_list("sync", "publish", s.get("publish", [f"u/{identity.user}"]))
    subscribe = _as_list("sync", "subscribe", s.get("subscribe", [f"u/{identity.user}", "team"]))
    for key, streams in (("publish", publish), ("subscribe", subscribe)):
        for st in streams:
            if not STREAM_RE.match(st):
                raise ConfigError(f"config key sync.{key} has invalid stream {st!r}", STREAM_RULE)
    try:
        if isinstance(s.get("api_version"), bool):
            raise TypeError
        api_version = int(s.get("api_version", 730))
    except (TypeError, ValueError):
        raise ConfigError(f"config key sync.api_version must be 730 or 800, got {s.get('api_version')!r}") from None
    if api_version not in (730, 800):
        raise ConfigError(f"config key sync.api_version must be 730 or 800, got {api_version}")
    cluster_file = s.get("cluster_file")
    if cluster_file is not None and not isinstance(cluster_file, str):
        raise ConfigError(f"config key sync.cluster_file must be a path (a string), got {cluster_file!r}")
    if parsed.scheme == "fdb" and parsed.location:
        cluster_file = parsed.location
    for k, v in s.items():
        if k.startswith("tls_") and not isinstance(v, (str, bool, int)):
            raise ConfigError(f"config key sync.{k} must be a string, got {v!r}")
    tls = {k[4:]: str(v) for k, v in s.items() if k.startswith("tls_")}
    batch_events = s.get("batch_events", 500)
    batch_bytes = s.get("batch_bytes", 4_000_000)
    for key, v in (("batch_events", batch_events), ("batch_bytes", batch_bytes)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"config key sync.{key} must be a positive integer, got {v!r}")
    needs_credential = _as_bool("sync", "needs_credential", s.get("needs_credential", False))
    if "password" in tls:
        raise ConfigError("config key sync.tls_password must not be in the config file",
                          "store the passphrase with `cxsync login` and set needs_credential = true")
    sync = SyncConfig(target or "none", tuple(publish), tuple(subscribe), api_version,
                      str(cluster_file) if cluster_file else None, tls, batch_events, batch_bytes,
                      needs_credential)
    return Config(paths, identity, roots, sync, paths.config_file, backup=_backup_config(raw.get("backup", {})),
                  redact=_redact_config(raw.get("redact", {})), path_map=_path_map(raw.get("paths", {})))


def _redact_config(r: Mapping[str, Any]) -> RedactConfig:
    values = {k: r.get(k, default) for k, default in (("push", True), ("local", False))}
    for k, v in values.items():
        if not isinstance(v, bool):
            raise ConfigError(f"config key redact.{k} must be true or false, got {v!r}")
    if not values["push"]:
        log.warning("redact.push = false: secrets in transcripts are uploaded as they are")
    return RedactConfig(**values)


def _backup_config(b: Mapping[str, Any]) -> BackupConfig:
    daily, keep, folder = b.get("daily", False), b.get("keep", 7), b.get("dir")
    if not isinstance(daily, bool):
        raise ConfigError(f"config key backup.daily must be true or false, got {daily!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"config key backup.keep must be a positive integer, got {keep!r}")
    if folder is not None and (not isinstance(folder, str) or not folder.strip()):
        raise ConfigError(f"config key backup.dir must be a folder path, got {folder!r}")
    return BackupConfig(daily, Path(os.path.expanduser(folder)) if folder else None, keep)


def _path_map(section: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(section, dict):
        raise ConfigError("config key [paths] must be a table", 'e.g. [paths] "/Users/ada/src" = "/home/ada/src"')
    for source, target in section.items():
        if not isinstance(target, str) or not source.strip() or not target.strip():
            raise ConfigError(f"config key paths.{json.dumps(source)} = {target!r} is invalid",
                              "map a project path on another machine to a path on this one, both non-empty strings")
    return tuple((source, os.path.expanduser(target)) for source, target in section.items())
