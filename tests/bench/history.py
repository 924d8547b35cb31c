"""Generate a realistic Claude Code history of a given size (messages), shaped like the real transcripts:
sessions of a few hundred messages, assistant responses split over several lines, tool calls and results,
thinking blocks, progress lines (a large share of all lines), file-history snapshots and the odd long output."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

WORDS = None


def _vocab(rng: random.Random, n: int = 20_000) -> list[str]:
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dra", "st", "el", "on", "ar", "is",
            "um", "ex", "or", "in", "ca", "te", "ba", "do"]
    common = ("the a to of and is in it that for this with you be on not are test file function error fix add "
              "run build config path update should would use code value return import class data cache sync").split()
    out = set(common)
    while len(out) < n:
        out.add("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))))
    plain = sorted(out)
    # Code: camelCase, snake_case, dotted names, paths and error codes, about one word in twelve.
    code: set[str] = set()
    while len(code) < n // 10:
        a, b, c = (rng.choice(plain[40:]) for _ in range(3))
        code.add(rng.choice([f"{a}{b.capitalize()}", f"{a.capitalize()}{b.capitalize()}{c.capitalize()}",
                             f"{a}_{b}", f"{a}.{b}.{c}", f"src/{a}/{b}.py", f"E{rng.randint(1000, 9999)}",
                             f"{a.upper()}_{b.upper()}"]))
    return common * 20 + plain + sorted(code)


def _text(rng: random.Random, words: list[str], lo: int, hi: int) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))


def generate(root: Path, messages: int, *, seed: int = 7, per_session: int = 200) -> dict[str, int]:
    """Write ``messages`` conversational messages under ``root/projects``; return counts."""
    rng = random.Random(seed)
    words = _vocab(rng)
    t = datetime(2026, 6, 1, tzinfo=timezone.utc)
    n_msgs = n_lines = n_bytes = n_sessions = 0
    prompts: list[str] = []
    while n_msgs < messages:
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        proj = f"/home/dev/project{rng.randint(1, 12)}"
        slug = proj.replace("/", "-")
        path = root / "projects" / slug / f"{sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        parent = None

        def rec(typ: str, **kw: object) -> dict[str, object]:
            nonlocal t, parent
            t += timedelta(seconds=rng.randint(1, 40))
            u = str(uuid.UUID(int=rng.getrandbits(128)))
            r = {"parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": proj,
                 "sessionId": sid, "version": "2.1.39", "gitBranch": "main", "type": typ, "uuid": u,
                 "timestamp": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **kw}
            parent = u
            return r

        count = 0
        target = min(per_session, messages - n_msgs)
        while count < target:
            prompt = _text(rng, words, 5, 60)
            prompts.append(prompt)
            lines.append(json.dumps(rec("user", message={"role": "user", "content": prompt})))
            count += 1
            for _ in range(rng.randint(1, 3)):
                if count >= target:
                    break
                mid = f"msg_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}"
                tid = f"toolu_{uuid.UUID(int=rng.getrandbits(128)).hex[:20]}"
                blocks = [{"type": "thinking", "thinking": _text(rng, words, 10, 60), "signature": "x" * 40},
                          {"type": "text", "text": _text(rng, words, 20, 150)},
                          {"type": "tool_use", "id": tid, "name": rng.choice(["Bash", "Read", "Edit", "Grep"]),
                           "input": {"command": _text(rng, words, 3, 12)}}]
                for i, b in enumerate(blocks):
                    usage = {"input_tokens": 1200, "output_tokens": 40 * (i + 1), "cache_read_input_tokens": 9000}
                    lines.append(json.dumps(rec("assistant", requestId="req_" + mid[4:],
                                                message={"id": mid, "type": "message", "role": "assistant",
                                                         "model": "claude-opus-4-5", "content": [b],
                                                         "usage": usage})))
                    for _ in range(rng.randint(0, 2)):
                        lines.append(json.dumps(rec("progress", data={"type": "hook_progress",
                                                                        "hookEvent": "PostToolUse"})))
                count += 1
                if count >= target:
                    break
                out = _text(rng, words, 10, 150 if rng.random() < 0.95 else 1500)
                lines.append(json.dumps(rec("user", message={"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": tid, "content": out}]}, toolUseResult={"stdout": out})))
                count += 1
            if rng.random() < 0.05:
                lines.append(json.dumps({"type": "file-history-snapshot", "messageId": str(uuid.uuid4()),
                                         "snapshot": {"trackedFileBackups": {}}}))
        data = "\n".join(lines) + "\n"
        path.write_text(data, encoding="utf-8")
        n_msgs += count
        n_lines += len(lines)
        n_bytes += len(data.encode())
        n_sessions += 1
    (root / "prompts.json").write_text(json.dumps(prompts[:2000]))
    return {"messages": n_msgs, "lines": n_lines, "bytes": n_bytes, "sessions": n_sessions}
