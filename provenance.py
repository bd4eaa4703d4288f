"""Which code made a thing: the checkout's commit (marked "+modified" when its code differs from it)
and the versions of the packages that matter. Records carry them (where and with what a cell was
measured), and every report states them for the code that rendered it."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "forkwise", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "torch", "numpy",
    "flask", "sqlalchemy", "gunicorn", "pyuwsgi", "psutil", "nvidia-ml-py",
)


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str:
    """HEAD, with "+modified" when tracked files other than results/ and Markdown differ from
    it: a record must not claim a commit whose code is not what ran (prose cannot change it)."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results",
                   ":(top,exclude,glob)**/*.md")
    return head.strip() + ("+modified" if changed else "")


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@lru_cache(maxsize=1)
def rendered_by() -> str:
    """The code that renders a report now: forkwise's version, its commit, and the packages."""
    versions = package_versions()
    forkwise = versions.pop("forkwise", "unknown")
    commit = git_commit()
    short = commit[:7] + ("+modified" if commit.endswith("+modified") else "") if commit != "unknown" else commit
    return f"forkwise {forkwise} at commit {short}; " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
