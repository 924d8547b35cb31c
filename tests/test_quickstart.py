"""Installs like a CLI app (issue 13, item 8): the README's quick start never tells anyone to `pip install` into the
system Python, and — with CXSYNC_TEST_QUICKSTART=1, as CI's .ci/run does through .ci/quickstart-debian.sh — works
as written with Debian's own /usr/bin/python3, where PEP 668 refuses a bare pip install."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- quickstart:begin -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]
    return [line for line in block.splitlines() if re.match(r"^(pipx|uv|python3) ", line)]


def test_the_quick_start_installs_as_an_app() -> None:
    lines = quickstart()
    assert any(line.startswith("pipx install") for line in lines)
    assert any(line.startswith("uv tool install") for line in lines)
    for line in lines:
        # pip only ever runs inside a virtual environment the same line created
        if "pip install" in line:
            assert re.search(r"python3 -m venv (\S+) && \1/bin/pip install", line), line


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CXSYNC_TEST_QUICKSTART") != "1",
                    reason="downloads every dependency from PyPI: set CXSYNC_TEST_QUICKSTART=1 (CI runs the script)")
def test_the_quick_start_works_with_debians_own_python() -> None:
    r = subprocess.run(["bash", str(ROOT / ".ci" / "quickstart-debian.sh")], capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "refuses a bare pip install (PEP 668)" in r.stdout
    assert "quick-start installs work with /usr/bin/python3" in r.stdout
