"""Knowledge and sharing: knowledge, knowledge show, share, unshare; and redact --check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cxsync.agent.cli import Ctx, emit_json


def _masked(text: str, start: int, end: int, placeholder: str, width: int = 30) -> str:
    """The context of a finding with the secret replaced: what a person needs to recognise it, never the secret."""
    before = text[max(0, start - width):start]
    after = text[end:end + width]
    out = f"{'…' if start > width else ''}{before}{placeholder}{after}{'…' if end + width < len(text) else ''}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in out)


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--check", "check", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  help="A file to scan: a transcript (.jsonl) or any text.")
    @click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
    def redact(check: Path, as_json: bool) -> None:
        """Show what would be redacted from FILE before upload (the secret itself is never printed).

        Example: `cxsync redact --check ~/.claude/projects/-home-ada-app/0b9e….jsonl`
        """
        from cxsync.sync.redact import find_secrets

        findings: list[dict[str, Any]] = []
        with open(check, encoding="utf-8", errors="replace", newline="") as fh:
            for n, line in enumerate(fh, 1):
                for f in find_secrets(line):
                    findings.append({"line": n, "kind": f.kind, "placeholder": f.placeholder,
                                     "context": _masked(line.rstrip("\r\n"), f.start, f.end, f.placeholder)})
        if as_json:
            emit_json({"file": str(check), "findings": findings})
            return
        for item in findings:
            click.echo(f"{check}:{item['line']}: {item['kind']} → {item['placeholder']}  {item['context']}")
        kinds = sorted({item["kind"] for item in findings})
        click.echo(f"{len(findings)} secret(s) would be redacted" + (f" ({', '.join(kinds)})" if kinds else ""),
                   err=True)
