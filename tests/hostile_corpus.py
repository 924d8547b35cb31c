"""A corpus of hostile transcript files: every case of issue 9 and the damage seen in real files, mixed with good
records.  Built at test time (FIFOs, symlinks to devices and unreadable folders cannot live in git).

Each good record carries a unique marker word (``goodNNN``, ``repairedNNN``); a test searches the cache for
every marker to prove that it was captured.  ``Corpus.bad_lines`` is the number of lines of the mixed file
that hold nothing recoverable.
"""

from __future__ import annotations

import json
import os
import random
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import transcripts as T

SLUG = "-home-dev-hostile"


@dataclass
class Corpus:
    root: Path  # the Claude home
    markers: list[str] = field(default_factory=list)  # text that must be searchable after capture
    bad_lines: int = 0  # unrecoverable lines of mixed.jsonl
    repaired: int = 0  # records of mixed.jsonl with fields of the wrong type (captured, fields ignored)
    binary: Path | None = None
    unreadable: Path | None = None  # a project folder that cannot be listed (mode 000)
    late_markers: list[str] = field(default_factory=list)  # inside the unreadable folder

    @property
    def projects(self) -> Path:
        return self.root / "projects"


class _Marks:
    def __init__(self, corpus: Corpus, prefix: str) -> None:
        self.corpus, self.prefix, self.n = corpus, prefix, 0

    def __call__(self, kind: str = "good") -> str:
        self.n += 1
        m = f"{kind}{self.prefix}{self.n:03d}"
        (self.corpus.late_markers if kind == "late" else self.corpus.markers).append(m)
        return m


def _deep(depth: int, leaf: Any = "x") -> str:
    return "[" * depth + json.dumps(leaf) + "]" * depth


