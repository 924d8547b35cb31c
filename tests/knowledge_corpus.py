"""A labelled corpus for the knowledge extractors: written exchanges (what each rule must find, and the look-alikes
it must not) plus the real fixtures, whose items were checked by hand.  Used by the extraction tests and by
``python -m tests.bench.bench_knowledge``, which prints precision and recall per extractor."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cxsync.agent.extract import Msg


def bash(cmd: str, text: str = "") -> str:
    return (text + "\n\n" if text else "") + "[tool_use Bash] " + json.dumps({"command": cmd, "description": "run"})


def edit(path: str, text: str = "") -> str:
    return (text + "\n\n" if text else "") + "[tool_use Edit] " + json.dumps(
        {"file_path": path, "old_string": "a", "new_string": "b"})


def ok(out: str) -> str:
    return "[tool_result] " + out


def err(out: str) -> str:
    return "[tool_result error] " + out


@dataclass
class Case:
    name: str
    turns: list[tuple[str, str]]  # (role, content)
    expect: list[tuple[str, int]] = field(default_factory=list)  # (type, index of the message the item is about)
    session: str = ""

    def messages(self) -> list[Msg]:
        sid = self.session or "s-" + self.name
        return [Msg(hashlib.sha256(f"{sid}/{i}/{c}".encode()).hexdigest(), role, c, sid, "/src/app",
                    f"2026-03-01T10:{i // 60:02d}:{i % 60:02d}.000Z") for i, (role, c) in enumerate(self.turns)]


DECISIONS = [
    Case("d-letsgo", [("user", "Which queue should we use, Redis or SQS?"),
                      ("assistant", "Both work. Let's go with SQS because we already run on AWS and it needs no ops.")],
         [("decision", 1)]),
    Case("d-wedecided", [("user", "We decided to keep the cache in SQLite since it has to work offline.")],
         [("decision", 0)]),
    Case("d-illgowith", [("user", "ok"), ("assistant", "I'll go with a dataclass here instead of a dict, so mypy "
                                                      "can check the fields.")], [("decision", 1)]),
    Case("d-goingwith-over", [("assistant", "Going with httpx over requests, as it supports HTTP/2 and async.")],
         [("decision", 0)]),
    Case("d-chose", [("user", "We chose Postgres for the gateway's token store to avoid another service.")],
         [("decision", 0)]),
    Case("d-decision-colon", [("assistant", "Decision: the tray is optional and installed with the [tray] extra.")],
         [("decision", 0)]),
    Case("d-settled", [("user", "After the benchmark we settled on zstd level 3 for the event codec.")],
         [("decision", 0)]),
    Case("d-opted", [("assistant", "We've opted for a versionstamp cursor instead of timestamps, because clocks "
                                   "drift between machines.")], [("decision", 0)]),
    Case("d-letsuse", [("user", "Let's use ruff for linting from now on.")], [("decision", 0)]),
    Case("d-ivedecided", [("user", "I've decided to drop Python 3.9 support in the next release.")],
         [("decision", 0)]),
    Case("d-in-prose-after-code", [("assistant", "```python\nx = 1\ny = 2\nz = 3\n```\nWe decided on the second "
                                                 "layout because it keeps imports lazy.")], [("decision", 0)]),
    Case("d-wewillgo", [("user", "We will go with the monorepo layout for now.")], [("decision", 0)]),
    # look-alikes that are not decisions
    Case("n-question", [("user", "Should we go with Redis or SQS?")]),
    Case("n-question2", [("user", "Let's go with what, exactly?")]),
    Case("n-conditional", [("assistant", "If we go with SQS, we could drop the Redis container.")]),
    Case("n-weighing", [("assistant", "We could go with either; maybe Postgres, maybe SQLite.")]),
    Case("n-undecided", [("user", "We haven't decided on the database yet.")]),
    Case("n-others", [("user", "They decided to rewrite it in Go last year.")]),
    Case("n-tool-output", [("tool", ok("docs/adr-004.md: We decided to use Kafka because of replay."))]),
    Case("n-in-code", [("assistant", "```md\nWe decided to use Kafka.\nline two\nline three\n```")]),
    Case("n-whether", [("user", "I need to know whether to use a queue at all.")]),
    Case("n-plain", [("user", "Please run the tests and tell me what fails.")]),
    Case("n-would-you", [("assistant", "Would you like me to go with the simpler option?")]),
]

ERRORS = [
    Case("e-pytest", [
        ("assistant", bash("python -m pytest tests/test_api.py -x 2>&1 | tail -20", "Running the tests:")),
        ("tool", err("FAILED tests/test_api.py::test_login - KeyError: 'token'\n1 failed, 12 passed")),
        ("assistant", edit("/src/app/api.py", "The login handler reads `token` before checking it exists. "
                                               "Using .get() fixes it:")),
        ("tool", ok("The file /src/app/api.py has been updated.")),
        ("assistant", bash("python -m pytest tests/test_api.py -x 2>&1 | tail -40")),
        ("tool", ok("13 passed in 0.41s")),
    ], [("error_solution", 1)]),
    Case("e-traceback", [
        ("assistant", bash("python manage.py migrate")),
        ("tool", err("Traceback (most recent call last):\n  File \"manage.py\", line 3\nModuleNotFoundError: "
                     "No module named 'psycopg2'")),
        ("assistant", edit("/src/app/requirements.txt", "psycopg2 is missing from the requirements; adding it.")),
        ("tool", ok("The file /src/app/requirements.txt has been updated.")),
        ("assistant", bash("pip install -r requirements.txt")),
        ("tool", ok("Successfully installed psycopg2-2.9.9")),
        ("assistant", bash("python manage.py migrate")),
        ("tool", ok("Operations to perform: Apply all migrations\nRunning migrations: OK")),
    ], [("error_solution", 1)]),
    Case("e-npm", [
        ("assistant", bash("npm run build")),
        ("tool", err("npm ERR! code ELIFECYCLE\nerror TS2322: Type 'string' is not assignable to type 'number'.")),
        ("assistant", edit("/src/app/src/index.ts", "The id is a string in the API response; typing it as one.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("npm run build")),
        ("tool", ok("built in 2.1s")),
    ], [("error_solution", 1)]),
    Case("e-two-tries", [
        ("assistant", bash("cargo test")),
        ("tool", err("error[E0308]: mismatched types\n  --> src/lib.rs:4:5")),
        ("assistant", edit("/src/app/src/lib.rs", "Returning a u32 here.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("cargo test")),
        ("tool", err("error[E0308]: mismatched types\n  --> src/lib.rs:9:1")),
        ("assistant", edit("/src/app/src/lib.rs", "And the caller too.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("cargo test 2>&1")),
        ("tool", ok("test result: ok. 4 passed; 0 failed")),
    ], [("error_solution", 1)]),
    Case("e-go-panic", [
        ("assistant", bash("go test ./...")),
        ("tool", err("panic: runtime error: index out of range [3] with length 3")),
        ("assistant", edit("/src/app/parse.go", "The loop runs one past the end; using < instead of <=.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("go test ./... | tail -5")),
        ("tool", ok("ok  example.com/app 0.012s")),
    ], [("error_solution", 1)]),
    # look-alikes: no fix, fix but still failing, fixed by something else, a tool misuse, success only
    Case("n-no-fix", [
        ("assistant", bash("make test")),
        ("tool", err("FAILED test_x - AssertionError")),
        ("assistant", "The test is flaky upstream; leaving it."),
    ]),
    Case("n-still-failing", [
        ("assistant", bash("make test")),
        ("tool", err("FAILED test_x - AssertionError")),
        ("assistant", edit("/src/app/x.py", "Trying a fix.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("make test")),
        ("tool", err("FAILED test_x - AssertionError")),
    ]),
    Case("n-other-command", [
        ("assistant", bash("make test")),
        ("tool", err("FAILED test_x - AssertionError")),
        ("assistant", edit("/src/app/x.py", "Fixing.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("make lint")),
        ("tool", ok("all good")),
    ]),
    Case("n-tool-misuse", [
        ("assistant", bash("cat x.py")),
        ("tool", err("<tool_use_error>String to replace not found in file.</tool_use_error>")),
        ("assistant", edit("/src/app/x.py", "Retrying the edit.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("cat x.py")),
        ("tool", ok("print(1)")),
    ]),
    Case("n-all-good", [
        ("assistant", bash("pytest")),
        ("tool", ok("5 passed")),
        ("assistant", edit("/src/app/x.py", "Tidying up.")),
        ("tool", ok("The file has been updated.")),
        ("assistant", bash("pytest")),
        ("tool", ok("5 passed")),
    ]),
]

_RETRY = "```python\nfor attempt in range(5):\n    try:\n        return call()\n    except Timeout:\n        sleep(2 ** attempt)\n```"
_FIXTURE = "```python\n@pytest.fixture\ndef home(tmp_path):\n    return tmp_path / 'home'\n```"
PATTERNS = [
    Case("p-retry-1", [("assistant", "Retry with exponential backoff, the way we do it for flaky APIs:\n\n" + _RETRY)],
         [("pattern", 0)], session="s-pattern-a"),
    Case("p-retry-2", [("assistant", "Same retry loop as before, with exponential backoff:\n\n" + _RETRY)],
         [], session="s-pattern-b"),
    Case("p-once", [("assistant", "A temporary home for the test, one per test function:\n\n" + _FIXTURE)],
         [], session="s-pattern-c"),
    Case("p-unexplained-1", [("assistant", "```sh\nmake\nmake test\nmake install\n```")], [], session="s-pattern-d"),
    Case("p-unexplained-2", [("assistant", "```sh\nmake\nmake test\nmake install\n```")], [], session="s-pattern-e"),
    Case("p-short-1", [("assistant", "Run it like this, from the repository root:\n\n```sh\nmake test\n```")], [],
         session="s-pattern-f"),
    Case("p-short-2", [("assistant", "Run it like this, from the repository root:\n\n```sh\nmake test\n```")], [],
         session="s-pattern-g"),
]

# Checked by hand on the real fixtures (../shared/fixtures/claude-home): the one error → solution they hold
# (`mix test` failing with BadMapError, fixed by editing the OpenTelemetry config, then passing), and nothing else
# that is a decision or a repeated explained pattern.
FIXTURE_EXPECT: dict[str, list[dict[str, Any]]] = {
    "error_solution": [{"session": "ae4a77f8-aedd-4bc1-888f-c94edc91af04",
                        "error_signature": "** (BadMapError) expected a map, got:"}],
    "decision": [],
    "pattern": [],
}


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    false_positives: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def _match(score: Score, found: list[Any], labels: list[tuple[str, str]], what: str) -> None:
    """``found``: items; ``labels``: (case name, hash of the message each expected item is about)."""
    matched: set[int] = set()
    for name, h in labels:
        hit = next((n for n, item in enumerate(found) if n not in matched and h in item.sources), None)
        if hit is None:
            score.fn += 1
            score.missed.append(name)
        else:
            matched.add(hit)
            score.tp += 1
    for n, item in enumerate(found):
        if n not in matched:
            score.fp += 1
            score.false_positives.append(f"{what}: {item.session}: {item.title[:80]}")


def score_written() -> dict[str, Score]:
    from cxsync.agent import extract as X

    out = {t: Score() for t in X.TYPES}
    for cases, fn, kind in ((DECISIONS, X.decisions, "decision"), (ERRORS, X.error_solutions, "error_solution")):
        for case in cases:
            msgs = case.messages()
            _match(out[kind], fn(msgs), [(case.name, msgs[i].hash) for t, i in case.expect if t == kind], case.name)
    blocks = [b for case in PATTERNS for b in X.code_blocks(case.messages())]
    by_fp: dict[str, list[Any]] = {}
    for b in blocks:
        by_fp.setdefault(b[0], []).append(b)
    found = [X.pattern(fp, bs[-1], sorted({b[1].session for b in bs}), [b[1].hash for b in bs])
             for fp, bs in by_fp.items() if len({b[1].session for b in bs}) >= 2]
    labels = [(c.name, c.messages()[i].hash) for c in PATTERNS for t, i in c.expect if t == "pattern"]
    _match(out["pattern"], found, labels, "patterns")
    return out


def score_fixture_items(items: list[dict[str, Any]], into: dict[str, Score]) -> None:
    """Items extracted from the real fixtures (as `cxsync knowledge --json` prints them) against FIXTURE_EXPECT."""
    for kind, expected in FIXTURE_EXPECT.items():
        got = [i for i in items if i["type"] == kind]
        left = list(got)
        for e in expected:
            hit = next((i for i in left if i["session"] == e["session"]
                        and i["data"].get("error_signature", i["title"]) == e.get("error_signature", i["title"])),
                       None)
            if hit is None:
                into[kind].fn += 1
                into[kind].missed.append(f"fixtures: {e}")
            else:
                left.remove(hit)
                into[kind].tp += 1
        into[kind].fp += len(left)
        into[kind].false_positives += [f"fixtures: {i['title'][:80]}" for i in left]
