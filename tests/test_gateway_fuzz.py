"""The gateway's OpenAPI description, fuzzed with schemathesis against a real server: no 5xx, no crash.

Bounded for CI: a fixed number of generated cases per operation (CXSYNC_FUZZ_EXAMPLES, default 40), no deadline.
Cases are sent with a valid token (so that the handlers behind authentication are reached) and without one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from cxsync.sync.gateway import Limits
from cxsync.sync.tokens import create_token
from tests.gateway_servers import ThreadServer, sqlite_backend
from tests.helpers import make_event

EXAMPLES = int(os.environ.get("CXSYNC_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, str]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    opener, store = sqlite_backend(tmp)
    token = create_token(store, "acme", "alice", ["web"])[0]
    with ThreadServer(opener, store, Limits(max_wait_seconds=0.5)) as server:
        from cxsync.sync.http_log import HttpEventLog

        HttpEventLog(server.url, "acme", token).append("team", [make_event("acme", "seed")])
        yield server, token


def test_no_generated_request_gets_a_server_error(live: tuple[ThreadServer, str]) -> None:
    # schemathesis's own pytest plugin does not run under pytest 9: drive its strategies with hypothesis here
    server, token = live
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/append", "/v1/read", "/v1/wait", "/v1/whoami", "/v1/health"}
    calls: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            for headers in ({"Authorization": f"Bearer {token}"}, {}):
                response = case.call(base_url=server.url, headers=headers, timeout=10)
                calls.append(f"{operation.path} {response.status_code}")
                case.validate_response(response, checks=(not_a_server_error,))

        fuzz()
    assert not [c for c in calls if c.endswith(tuple(f" 5{d:02d}" for d in range(100)))]
    assert any(c.endswith(" 200") for c in calls if c.startswith("/v1/read"))  # the fuzzer got past the token


def test_the_server_is_still_healthy_after_the_fuzzing(live: tuple[ThreadServer, str]) -> None:
    server, _ = live
    assert httpx.get(f"{server.url}/v1/health").json() == {"status": "ok"}