def mixed_lines(sid: str, mark: _Marks) -> tuple[list[bytes], int, int]:
    """Good, repairable and unrecoverable lines interleaved: (lines, unrecoverable count, repaired count)."""
    good = lambda: T.line(T.user(sid, f"a good prompt {mark()}"))  # noqa: E731
    out: list[bytes] = [good()]
    bad = repaired = 0

    def unrecoverable(raw: bytes) -> None:
        nonlocal bad
        out.append(raw + b"\n")
        out.append(good())
        bad += 1

    def with_bad_fields(rec: dict[str, Any]) -> None:
        nonlocal repaired
        out.append(T.line(rec))
        out.append(good())
        repaired += 1

    # Nesting past every parser's depth limit (RecursionError in the lenient decoder).
    unrecoverable(('{"type":"user","message":{"content":' + _deep(5000) + "}}").encode())
    unrecoverable(b'{"a":' * 3000 + b"1" + b"}" * 3000)
    unrecoverable(b'{"a":{"b":' * 40_000)  # a torn pathological prefix: resynchronising must stay bounded
    unrecoverable(b'{"x":"' + b'{"' * 200_000)  # a million-start line
    # Deep, but within the strict parser's limit: parsed, and its tool input too deep to write back as text.
    # orjson reads up to 1024 levels; json.dumps cannot write them back.
    for a in T.assistant_lines(sid, [T.text(f"deep tool input {mark()}"), T.tool_use("Bash", {"i": "DEEP"})]):
        out.append(T.line(a).replace(b'"DEEP"', _deep(1000).encode()))
    # Token counts of every wrong kind.
    for usage in ({"input_tokens": "12", "output_tokens": "x"}, {"output_tokens": 10**30},
                  {"output_tokens": 1.5e300}, {"output_tokens": -5, "input_tokens": True},
                  {"output_tokens": [1, 2]}, {"output_tokens": {"n": 1}}, {"output_tokens": 3.5}):
        a = T.assistant_lines(sid, [T.text(f"odd usage {mark('repaired')}")])[0]
        a["message"]["usage"] = usage
        with_bad_fields(a)
    # NaN and Infinity are not JSON; the lenient decoder accepts them.
    a = T.assistant_lines(sid, [T.text(f"nan usage {mark('repaired')}")])[0]
    out.append(T.line(a).replace(b'"output_tokens": 8', b'"output_tokens": NaN').replace(
        b'"input_tokens": 10', b'"input_tokens": Infinity'))
    out.append(good())
    repaired += 1
    # message.model, gitBranch, version and other envelope fields of the wrong type.
    for field_name, value in (("model", ["claude", "opus"]), ("model", 42), ("id", {"x": 1})):
        a = T.assistant_lines(sid, [T.text(f"odd message field {mark('repaired')}")])[0]
        a["message"][field_name] = value
        with_bad_fields(a)
    for field_name, value in (("gitBranch", {"name": "main"}), ("version", ["2", "1"]), ("cwd", 7),
                              ("timestamp", {"t": 1}), ("uuid", ["u"]), ("sessionId", "s" * 10_000),
                              ("isSidechain", "yes"), ("isMeta", 1), ("type", None), ("origin", "human"),
                              ("parentUuid", 12)):
        # Without a usable type or uuid a record is no message: it is kept verbatim, not indexed.
        searchable = field_name not in ("type", "uuid")
        rec = T.user(sid, f"odd envelope {mark('repaired') if searchable else 'unindexed'}")
        rec[field_name] = ["user"] if value is None else value
        with_bad_fields(rec)
    # A message that is not an object; content that is an object; blocks with fields of the wrong type.
    rec = T.user(sid, "x")
    rec["message"] = "just a string"
    with_bad_fields(rec)
    rec = T.user(sid, "x")
    rec["message"]["content"] = {"text": "not a list"}
    out.append(T.line(rec))
    out.append(good())
    rec = T.user(sid, "x")
    rec["message"]["content"] = [{"type": "text", "text": ["not", "a", "string"]}, {"type": "tool_use",
                                 "name": {"n": 1}, "input": 10**40}, {"type": "image", "source": "nope"},
                                 {"type": "tool_result", "content": [{"type": 3}]}, 17, None,
                                 {"type": "text", "text": f"blocks of every shape {mark()}"}]
    out.append(T.line(rec))
    out.append(good())
    # Lone surrogates (orjson refuses them; the lenient decoder keeps them; SQLite and events cannot hold them).
    rec = T.user(sid, f"lone surrogate {mark()} here")
    out.append(T.line(rec).replace(b" here", b" \\ud800 here"))
    out.append(good())
    # Titles and summaries of the wrong type.
    with_bad_fields({"type": "custom-title", "customTitle": ["t"], "sessionId": sid})
    with_bad_fields({"type": "summary", "summary": {"s": 1}, "leafUuid": 5})
    # Lines that are JSON but not objects, and lines that are not JSON at all.
    for raw in (b"[1, 2, 3]", b"42", b'"a string"', b"null", b"\x00\x01\x02\xff\xfe", b"}{", b"{{{{",
                b'{"type":"user","message":{"content":"unterminated'):
        unrecoverable(raw)
    # Invalid UTF-8, control characters and U+2028 inside a good record.
    out.append(T.line(T.user(sid, f"odd bytes {mark()}")).replace(b"odd bytes", b"odd \xff\xfe bytes"))
    out.append(T.line(T.user(sid, f"line separator\u2028inside {mark()}")))
    out.append(T.line(T.user(sid, f"control\x01chars {mark()}")).replace(b"\\u0001", b"\x01"))
    # Two objects glued on one line.
    out.append(T.line(T.user(sid, f"glued one {mark()}")).rstrip(b"\n") + T.line(T.user(sid, f"glued two {mark()}")))
    out.append(good())
    return out, bad, repaired


