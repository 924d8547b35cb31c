"""Captured sessions back out: ``export`` (jsonl, Markdown, HTML), ``resume`` (for ``claude --resume`` on this
machine) and ``restore --deleted`` (transcripts Claude Code's clean-up removed)."""

from __future__ import annotations

import os
import re
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from cxsync.agent.cli import Ctx, emit_json
from cxsync.sync.errors import CxError, UsageError


def _write_stdout(data: bytes) -> None:
    """Bytes to stdout; on a terminal, control characters are shown, never obeyed."""
    if sys.stdout.isatty():
        from cxsync.agent.render import visible

        sys.stdout.write(visible(data.decode("utf-8", "replace")))
        sys.stdout.flush()
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _say(text: str, err: bool = False) -> None:
    """A line for the person at the terminal: names from transcripts and other machines show, never steer."""
    from cxsync.agent.render import visible

    click.echo(visible(text), err=err)


def _root_session(cache: Any, session: str) -> tuple[str, dict[str, Any]]:
    from cxsync.cache.records import safe_name

    sid = cache.resolve_session(session)
    row = cache.conn.execute("SELECT root_session, project, title, first_prompt, source_file, machine"
                             " FROM sessions WHERE session_id=?", (sid,)).fetchone()
    if row is None or row[0] != sid:
        root = row[0] if row else "?"
        raise UsageError(f"{sid} is a subagent of session {root}", f"use the parent session: {root}")
    if not safe_name(f"{sid}.jsonl"):
        raise CxError(f"session id {sid!r} cannot be a file name here")
    return sid, {"project": row[1], "title": row[2], "first_prompt": row[3], "source_file": row[4],
                 "machine": row[5]}


def _title(sid: str, info: dict[str, Any]) -> str:
    title = info.get("title") or (info.get("first_prompt") or "").strip().split("\n")[0][:100]
    return str(title or f"Session {sid}")


def _check_held(sid: str, transcripts: dict[str, Any]) -> None:
    if not transcripts[sid].lines:
        raise CxError(f"no transcript lines of session {sid} are held in this cache",
                      "its records may not have been synced here yet: run `cxsync sync --once`")


def _warn_missing(transcripts: dict[str, Any]) -> None:
    for sid, tr in transcripts.items():
        if tr.conflicts:
            _say(f"note: {tr.conflicts} line(s) of {sid} are held differently by another machine's file of"
                 " the same session id: the lines of the machine holding most of it are used", err=True)
        if tr.redacted:
            _say(f"note: {tr.redacted} line(s) of {sid} had secrets replaced by placeholders before they left the"
                 " machine that captured them: those lines differ from the original file", err=True)
        if tr.missing:
            _say(f"note: {len(tr.missing)} line(s) of {sid} are not held (blank, unreadable, or first"
                 " captured in another session's file): they are left out", err=True)


def _projects_dir(cfg: Any) -> Path:
    """Where this machine's Claude Code keeps projects ($CLAUDE_CONFIG_DIR, else ~/.claude), spelled as the
    agent's transcript root when it watches that folder (the offset row must name the path the agent sees)."""
    from cxsync.agent import app
    from cxsync.agent.claude_paths import claude_config_dir

    home = claude_config_dir().absolute()
    root = next((r for r in app.roots(cfg) if r.resolve() == home.resolve()), home)
    return root / "projects"


def _target_project(cfg: Any, info: dict[str, Any], project_dir: Path | None) -> tuple[str | None, str]:
    """The project path on this machine and a sentence saying how it was chosen."""
    from cxsync.agent.claude_paths import map_path

    captured = info.get("project")
    if project_dir is not None:
        here = os.path.realpath(os.path.expanduser(str(project_dir)))
        return here, f"project {captured or '(not recorded)'} → {here} (--project-dir)"
    if not captured:
        return None, "the project path was not recorded: keeping the captured project folder name"
    mapped, rule = map_path(captured, cfg.path_map)
    if os.path.isdir(mapped):  # Claude Code names the folder after the physical path (getcwd resolves links)
        mapped = os.path.realpath(mapped)
    if rule is not None:
        return mapped, f"project {captured} → {mapped} (mapping {rule[0]} → {rule[1]} from [paths] in {cfg.source})"
    note = f"project {captured} (no [paths] mapping in {cfg.source} matches; the path is used as captured)"
    if not Path(mapped).is_dir():
        note += ("\nwarning: that folder does not exist on this machine: give --project-dir DIR, or add a [paths]"
                 " mapping")
    return mapped, note


