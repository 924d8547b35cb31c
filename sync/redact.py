"""Secrets replaced by typed placeholders before anything leaves the machine.

Detection uses detect-secrets' curated detectors (Yelp's, the pre-commit scanner many teams already run) for the
kinds it knows — cloud keys, GitHub/GitLab/Slack/Stripe/OpenAI tokens, JWTs, private keys, passwords in connection
strings, ``password=``/``secret=``/``token=`` assignments — and three narrow rules for what it lacks: Anthropic
keys, OpenAI project keys and whole private-key blocks, plus high-entropy values assigned to environment
variables (its entropy measure, our context).  A secret becomes ``[REDACTED:<kind>:<4 hex of its SHA-256>…]``: a
person can tell two placeholders of one secret apart from two secrets, and nobody can get the secret back.

``redact_event`` applies this to every string of an event (content, verbatim transcript lines, knowledge), keeps
verbatim lines valid JSON, and returns the event unchanged (the same object) when there is nothing to redact, so
events without secrets travel byte-identical.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from cxsync.sync import events as ev

ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    secret: str

    @property
    def placeholder(self) -> str:
        return placeholder(self.kind, self.secret)


def placeholder(kind: str, secret: str) -> str:
    return f"[REDACTED:{kind}:{hashlib.sha256(secret.encode('utf-8', 'surrogatepass')).hexdigest()[:4]}{ELLIPSIS}]"


_PLACEHOLDER = re.compile(r"\[REDACTED:[a-z0-9-]+:[0-9a-f]{4}" + ELLIPSIS + r"\]")

# What detect-secrets lacks (1.5): Anthropic keys, OpenAI project/service keys without the legacy marker, and the
# body of a private key (it flags only the BEGIN line).  In JSON text a key's newlines are the two characters \n.
_OWN_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("anthropic-key", re.compile(r"sk-ant-[a-z]{2,8}\d{2}-[A-Za-z0-9_\-]{20,}")),
    ("openai-key", re.compile(r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}")),
    ("private-key", re.compile(r"-----BEGIN[A-Z ]{0,30}PRIVATE KEY( BLOCK)?-----.*?-----END[A-Z ]{0,30}PRIVATE KEY"
                               r"( BLOCK)?-----", re.DOTALL)),
)

# An environment variable assigned a value: `export NAME=value`, `NAME="value"`, `NAME: value` (compose, CI).
_ENV_ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_])(?:export\s+)?[A-Z][A-Z0-9_]{2,}\s*[=:]\s*[\"']?"
                             r"(?P<value>[A-Za-z0-9+/=_\-.]{16,})")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]*")


@lru_cache(maxsize=1)
def _detectors() -> tuple[list[tuple[str, Any]], Any, Any, Any, Any]:
    """detect-secrets' plugins, built once (importing them costs ~50 ms: only when something is pushed)."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.basic_auth import BasicAuthDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
    from detect_secrets.plugins.jwt import JwtTokenDetector
    from detect_secrets.plugins.keyword import KeywordDetector
    from detect_secrets.plugins.openai import OpenAIDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.stripe import StripeDetector

    regex_based = [("aws-access-key", AWSKeyDetector()), ("github-token", GitHubTokenDetector()),
                   ("gitlab-token", GitLabTokenDetector()), ("slack-token", SlackDetector()),
                   ("stripe-key", StripeDetector()), ("openai-key", OpenAIDetector())]
    return regex_based, JwtTokenDetector(), BasicAuthDetector(), KeywordDetector(), (
        Base64HighEntropyString(), HexHighEntropyString())


def _spans_of(text: str, value: str) -> Iterator[tuple[int, int]]:
    start = text.find(value)
    while start >= 0:
        yield start, start + len(value)
        start = text.find(value, start + len(value))