def build(root: Path, *, unreadable: bool = True) -> Corpus:
    """Write the corpus under ``root`` (a Claude home) and return what a capture of it must find."""
    c = Corpus(root)
    proj = c.projects / SLUG
    proj.mkdir(parents=True, exist_ok=True)

    # Good files, untouched by the rest.
    s1 = "b0000000-0000-4000-8000-000000000001"
    mark = _Marks(c, "a")
    T.write(proj / f"{s1}.jsonl", [T.user(s1, f"first good prompt {mark()}"),
                                   *T.assistant_lines(s1, [T.thinking("hmm"), T.text(f"good answer {mark()}")]),
                                   {"type": "summary", "summary": "a good session", "leafUuid": "x"}])
    # The mixed file: good records around every kind of bad one.
    s2 = "b0000000-0000-4000-8000-000000000002"
    lines, c.bad_lines, c.repaired = mixed_lines(s2, _Marks(c, "b"))
    (proj / f"{s2}.jsonl").write_bytes(b"".join(lines))
    # A torn tail: the complete lines are captured, the partial one waits.
    s3 = "b0000000-0000-4000-8000-000000000003"
    torn = T.line(T.user(s3, "never completed"))
    (proj / f"{s3}.jsonl").write_bytes(T.line(T.user(s3, f"before the tear {_Marks(c, 'c')()}")) + torn[:25])
    # A byte-order mark, CRLF line ends, and NUL padding such as a crash leaves before the next append.
    s6 = "b0000000-0000-4000-8000-000000000006"
    m6 = _Marks(c, "f")
    (proj / f"{s6}.jsonl").write_bytes(
        b"\xef\xbb\xbf" + T.line(T.user(s6, f"after a BOM {m6()}")).replace(b"\n", b"\r\n")
        + T.line(T.user(s6, f"crlf {m6()}")).replace(b"\n", b"\r\n")
        + b"\x00" * 512 + T.line(T.user(s6, f"after NUL padding {m6()}")))
    # A binary file named like a transcript: one warning for the file.
    rng = random.Random(9)
    c.binary = proj / "c0000000-0000-4000-8000-00000000b1a5.jsonl"
    c.binary.write_bytes(bytes(rng.randrange(256) for _ in range(64_000)))
    # An empty file, a FIFO, symlinks to endless or empty devices, a dangling symlink, a directory named
    # like a transcript, and a file whose name is not valid UTF-8.
    (proj / "d0000000-0000-4000-8000-000000000000.jsonl").write_bytes(b"")
    if os.name == "posix":  # FIFOs, devices and byte-string names are POSIX things
        os.mkfifo(proj / "fifo.jsonl")
        links = {"zero.jsonl": "/dev/zero", "null.jsonl": "/dev/null", "urandom.jsonl": "/dev/urandom",
                 "dangling.jsonl": str(root / "nowhere.jsonl"), "loop.jsonl": str(proj / "loop.jsonl")}
        for name, target in links.items():
            os.symlink(target, proj / name)
        (proj / "folder.jsonl").mkdir()
        bad_name = os.fsencode(proj) + b"/\xff\xfe-not-utf8.jsonl"
        with open(bad_name, "wb") as fh:
            fh.write(T.line(T.user("x", "in a file whose name is not UTF-8")))
    # A subagent file whose records carry wrong types too.
    sub = proj / s1 / "subagents" / "agent-a1.jsonl"
    sub_mark = _Marks(c, "d")
    rec = T.user(s1, f"subagent prompt {sub_mark()}", isSidechain=True)
    rec["gitBranch"] = ["x"]
    T.write(sub, [rec])
    # A project folder nobody can read: reported, and captured once it becomes readable.
    if unreadable:
        c.unreadable = c.projects / "-home-dev-locked"
        s4 = "b0000000-0000-4000-8000-000000000004"
        T.write(c.unreadable / f"{s4}.jsonl", [T.user(s4, f"behind a locked door {_Marks(c, 'e')('late')}")])
        c.unreadable.chmod(0)
    return c


def unlock(c: Corpus) -> None:
    if c.unreadable is not None:
        c.unreadable.chmod(stat.S_IRWXU)


def cleanup(c: Corpus) -> None:
    """Make everything removable by pytest's tmp_path cleanup."""
    unlock(c)
