"""``cxsync login`` checks the keyring before asking for the secret (issue 13, item 7)."""

from __future__ import annotations

from keyring.backends import fail

from cxsync.sync.errors import NoCredentials
from tests.memory_keyring import MemoryKeyring, using
from tests.test_cli_desktop import env, invoke, memory  # noqa: F401 - fixtures


def test_login_without_a_keyring_fails_before_the_prompt(env: dict[str, str]) -> None:  # noqa: F811
    with using(fail.Keyring()):
        result = invoke("login", input="a-secret-typed-for-nothing\n")
    assert isinstance(result.exception, NoCredentials)
    assert "Credential for" not in result.output  # never asked


def test_login_with_a_keyring_still_prompts(env: dict[str, str], memory: MemoryKeyring) -> None:  # noqa: F811
    result = invoke("login", input="s3cret\n")
    assert result.exit_code == 0, result.output
    assert "Credential for" in result.output
    assert memory.store[("cxsync", "acme/alice")] == "s3cret"