def find_secrets(text: str) -> list[Finding]:
    """Every secret in ``text``, as non-overlapping spans (the earliest, then the longest, wins).

    Text that embeds JSON (a tool call's input, printed config) hides quotes and newlines behind backslashes
    from detectors that expect them: such text is searched a second time unescaped.  Every value found is then
    located everywhere in the original, bare or escaped."""
    found = _find(text)
    if "\\" in text:
        found += _find(text.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
    # A secret found once is a secret everywhere in the text: bare, or escaped inside embedded JSON.
    kinds: dict[str, str] = {}
    for f in found:
        kinds.setdefault(f.secret, f.kind)  # the specific detectors run first: their kind wins
    spans = [Finding(kind, s, e, variant) for secret, kind in kinds.items()
             for variant in {secret, orjson.dumps(secret).decode()[1:-1]} for s, e in _spans_of(text, variant)]
    return _non_overlapping(spans)


def _find(text: str) -> list[Finding]:
    if len(text) < 8:
        return []
    regex_based, jwt, basic_auth, keyword, (b64, hexe) = _detectors()
    found: list[Finding] = []
    for kind, rule in _OWN_RULES:
        found += [Finding(kind, m.start(), m.end(), m.group(0)) for m in rule.finditer(text)]
    for kind, plugin in regex_based:
        for rx in plugin.denylist:
            for m in rx.finditer(text):
                g = 1 if kind == "aws-access-key" and rx.groups else 0  # an AWS secret key is its rule's group
                found.append(Finding("aws-secret-key" if g else kind, m.start(g), m.end(g), m.group(g)))
    for token in set(jwt.analyze_string(text)):
        for s, e in _spans_of(text, token):
            m = _JWT_TAIL.match(text, e)  # the detector's pattern stops before the signature
            found.append(Finding("jwt", s, m.end() if m else e, text[s:m.end() if m else e]))
    for rx in basic_auth.denylist:
        for m in rx.finditer(text):
            found.append(Finding("connection-password", m.start(1), m.end(1), m.group(1)))
    for start, window in _keyword_windows(text):  # the detector's regexes are slow on megabyte lines
        for secret in keyword.analyze_line(filename="transcript.sh", line=window, line_number=0):
            value = secret.secret_value
            if value and len(value) >= 4 and not _PLACEHOLDER.fullmatch(value):
                found += [Finding("password-assignment", start + s, start + e, value)
                          for s, e in _spans_of(window, value)]
    for m in _ENV_ASSIGNMENT.finditer(text):
        value = m.group("value")
        is_hex = bool(_HEX.match(value))
        entropy = (hexe if is_hex else b64).calculate_shannon_entropy(value)
        if (is_hex and len(value) >= 32 and entropy > 3.0) or (not is_hex and entropy > 4.0):
            found.append(Finding("env-secret", m.start("value"), m.end("value"), value))
    return found


@lru_cache(maxsize=1)
def _keyword_rx() -> re.Pattern[str]:
    from detect_secrets.plugins.keyword import DENYLIST_REGEX

    return re.compile(DENYLIST_REGEX, re.IGNORECASE)


def _keyword_windows(text: str, before: int = 80, after: int = 400) -> Iterator[tuple[int, str]]:
    """The stretches of one line around each keyword (``password``, ``api_key``, …), merged where they touch:
    the only places the keyword detector can match."""
    spans: list[list[int]] = []
    for m in _keyword_rx().finditer(text):
        lo = max(text.rfind("\n", 0, m.start()) + 1, m.start() - before)
        end = text.find("\n", m.end())
        hi = min(len(text) if end < 0 else end, m.end() + after)
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    for lo, hi in spans:
        yield lo, text[lo:hi]


def _non_overlapping(found: Iterable[Finding]) -> list[Finding]:
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if f.end <= f.start:
            continue
        if out and f.start < out[-1].end:
            continue
        out.append(f)
    return out


def redact_text(text: str) -> tuple[str, list[Finding]]:
    found = find_secrets(text)
    if not found:
        return text, []
    parts, pos = [], 0
    for f in found:
        parts += [text[pos:f.start], f.placeholder]
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts), found


def _redact_json_line(raw: str) -> tuple[str, list[Finding]]:
    """A verbatim transcript line, searched value by value (in the JSON text a secret may be escaped); a line
    with nothing to redact comes back as it was, byte for byte, and one with a secret is written again."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return redact_text(raw)  # not JSON (a torn or foreign line): searched as text
    findings: list[Finding] = []
    clean = _walk(value, findings, redact_text)
    if not findings:
        return raw, []
    return orjson.dumps(clean).decode(), findings


def _walk(value: Any, findings: list[Finding], fn: Callable[[str], tuple[str, list[Finding]]]) -> Any:
    if isinstance(value, str):
        new, f = fn(value)
        findings += f
        return new
    if isinstance(value, list):
        return [_walk(v, findings, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, findings, fn) for k, v in value.items()}
    return value


def redact_data(data: Any) -> tuple[Any, list[Finding]]:
    findings: list[Finding] = []
    out: dict[str, Any] = {}
    for key, value in dict(data).items():
        if key == "records" and isinstance(value, list):
            out[key] = [_record(r, findings) for r in value]
        else:
            out[key] = _walk(value, findings, redact_text)
    return out, findings


def _record(r: Any, findings: list[Finding]) -> Any:
    if isinstance(r, str):  # a MessageIndexed's verbatim lines
        new, f = _redact_json_line(r)
        findings += f
        return new
    if isinstance(r, dict) and isinstance(r.get("raw"), str):  # a RecordsCaptured record
        raw, f = _redact_json_line(r["raw"])
        findings += f
        rest = _walk({k: v for k, v in r.items() if k != "raw"}, findings, redact_text)
        return {**rest, "raw": raw}
    return _walk(r, findings, redact_text)


def redact_event(e: ev.ContextEvent) -> ev.ContextEvent:
    """The event with every secret replaced; the very same object when it holds none."""
    data, findings = redact_data(e.data)
    if not findings:
        return e
    data["redacted"] = sorted({f.kind for f in findings})
    return ev.ContextEvent(e.type, e.event_id, e.tenant, e.user, e.machine, e.timestamp, data)


class RedactingLog:
    """An EventLog whose appends carry redacted copies: the one door events leave the machine by.  Ids are kept,
    so idempotency and the recognition of our own events coming back are unchanged."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tenant = inner.tenant

    def append(self, stream: str, events: Sequence[ev.ContextEvent]) -> list[bytes]:
        return list(self.inner.append(stream, [redact_event(e) for e in events]))

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> Any:
        return self.inner.read(stream, after, limit)

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        return bool(self.inner.wait(stream, after, timeout))

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # adapter extras (connect, identity, quotas) pass through
        return getattr(self.inner, name)
