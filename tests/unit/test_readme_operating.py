"""README "Operating kvguard" follows a broader-scope role assignment end to end: the row it shows
is the row kvguard.findings_table writes for the sample, and the Sentinel fields it lists are the
ones the rule forms from that row."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.unit.test_findings_table import sample_rows

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_ROW = re.compile(r"<!-- example row:.*?-->\n```json\n(.*?)```\n<!-- end of example row -->", re.DOTALL)


def test_the_example_row_is_what_kvguard_writes_for_sample_21() -> None:
    [block] = EXAMPLE_ROW.findall(README.read_text())
    shown = json.loads(block)
    [row] = [r for r in sample_rows("21") if r["RecordType"] == "finding" and r["Rule"] == "KV-RBAC-01"]
    assert shown == {name: row[name] for name in shown}
    assert {"ResourceId", "Scope", "VaultId", "Vaults"} <= set(shown)


def test_the_sentinel_fields_are_formed_from_that_row() -> None:
    text = README.read_text()
    section = text[text.index("### A broader-scope role assignment, end to end"):]
    [row] = [r for r in sample_rows("21") if r["RecordType"] == "finding" and r["Rule"] == "KV-RBAC-01"]
    assert f"| alert name | `kvguard {row['Rule']}: {row['Title']}` |" in section
    assert f"`FindingId` `{row['EventId']}/{row['Rule']}`" in section
    assert f"`KvguardSeverity`: {row['Severity']}" in section and row["Severity"] == "critical"
    assert f"`AadUserId` {row['CallerId']}, `FullName` {row['CallerUpn']}" in section
    [revert] = [r for r in sample_rows("21") if r["Handler"] == "remove_role_assignment"]
    assert f'`Remediation` `["{revert["Handler"]}: {revert["Status"]}"]`' in section
