"""mypy --strict over the package, as it is installed: cxsync/{agent,cache,sync,tray} (symlinked, since the
checkout maps the folders into `cxsync` only through `package-dir`, which mypy cannot follow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_is_clean_under_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    pkg = tmp_path / "cxsync"
    pkg.mkdir()
    for sub in ("agent", "cache", "sync", "tray"):
        (pkg / sub).symlink_to(ROOT / sub, target_is_directory=True)
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "--no-incremental",
                        "-p", "cxsync"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
