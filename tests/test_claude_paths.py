"""Claude Code's project-folder rule and the [paths] mapping between machines."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cxsync.agent.claude_paths import claude_config_dir, djb2, map_path, project_folder, project_slug

LONG = "/home/ada/" + "/".join(f"very-long-folder-name-{i:02d}" for i in range(12))

# Claude Code's sanitizePath as its JavaScript source has it (Node build), run by a real node to check our port.
_JS = r"""
const djb2 = s => { let h = 0; for (let i = 0; i < s.length; i++) h = ((h << 5) - h + s.charCodeAt(i)) | 0; return h; };
const sanitizePath = name => {
  const s = name.replace(/[^a-zA-Z0-9]/g, '-');
  return s.length <= 200 ? s : `${s.slice(0, 200)}-${Math.abs(djb2(name)).toString(36)}`;
};
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(input.map(sanitizePath)));
"""

SAMPLES = [
    "/home/marco/projects/spotter",
    "/Users/ada/src/my_app.v2",
    "C:\\Users\\Ada\\src\\app",
    "\\\\server\\share\\proj",
    "/home/adá/Projekte/Übung",
    "/home/ada/src/app 🚀",
    "/home/ada/日本語/プロジェクト",
    LONG,
    LONG + "/🚀/é",
]


def test_slug_replaces_every_character_outside_ascii_letters_and_digits() -> None:
    assert project_slug("/home/marco/projects/spotter") == "-home-marco-projects-spotter"
    assert project_slug("/Users/ada/src/my_app.v2") == "-Users-ada-src-my-app-v2"


def test_slug_of_a_windows_path() -> None:
    assert project_slug("C:\\Users\\Ada\\src\\app") == "C--Users-Ada-src-app"
    assert project_slug("\\\\server\\share\\proj") == "--server-share-proj"


def test_slug_of_non_ascii_paths_counts_utf16_code_units() -> None:
    # JavaScript's regex replaces code units: a BMP letter is one dash, an emoji (a surrogate pair) two.
    assert project_slug("/home/adá/Übung") == "-home-ad---bung"
    assert project_slug("/home/ada/src/app 🚀") == "-home-ada-src-app---"
    assert project_slug("/日本") == "---"


def test_slug_past_200_characters_is_cut_and_hashed() -> None:
    slug = project_slug(LONG)
    head, _, suffix = slug.rpartition("-")
    assert len(head) == 200 and head == project_slug(LONG)[:200]
    assert int(suffix, 36) == abs(djb2(LONG))
    assert project_slug(LONG + "x") != slug  # the hash tells two long paths with one prefix apart


def test_djb2_is_javascripts_signed_32_bit_hash() -> None:
    assert djb2("a") == 97
    assert djb2("ab") == 97 * 31 + 98
    assert djb2("z" * 6) == -685785664  # wraps to negative like JavaScript's `| 0`


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: cannot run the JavaScript rule")
def test_slug_matches_claude_codes_javascript_for_every_sample() -> None:
    r = subprocess.run(["node", "-e", _JS], input=json.dumps(SAMPLES), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert [project_slug(s) for s in SAMPLES] == json.loads(r.stdout)


def test_long_slug_prefers_the_folder_claude_code_already_made(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    projects.mkdir()
    assert project_folder(projects, LONG) == projects / project_slug(LONG)
    made = projects / (project_slug(LONG)[:200] + "-1x2y3z")  # a Bun build hashes differently
    made.mkdir()
    assert project_folder(projects, LONG) == made
    assert project_folder(projects, "/short") == projects / "-short"


def test_config_dir_is_the_first_claude_config_dir_root_else_dot_claude(tmp_path: Path) -> None:
    assert claude_config_dir({"CLAUDE_CONFIG_DIR": f"{tmp_path}/a, {tmp_path}/b"}) == tmp_path / "a"
    assert claude_config_dir({"CLAUDE_CONFIG_DIR": "  "}, home=tmp_path) == tmp_path / ".claude"
    assert claude_config_dir({}, home=tmp_path) == tmp_path / ".claude"


def test_mapping_uses_the_longest_whole_component_prefix() -> None:
    rules = [("/Users/ada", "/home/ada"), ("/Users/ada/src", "/srv/code")]
    assert map_path("/Users/ada/src/app", rules) == ("/srv/code/app", ("/Users/ada/src", "/srv/code"))
    assert map_path("/Users/ada/docs", rules) == ("/home/ada/docs", ("/Users/ada", "/home/ada"))
    assert map_path("/Users/ada/src2/app", rules) == ("/home/ada/src2/app", ("/Users/ada", "/home/ada"))
    assert map_path("/Users/adam/x", rules) == ("/Users/adam/x", None)
    assert map_path("/Users/ada/src", rules) == ("/srv/code", ("/Users/ada/src", "/srv/code"))


def test_mapping_a_windows_path_ignores_case_and_slash_style() -> None:
    rules = [("C:\\Users\\Ada\\src", "/home/ada/src")]
    assert map_path("c:/users/ada/SRC/App", rules)[0] == "/home/ada/src/App"
    assert map_path("C:\\Users\\Ada\\src\\app\\sub", rules)[0] == "/home/ada/src/app/sub"
    back = [("/home/ada/src", "D:\\work")]
    assert map_path("/home/ada/src/app/x", back)[0] == "D:\\work\\app\\x"


def _config_with(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    from cxsync.agent.config import load_config

    home = tmp_path / "cx"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(text + '\n[identity]\ntenant = "t"\nuser = "u"\nmachine = "m"\n')
    return load_config(env={"CXSYNC_HOME": str(home)})


def test_paths_section_of_the_config_is_the_mapping(tmp_path: Path) -> None:
    cfg = _config_with(tmp_path, '[paths]\n"/Users/ada/src" = "/home/ada/src"\n"C:\\\\Users\\\\Ada" = "~/win"\n')
    assert cfg.path_map == (("/Users/ada/src", "/home/ada/src"), ("C:\\Users\\Ada", str(Path.home() / "win")))
    assert _config_with(tmp_path, "").path_map == ()


def test_a_bad_paths_entry_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from cxsync.sync.errors import ConfigError

    with pytest.raises(ConfigError, match=r'paths\."/Users/ada" = 3'):
        _config_with(tmp_path, '[paths]\n"/Users/ada" = 3\n')
    with pytest.raises(ConfigError, match=r"\[paths\] must be a table"):
        _config_with(tmp_path, 'paths = "x"\n')
