"""checkov's Bicep checks: zero failures, every file parsed, and every skip justified inline."""

from __future__ import annotations

import re
from typing import Any

from tests.infra.bicep_tree import INFRA, bicep_files

SKIP = re.compile(r"//\s*checkov:skip=(?P<id>CKV2?_AZURE_\d+)(?P<rest>.*)$")


def test_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov_report["results"].get("failed_checks", [])
    ]
    assert checkov_report["summary"]["failed"] == 0 and not failed, "\n".join(failed)


def test_every_file_parsed_and_resources_were_checked(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    assert summary["parsing_errors"] == 0, checkov_report["results"].get("parsing_errors")
    assert summary["passed"] > 0
    assert summary["resource_count"] > 0
    checked_files = {c["file_path"] for c in checkov_report["results"]["passed_checks"]}
    for name in ("/modules/storage.bicep", "/modules/functionapp.bicep", "/modules/topic.bicep"):
        assert name in checked_files, f"checkov checked nothing in {name}"


def test_every_skip_carries_its_reason_inline() -> None:
    skips = 0
    for path in bicep_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" in line:
                match = SKIP.search(line)
                assert match, f"{path.name}:{number}: malformed skip: {line.strip()}"
                reason = match["rest"].removeprefix(":").strip()
                assert match["rest"].startswith(":") and len(reason) >= 20, f"{path.name}:{number}: skip without reason"
                skips += 1
    assert skips > 0


def test_every_skip_is_used_and_reported_with_its_reason(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    reported = {(c["file_path"], c["check_id"]) for c in skipped}
    assert all(c["check_result"].get("suppress_comment", "").strip() for c in skipped)
    for path in bicep_files():
        declared = {m["id"] for m in map(SKIP.search, path.read_text().splitlines()) if m}
        relative = "/" + path.relative_to(INFRA).as_posix()
        stale = sorted(i for i in declared if (relative, i) not in reported)
        assert not stale, f"{relative}: skips for checks that no longer fail or apply: {stale}"
    assert checkov_report["summary"]["skipped"] == len(skipped)
