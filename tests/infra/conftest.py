"""Fixtures for the offline infrastructure checks: every Bicep file parsed once, and one checkov
run per test session (it takes seconds, and every checkov test reads the same report)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_tree import INFRA, ROOT, Tree, bicep_files, parse


@pytest.fixture(scope="session")
def trees() -> dict[str, Tree]:
    """Every .bicep file under infra/, parsed, by path relative to infra/ (`modules/rbac.bicep`)."""
    return {path.relative_to(INFRA).as_posix(): parse(path) for path in bicep_files()}


@pytest.fixture(scope="session")
def kql(trees: dict[str, Tree]) -> dict[str, tuple[str, Any]]:
    """Every KQL text kvguard ships (and the deliberately wrong ones of test_kql), analysed by the
    Kusto language service in one node process for the whole session."""
    from tests.infra.test_kql import parse_all

    return parse_all(trees)


def checkov_command() -> str:
    """checkov lives in its own virtualenv (.venv-checkov): its pins conflict with the project's.
    KVGUARD_CHECKOV overrides the path."""
    candidates = [os.environ.get("KVGUARD_CHECKOV"), str(ROOT / ".venv-checkov" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("checkov")
    if found:
        return found
    pytest.fail("checkov is not installed: run `make infra-tools` (creates .venv-checkov)", pytrace=False)


@pytest.fixture(scope="session")
def checkov_report() -> dict[str, Any]:
    """`checkov --framework bicep -d infra -o json`, offline (--skip-download: no guidelines)."""
    command = [checkov_command(), "--framework", "bicep", "-d", str(INFRA), "-o", "json", "--skip-download"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False, cwd=ROOT)
    assert done.returncode in (0, 1), f"checkov crashed ({done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    # One framework gives one report object; checkov prints a list when several ran.
    if isinstance(report, list):
        bicep = [r for r in report if r.get("check_type") == "bicep"]
        assert len(bicep) == 1, f"expected one bicep report, got {[r.get('check_type') for r in report]}"
        report = bicep[0]
    assert report.get("check_type") == "bicep", f"unexpected checkov report: {str(report)[:500]}"
    return report
