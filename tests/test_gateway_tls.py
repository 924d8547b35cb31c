"""TLS straight from `cxsync serve`, with a throwaway CA: the agent trusts what `tls_ca` names, and refuses an
untrusted certificate with a clear error (never a silent downgrade, never its events quarantined)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import trustme

from cxsync.sync.http_log import GatewayTLSError, HttpEventLog
from cxsync.sync.port import TransientLogError
from cxsync.sync.targets import open_log
from cxsync.sync.tokens import create_token
from tests.gateway_servers import ThreadServer, sqlite_backend
from tests.helpers import make_event


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[ThreadServer, str, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    opener, store = sqlite_backend(tmp_path)
    token = create_token(store, "acme", "alice")[0]
    with ThreadServer(opener, store, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as server:
        yield server, token, ca_file


def test_the_agent_syncs_over_tls_with_the_ca_it_is_given(tls_gateway: tuple[ThreadServer, str, Path]) -> None:
    server, token, ca_file = tls_gateway
    assert server.url.startswith("https://")
    log = open_log(server.url, "acme", token=token, tls={"ca": str(ca_file)})
    assert isinstance(log, HttpEventLog)
    (cursor,) = log.append("team", [make_event("acme", "over-tls")])
    assert [e.cursor for e in log.read("team", None)] == [cursor]


def test_an_untrusted_certificate_is_refused_with_a_clear_error(tls_gateway: tuple[ThreadServer, str, Path],
                                                               tmp_path: Path) -> None:
    server, token, _ = tls_gateway
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    for log in (HttpEventLog(server.url, "acme", token), HttpEventLog(server.url, "acme", token, tls_ca=str(other_ca))):
        with pytest.raises(GatewayTLSError) as info:
            log.append("team", [make_event("acme", "never-sent")])
        assert "certificate of the gateway" in info.value.title and "not trusted" in info.value.title
        assert "tls_ca" in info.value.hint
        assert isinstance(info.value, TransientLogError)  # the events stay in the outbox, not quarantined
