"""README.md is the front door: its set-up and test commands are the ones CI runs, its links resolve
inside the repository, and its lists match the command's own."""

import re
import subprocess
from pathlib import Path

from forkwise import cli_help

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI_RUN = ROOT / ".ci" / "run"


def block_after(marker: str) -> str:
    """The fenced block after the line `<!-- marker -->`, as .ci/run extracts it."""
    match = re.search(rf"^<!-- {marker} -->\n```\w*\n(.*?)^```", README, re.M | re.S)
    assert match, f"README.md has no <!-- {marker} --> block"
    return match.group(1)


def test_setup_block_installs_tox_4_in_a_venv():
    setup = block_after("setup")
    assert "python3 -m venv .venv" in setup
    assert ".venv/bin/pip install 'tox>=4'" in setup
    assert "tox -e matrix" not in setup  # CI runs this block: the matrix is a separate step


def test_test_block_is_the_test_command():
    assert block_after("test").strip() == ".venv/bin/tox -e lint,py"


def test_ci_runs_the_readme_blocks_as_extracted_by_its_own_code():
    script = CI_RUN.read_text()
    assert 'readme_block setup' in script and 'readme_block test' in script
    assert 'bash -euo pipefail -c "$setup_commands"' in script
    assert 'bash -euo pipefail -c "$test_commands"' in script
    function = re.search(r"^readme_block\(\) \{.*?^\}\n", script, re.M | re.S).group(0)
    for marker in ("setup", "test"):
        done = subprocess.run(["bash", "-c", f"{function}readme_block {marker}"], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        assert done.stdout == block_after(marker)


def test_links_stay_inside_the_repository():
    assert "../" not in README
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not re.match(r"https?://", target):
            assert (ROOT / target).exists(), f"README.md links to a missing {target}"


def test_anchors_name_headings():
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", README, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", README):
        assert anchor in headings, anchor


def test_exit_codes_and_profiles_match_the_command():
    for code, meaning in cli_help.EXIT_CODES:
        assert f"| {code} | {meaning} |" in README
    for name, _ in cli_help.profile_catalogue():
        assert f"`{name}`" in README, f"README.md does not name the profile {name}"