def _example(*lines: str) -> str:
    return "\b\nExample:\n" + "\n".join("  " + line for line in lines)


def register(main: click.Group) -> None:
    @main.command(epilog=_example("cxsync export 3f2a -o ~/exports/           # + 3f2a…/subagents/",
                                  "cxsync export 3f2a --format html -o s.html   # to share"))
    @click.argument("session")
    @click.option("-o", "--output", "output_arg", type=click.Path(),
                  help="A file, or an existing folder (or one ending in /). Default: standard output.")
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "markdown", "html"]), default="jsonl",
                  show_default=True, help="jsonl: the lines as captured; markdown, html: a readable conversation.")
    @click.pass_obj
    def export(obj: Ctx, session: str, output_arg: str | None, fmt: str) -> None:
        """Write a session out: its transcript lines byte for byte (jsonl, subagents into SESSION/subagents/),
        or a readable Markdown or HTML conversation."""
        from cxsync.agent.cli_query import open_for_reading
        from cxsync.cache.records import read_session

        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            sid, info = _root_session(cache, session)
            files, transcripts = read_session(cache.conn, sid)
        _check_held(sid, transcripts)
        _warn_missing(transcripts)
        output = Path(output_arg) if output_arg else None
        to_dir = output is not None and (output.is_dir() or str(output_arg).endswith(("/", os.sep)))
        if fmt == "jsonl":
            if output is None:
                _write_stdout(transcripts[sid].to_bytes())
                if len(files) > 1:
                    click.echo(f"note: {len(files) - 1} subagent file(s) not written: give -o DIR for them too",
                               err=True)
                return
            main_path = output / f"{sid}.jsonl" if to_dir else output
            base = main_path.parent / main_path.name.removesuffix(".jsonl")
            for f in files:
                dest = main_path if f.kind == "main" else (
                    base.joinpath(*f.relpath[1:]) if f.relpath[0] == sid else main_path.parent.joinpath(*f.relpath))
                _write_file(dest, transcripts[f.session].to_bytes())
                _say(str(dest), err=True)
            return
        from cxsync.agent import export_render as render

        title = _title(sid, info)
        conv = render.conversation((raw for _, raw in transcripts[sid].records()), title=title, session=sid,
                                   project=info.get("project"))
        for f in files[1:]:
            conv.subagents.append(render.conversation((raw for _, raw in transcripts[f.session].records()),
                                                      title=title, session=f.session, project=None))
        text = render.to_markdown(conv) if fmt == "markdown" else render.to_html(conv)
        if output is None:
            _write_stdout(text.encode())
            return
        dest = output / f"{sid}.{'md' if fmt == 'markdown' else 'html'}" if to_dir else output
        _write_file(dest, text.encode())
        _say(str(dest), err=True)

    agent_resume = main.commands.get("resume")  # `cxsync resume` without SESSION: resume the paused agent

    @main.command(epilog=_example("cxsync resume 3f2a                          # then: claude --resume <id>",
                                  "cxsync resume 3f2a --project-dir ~/src/app",
                                  "cxsync resume                               # a paused agent"))
    @click.argument("session", required=False)
    @click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path),
                  help="The project's folder on this machine (default: the captured path, mapped by [paths]).")
    @click.option("--copy", "as_copy", is_flag=True,
                  help="Write the session as a copy under a new session id (when a different file is in the way).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def resume(ctx: click.Context, session: str | None, project_dir: Path | None, as_copy: bool,
               as_json: bool) -> None:
        """Put captured SESSION where this machine's Claude Code finds it and print the command that continues it.

        Without SESSION: resume capture and sync in the paused agent."""
        if session is None:
            if agent_resume is None or project_dir is not None or as_copy:
                raise UsageError("resume needs a SESSION", "list sessions with `cxsync sessions`")
            ctx.invoke(agent_resume, as_json=as_json)
            return
        obj: Ctx = ctx.obj
        from cxsync.agent import app, writeback
        from cxsync.agent.claude_paths import project_folder
        from cxsync.cache.records import SessionFile, read_session

        cfg = obj.config()
        with app.writable_cache(cfg) as cache:
            sid, info = _root_session(cache, session)
            files, transcripts = read_session(cache.conn, sid)
            _check_held(sid, transcripts)
            project, how = _target_project(cfg, info, project_dir)
            projects = _projects_dir(cfg)
            if project is not None:
                folder = project_folder(projects, project)
            else:
                # no project path: the folder it was captured from, when that is a slug (and nothing else)
                src = [p for p in (info.get("source_file") or "").replace("\\", "/").split("/") if p]
                slug = src[-2] if len(src) >= 2 and re.fullmatch(r"[A-Za-z0-9-]{1,255}", src[-2]) else "-unknown"
                folder = projects / slug
            new_id = str(uuid.uuid4()) if as_copy else sid
            planned = []
            for f in files:
                tr = transcripts[f.session]
                data = tr.to_bytes()
                if as_copy:
                    data = writeback.renamed_copy(data, sid, new_id)
                    rel = tuple(p.replace(sid, new_id) if i == 0 else p for i, p in enumerate(f.relpath))
                    f = SessionFile(f.session.replace(sid, new_id, 1), f.kind, rel, f.agent_id, f.source_file)
                planned.append(writeback.plan_file(f, folder.joinpath(*f.relpath), data))
            clash = [p for p in planned if p.state == "different"]
            if clash:
                raise writeback.DestinationExists(
                    f"a different transcript is already at {clash[0].dest}: nothing was written or overwritten",
                    f"`cxsync resume {sid} --copy` writes this session as a copy under a new session id")
            outcome = writeback.write_all(cache, planned)
        _warn_missing(transcripts)
        command = f"claude --resume {new_id}"
        if project is not None:
            command = f"cd {shlex.quote(project)} && {command}"
        if as_json:
            emit_json({"session": new_id, "copy_of": sid if as_copy else None, "project": project,
                       "mapping": how, "folder": str(folder),
                       "written": [str(p.dest) for p in outcome.written],
                       "unchanged": [str(p.dest) for p in outcome.unchanged], "command": command})
            return
        from cxsync.agent.render import visible

        click.echo(visible(how))
        for p in outcome.written:
            click.echo(f"wrote {visible(str(p.dest))}")
        for p in outcome.unchanged:
            click.echo(f"already there, identical: {visible(str(p.dest))}")
        if as_copy:
            _say(f"copy of session {sid} under the new id {new_id}")
        click.echo(f"\nto continue it:\n  {visible(command)}")

    @main.command(epilog=_example("cxsync restore --deleted --since 30d --dry-run"))
    @click.option("--deleted", is_flag=True, required=True,
                  help="Bring back the transcripts this machine captured that have since been deleted.")
    @click.option("--since", help="Only files deleted since: 2h, 3d, 1w or an ISO date.")
    @click.option("--dry-run", is_flag=True, help="Say what would be restored; write nothing.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def restore(obj: Ctx, deleted: bool, since: str | None, dry_run: bool, as_json: bool) -> None:
        """Bring back transcripts that Claude Code's clean-up (or anyone) deleted, from the cache."""
        from cxsync.agent import app, writeback
        from cxsync.cache.records import SessionFile, deleted_files, transcript
        from cxsync.cache.search import parse_since

        cfg = obj.config()
        restored, skipped = [], []
        with app.writable_cache(cfg) as cache:
            for row in deleted_files(cache.conn, parse_since(since) if since else None):
                path = Path(row["path"])
                if path.exists():
                    skipped.append({"path": row["path"], "why": "a file is there again"})
                    continue
                tr = transcript(cache.conn, row["session"])
                if not tr.lines:
                    skipped.append({"path": row["path"], "why": "no lines of it are held"})
                    continue
                sf = SessionFile(row["session"], row["kind"] or "main", (path.name,), None, row["path"])
                if not dry_run:
                    writeback.write_captured(cache, path, tr.to_bytes(), sf.kind, sf.session)
                restored.append({"path": row["path"], "session": row["session"], "kind": sf.kind,
                                 "deleted_at": row["deleted_at"], "missing_lines": len(tr.missing)})
        if as_json:
            emit_json({"restored": restored, "skipped": skipped, "dry_run": dry_run})
            return
        from cxsync.agent.render import visible

        for r in restored:
            click.echo(f"{'would restore' if dry_run else 'restored'} {visible(r['path'])}")
        for s in skipped:
            click.echo(f"skipped {visible(s['path'])}: {s['why']}")
        mains = [r["session"] for r in restored if r["kind"] == "main"]
        if mains:
            click.echo("\nto continue one of them, from its project folder:")
            for s in mains:
                _say(f"  claude --resume {s}")
        if not restored and not skipped:
            click.echo("no deleted transcripts to restore" + (f" since {since}" if since else ""))


def _write_file(dest: Path, data: bytes) -> None:
    """A private file (0600), written whole then moved into place."""
    from cxsync.agent.writeback import private_dirs

    private_dirs(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dest)
