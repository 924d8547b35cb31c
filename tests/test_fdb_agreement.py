"""The emulation is only worth its fidelity: the contract suite's seeded random operation sequences must give the
same transcript on the emulation and on a real cluster (and both the model's).

The emulation replaces the binding's native layer for a whole process, so each side runs in a fresh interpreter
(this file is also the driver: ``python -m tests.test_fdb_agreement emu|real SEED DIR`` prints one transcript).
On a real cluster every run uses fresh tenant names and clears them afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV_CLUSTER = "CXSYNC_FDB_CLUSTER_FILE"
SEEDS = (1, 2, 3)
OPS = 150


def _transcript(mode: str, seed: int, workdir: Path) -> list[Any]:
    env = {k: v for k, v in os.environ.items() if k != ENV_CLUSTER or mode == "real"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "tests.test_fdb_agreement", mode, str(seed), str(workdir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{mode} run failed:\n{proc.stderr[-4000:]}"
    result: list[Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_emulation_driver_reproduces_the_model(tmp_path: Path) -> None:
    """The driver itself, without a cluster: so the real-cluster comparison never runs untested code."""
    from tests.contract.model import first_difference, model_transcript, random_ops

    expected = json.loads(json.dumps(model_transcript(random_ops(SEEDS[0], OPS))))
    emu = _transcript("emu", SEEDS[0], tmp_path)
    assert emu == expected, first_difference(emu, expected)


@pytest.mark.fdb_real
@pytest.mark.skipif(not os.environ.get(ENV_CLUSTER), reason=f"needs a real cluster: set {ENV_CLUSTER}")
@pytest.mark.parametrize("seed", SEEDS)
def test_emulation_and_real_cluster_agree_on_random_sequences(tmp_path: Path, seed: int) -> None:
    from tests.contract.model import first_difference, model_transcript, random_ops

    real = _transcript("real", seed, tmp_path)
    emu = _transcript("emu", seed, tmp_path)
    assert emu == real, "emulation and real cluster differ at " + first_difference(emu, real)
    expected = json.loads(json.dumps(model_transcript(random_ops(seed, OPS))))
    assert real == expected, first_difference(real, expected)


def _drive(mode: str, seed: int, workdir: Path) -> None:
    from tests.contract.model import random_ops, run_ops, transcript_json

    api_version = int(os.environ.get("CXSYNC_FDB_API_VERSION", "730"))
    if mode == "emu":
        from tests.fdbemu import install

        install(api_version=api_version)
        cluster_file: str | None = str(workdir / "fdb.cluster")
        prefix = ""
    else:
        cluster_file = os.environ[ENV_CLUSTER]
        prefix = f"t{uuid.uuid4().hex[:10]}-"  # fresh tenants: earlier runs' events would turn appends into replays
    from cxsync.sync.fdb_log import FdbEventLog

    tenants: set[str] = set()

    def open_log(tenant: str) -> FdbEventLog:
        tenants.add(prefix + tenant)
        return FdbEventLog(prefix + tenant, cluster_file=cluster_file, api_version=api_version)

    try:
        transcript = run_ops(open_log, random_ops(seed, OPS))
    finally:
        if mode == "real":
            import fdb

            from cxsync.sync.keys import Keys

            db = fdb.open(cluster_file)
            for tenant in tenants:
                for begin, end in Keys(tenant).tenant_ranges():
                    db.clear_range(begin, end)
    print(transcript_json(transcript))


if __name__ == "__main__":
    _drive(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
