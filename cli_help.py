"""What `forkwise --help` and each command's --help show beyond their options: the defaults, examples,
the matrix profiles and the exit codes. The options themselves are declared in cli.py."""

from __future__ import annotations

import argparse
import textwrap

# The exit statuses of `forkwise`, shown by `forkwise --help` (README.md repeats them).
EXIT_CODES = (
    (0, "success; `forkwise matrix` finished its run (cells that fail are results, not errors)"),
    (1, "a check failed: `cell --check` got a verdict other than OK, `compare --max-regression` found "
        "a regression, or the server `serve` ran exited by itself"),
    (2, "a usage or configuration error, or unreadable input: one line, `error: ...`, no traceback"),
    (130, "interrupted (Ctrl-C, or SIGTERM outside `serve`); what forkwise started is stopped first"),
)

# Real command lines for each command's --help; tests/test_cli_help.py parses every one.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "": (
        ("forkwise matrix --profile quick", "the small profile CI runs"),
        ("forkwise cell --strategy lazy --server uwsgi --load 1,8,32", "one deployment, verified and loaded"),
        ("forkwise compare results/default results/default-run2", "two runs, within their noise"),
    ),
    "model": (
        ("forkwise model build", "the default model and its reference set"),
        ("forkwise model build --model large --rebuild", "build the large model again"),
        ("forkwise model build --model my_model.keras --backend jax", "your model, references from JAX"),
    ),
    "strategies": (("forkwise strategies", "every strategy and server setting, one line each"),),
    "schema": (("forkwise schema > record.schema.json", "the JSON schema every record obeys"),),
    "cell": (
        ("forkwise cell --strategy lazy --server uwsgi --load 1,8,32", "verify, then load at 1, 8 and 32"),
        ("forkwise cell --strategy preload --server gunicorn-sync --check", "exit 1: preload HANGs"),
        ("forkwise cell --strategy child-process --server uwsgi --scenario kill-model-server",
         "a reliability scenario"),
        ("forkwise cell --strategy lazy --server uwsgi --database postgresql --load 8", "on PostgreSQL"),
    ),
    "serve": (
        ("forkwise serve --strategy lazy --server gunicorn-gthread --model my_model.keras", "your model"),
        ("forkwise serve --strategy child-process-batched --server uwsgi --workers 4 --port 8080", ""),
        ("forkwise serve --strategy lazy --server uwsgi --database postgresql", "Ctrl-C stops and removes it"),
    ),
    "matrix": (
        ("forkwise matrix", "the default profile into results/default/"),
        ("forkwise matrix --profile quick --plain --out /tmp/quick", "plain progress lines, for CI logs"),
        ("forkwise matrix --only strategy=lazy,server=uwsgi --out /tmp/lazy", "part of a profile"),
        ("forkwise matrix --shard 2/4 --host-label big-runner --out shard-2", "shard 2 of 4, for merge"),
    ),
    "merge": (
        ("forkwise merge shard-1 shard-2 shard-3 shard-4 --out merged", "the shards of one or more hosts"),
        ("forkwise merge shard-1 shard-3 --out merged --allow-missing", "publish, naming what is missing"),
    ),
    "report": (
        ("forkwise report results/default", "render the run's RESULTS.md, CSV, JSON and HTML again"),
        ("forkwise report results/default --p99-ms 50 --memory-mb 4000", "recommend within other budgets"),
    ),
    "evidence": (
        ("forkwise evidence results/default", "profile the missed goals' cells, run the micro-benchmarks"),
    ),
    "compare": (
        ("forkwise compare results/default results/default-run2", "print the comparison"),
        ("forkwise compare results/default results/default-run2 --max-regression 10 --out COMPARE.md",
         "exit 1 on a regression over 10%"),
    ),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; each option's default appended, unless it has none
    (None, off, empty) or its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default:" in text or action.default is argparse.SUPPRESS
                or action.default in (None, False, (), [])):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def profile_catalogue() -> list[tuple[str, str]]:
    """(name, description) of each profile that ships in matrix/run/profiles/, sorted by name."""
    from forkwise.matrix.run.profile import load_profile, profile_names

    return [(name, load_profile(name).description) for name in profile_names()]


def _block(title: str, rows: list[tuple[str, str]], width: int = 100) -> str:
    """A titled list: each name, its text wrapped and indented under it when long."""
    lines = [f"{title}:"]
    for name, text in rows:
        if not text:
            lines.append(f"  {name}")
            continue
        lines += textwrap.wrap(text, width, initial_indent=f"  {name:<14}", subsequent_indent=" " * 16,
                               break_on_hyphens=False)
    return "\n".join(lines)


def _examples(command: str) -> str:
    rows = EXAMPLES[command]
    lines = ["examples:"]
    for line, what in rows:
        lines.append(f"  {line}" + (f"\n      {what}" if what else ""))
    return "\n".join(lines)


def _exit_codes() -> str:
    return _block("exit status", [(str(code), text) for code, text in EXIT_CODES])


def finish(parser: argparse.ArgumentParser, commands: argparse._SubParsersAction) -> None:
    """Give the parser and every command parser the formatter, a description and their epilog."""
    parser.formatter_class = HelpFormatter
    parser.epilog = f"{_examples('')}\n\n{_exit_codes()}\n\n`forkwise COMMAND --help` shows a command's options."
    # Each command's one-line help (the list in `forkwise --help`) is also its --help's description.
    summaries = {action.dest: action.help for action in commands._choices_actions}
    for name, command in commands.choices.items():
        command.formatter_class = HelpFormatter
        command.description = command.description or summaries.get(name)
        epilog = _examples(name)
        if name == "matrix":
            epilog += "\n\n" + _block("profiles (--profile NAME; matrix/run/profiles/NAME.toml)", profile_catalogue())
        command.epilog = epilog
