"""Typed errors. Raised anywhere inside forkwise, caught once: at the CLI (``error: ...``)
or, for request-time errors, by the web app's error handlers (a JSON 4xx/503)."""

from collections.abc import Iterable


class ForkwiseError(Exception):
    """Base of every error forkwise raises on purpose."""


class ConfigError(ForkwiseError):
    """A setting is missing or invalid; the message says which and what to do."""


class UnknownNameError(ConfigError):
    """A name (strategy, server, profile...) is not registered; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(self.valid)}")


class ModelError(ForkwiseError):
    """The model file cannot be built, read or used."""


class ModelUnavailable(ForkwiseError):
    """The model cannot answer right now (model server down or too slow); retry later (HTTP 503)."""

    retry_after_s = 1


class DatabaseBusy(ForkwiseError):
    """The database stayed locked past its busy timeout; nothing was written (HTTP 503)."""

    retry_after_s = 1


class RecordError(ForkwiseError):
    """A result record does not match the schema."""


class MergeError(ForkwiseError):
    """Run folders that cannot be merged into one report (forkwise merge); the message names them and why."""


class PostgresMissing(ConfigError):
    """PostgreSQL (or what forkwise needs to start it) is not installed; the message says what to install."""


class DatabaseServerError(ForkwiseError):
    """The database server forkwise runs for a deployment could not be made, started or stopped."""


class DatabaseUnavailable(ForkwiseError):
    """The database cannot be reached right now (down, restarting, connection lost); nothing was
    acknowledged; retry later (HTTP 503)."""

    retry_after_s = 1



class ChildError(ForkwiseError):
    """A child process forkwise ran for a plan (a cell, a load driver) handed back no valid result."""

    def __init__(self, message: str, output_tail: str):
        self.output_tail = output_tail
        super().__init__(message + (f"; its output ends:\n{output_tail}" if output_tail.strip() else ""))


class ChildFailed(ChildError):
    """The child exited non-zero, or wrote no result, or one that is not valid (`problem` says why)."""

    def __init__(self, what: str, exit_code: int, problem: str, output_tail: str):
        self.what, self.exit_code, self.problem = what, exit_code, problem
        why = f"wrote an invalid result: {problem}" if problem else f"exited with code {exit_code} without a result"
        super().__init__(f"{what} {why}", output_tail)


class ChildTimedOut(ChildError):
    """The child ran past its deadline; it was killed with its whole process group."""

    def __init__(self, what: str, pid: int, deadline_s: float, output_tail: str):
        self.what, self.pid, self.deadline_s = what, pid, deadline_s
        super().__init__(f"{what} (pid {pid}) ran past its deadline of {deadline_s:g} s; "
                         f"killed with its process group", output_tail)


class FinalistError(ForkwiseError):
    """A finalist that would not serve correctly when booted again: its question is not measured."""
