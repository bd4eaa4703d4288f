"""The command as a newcomer meets it: help with defaults, examples and profiles; exit codes; one-line errors."""

import shlex
import subprocess
import sys

import pytest

from forkwise import cli, cli_help
from host_pace import command_bound_s


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_documents_the_exit_codes_and_examples(capsys):
    text = help_text(capsys)
    for code, _ in cli_help.EXIT_CODES:
        assert f"\n  {code} " in text
    assert "forkwise matrix --profile quick" in text


def test_matrix_help_lists_every_profile_file_with_its_description(capsys):
    text = " ".join(help_text(capsys, "matrix").split())  # unwrap the wrapped descriptions
    catalogue = cli_help.profile_catalogue()
    assert {name for name, _ in catalogue} >= {"default", "quick", "reliability", "database", "gpu"}
    for name, description in catalogue:
        assert description, f"profile {name} has no description"
        assert f"{name} {description}" in text


@pytest.mark.parametrize("command", sorted(cli_help.EXAMPLES.keys() - {""}))
def test_each_command_help_shows_examples_and_defaults(capsys, command):
    text = help_text(capsys, command)
    assert "examples:" in text
    for line, _ in cli_help.EXAMPLES[command]:
        assert line in text
    if command in {"cell", "serve", "matrix", "model"}:
        assert "(default: " in text


def test_every_example_parses():
    parser = cli.build_parser()
    for command, rows in cli_help.EXAMPLES.items():
        for line, _ in rows:
            argv = shlex.split(line.split(">")[0])
            assert argv[0] == "forkwise"
            args = parser.parse_args(argv[1:])
            assert command in ("", args.command)


def run_forkwise(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forkwise", *argv], capture_output=True, text=True,
                          timeout=command_bound_s())


@pytest.mark.parametrize("argv", [
    ("matrix", "--shard", "nonsense"),        # usage error found by forkwise (ConfigError)
    ("matrix", "--profile", "no-such-profile"),
    ("compare", "/nonexistent-a", "/nonexistent-b"),
    ("strategies", "--no-such-option"),        # usage error found by argparse
    ("cell", "--strategy", "lazy"),            # a required option missing
])
def test_usage_and_config_errors_exit_2_with_one_error_line(argv):
    done = run_forkwise(*argv)
    assert done.returncode == 2, done.stderr
    assert "error: " in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_forkwise_errors_are_caught_once_in_main(capsys):
    assert cli.main(["report", "/nonexistent-run-folder"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
