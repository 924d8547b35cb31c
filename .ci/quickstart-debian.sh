#!/usr/bin/env bash
# The README's quick start, verbatim, with Debian's own /usr/bin/python3 (PEP 668: a bare `pip install` into it is
# refused) — not the interpreter of whatever venv runs the tests.  Everything lands in a throw-away HOME.
#   usage: .ci/quickstart-debian.sh            (from a checkout; needs network access to PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$PWD"
py=/usr/bin/python3
test -x "$py" || { echo "no $py: this check is for Debian/Ubuntu" >&2; exit 2; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export HOME="$scratch/home" PIPX_HOME="$scratch/pipx" PIPX_BIN_DIR="$scratch/bin" XDG_CONFIG_HOME= XDG_DATA_HOME=
export PATH="$scratch/bin:$HOME/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export CXSYNC_HOME="$scratch/cx" CLAUDE_CONFIG_DIR="$scratch/claude"
unset VIRTUAL_ENV PYTHONPATH
mkdir -p "$HOME" "$CLAUDE_CONFIG_DIR/projects/-home-dev-demo"
printf '%s\n' '{"type":"user","sessionId":"0d0d0000-0000-4000-8000-000000000001","uuid":"6f1c0c2e-0000-4000-8000-000000000001","timestamp":"2026-11-30T10:00:00.000Z","cwd":"/home/dev/demo","message":{"role":"user","content":"hello from the quick start"}}' \
    > "$CLAUDE_CONFIG_DIR/projects/-home-dev-demo/0d0d0000-0000-4000-8000-000000000001.jsonl"

# 1. The interpreter really is externally managed: the README must not tell people to do this.
if [ -e "$($py -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    if $py -m pip install --dry-run --no-deps "$checkout" >"$scratch/pep668.log" 2>&1; then
        echo "expected PEP 668 to refuse a system-wide pip install" >&2; exit 1
    fi
    grep -q "externally-managed-environment" "$scratch/pep668.log"
    echo "ok: $py refuses a bare pip install (PEP 668)"
fi

# 2. Each quick-start command of the README, as written, from the checkout.
commands="$(awk '/<!-- quickstart:begin -->/{on=1; next} /<!-- quickstart:end -->/{on=0} on && /^(pipx|uv|python3) /' README.md)"
test -n "$commands" || { echo "no quick start between the README's quickstart markers" >&2; exit 1; }
ran=0
while IFS= read -r line; do
    tool="${line%% *}"
    if [ "$tool" = uv ] && ! command -v uv >/dev/null; then echo "skip (uv not installed): $line"; continue; fi
    if [ "$tool" = pipx ] && ! command -v pipx >/dev/null; then echo "skip (pipx not installed): $line"; continue; fi
    cmd="${line%%#*}"                                   # drop the trailing comment
    cmd="${cmd//&& cxsync run/}"                         # the foreground agent would never return
    cmd="${cmd//python3 /$py }"
    echo "+ $cmd"
    (cd "$checkout" && eval "$cmd")
    ran=$((ran + 1))
    command -v cxsync >/dev/null || [ -x "$HOME/.venvs/cxsync/bin/cxsync" ]
    cx="$(command -v cxsync || echo "$HOME/.venvs/cxsync/bin/cxsync")"
    "$cx" import                                        # the README's next step (then `cxsync run`)
    "$cx" sessions --format tsv | grep -q "hello from the quick start"
    echo "ok: $cx captured the transcript"
    rm -rf "$CXSYNC_HOME" "$PIPX_HOME" "$PIPX_BIN_DIR" "$HOME/.venvs"
done <<< "$commands"
test "$ran" -ge 1
echo "ok: $ran quick-start installs work with $py"
