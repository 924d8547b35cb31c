"""The built wheel holds every subpackage under cxsync, and nothing imports a bare top-level name."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("agent", "cache", "sync", "tray")


@pytest.mark.slow
def test_wheel_contains_every_subpackage(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("cxsync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for sub in SUBPACKAGES:
        assert f"cxsync/{sub}/__init__.py" in names
        assert f"cxsync/{sub}/py.typed" in names
        for src in (ROOT / sub).glob("*.py"):
            assert f"cxsync/{sub}/{src.name}" in names
    assert not any(n.startswith(("agent/", "cache/", "sync/", "tray/", "tests/", "packaging/")) for n in names)
    assert not any(n.startswith("cxsync/packaging") for n in names)


def test_no_bare_subpackage_imports() -> None:
    bare = re.compile(r"^\s*(from|import)\s+(agent|cache|sync|tray)(\.|\s|$)", re.M)
    offenders = []
    for sub in (*SUBPACKAGES, "tests"):
        for src in (ROOT / sub).rglob("*.py"):
            if bare.search(src.read_text(encoding="utf-8")):
                offenders.append(str(src.relative_to(ROOT)))
    assert offenders == []


def test_packaging_folder_is_not_a_python_package() -> None:
    assert not (ROOT / "packaging" / "__init__.py").exists()


def test_dependency_direction_cache_and_sync_never_import_agent_or_tray() -> None:
    pat = re.compile(r"cxsync\.(agent|tray)")
    for sub in ("cache", "sync"):
        for src in (ROOT / sub).rglob("*.py"):
            assert not pat.search(src.read_text(encoding="utf-8")), src
    for src in (ROOT / "cache").rglob("*.py"):
        text = src.read_text(encoding="utf-8")
        assert "import fdb" not in text and "from fdb" not in text
