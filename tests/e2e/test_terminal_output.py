"""What the commands print for people: text from events is data, never markup, and the tables
follow the terminal's width with every id available in full."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvguard.actions import ActionResult
from kvguard.cli import main
from kvguard.detection import Finding
from kvguard.onboarding import _print_backfill, _print_doctor
from kvguard.outcome import Outcome
from kvguard.report import outcomes_table, summary_tokens
from kvguard.terminal import console, print_table, print_tokens

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "samples" / "scenarios"
UPN_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"

# Strings rich would read as markup: closing tags, styles, links, escapes and a trailing backslash.
MARKUP_SHAPED = st.one_of(
    st.sampled_from(["[/]", "[bold]x[/bold]", "Contoso.[bold]Hidden[/bold]Type", "[link=https://e.example]x[/link]",
                     "\\[red]", "a\\", "[/red]", "[@click=quit]", "[#ff0000 on blue]", "[]"]),
    st.text(alphabet="[]/\\=#@abz:. ", min_size=1, max_size=24).map(str.strip).filter(bool),
)


def _scenario(tmp_path: Path, upn: str) -> Path:
    """Sample 01 with the rogue caller's UPN replaced."""
    data = yaml.safe_load((SCENARIOS / "01-rogue-access-policy.yaml").read_text(encoding="utf-8"))
    for step in data["steps"]:
        claims = step.get("event", {}).get("data", {}).get("claims", {})
        if UPN_CLAIM in claims:
            claims[UPN_CLAIM] = upn
    path = tmp_path / "markup.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _replay(*argv: str) -> str:
    out = io.StringIO()
    assert main(["replay", *argv], out=out) == 0
    return out.getvalue()


# ---- item 4: text from events is data -----------------------------------------------------------


def test_a_caller_upn_holding_markup_is_printed_as_written(tmp_path: Path) -> None:
    upn = "j.[/]doe[bold]@contoso.example"
    output = _replay(str(_scenario(tmp_path, upn)), "--wide")
    assert f"First change to this vault by this caller: {upn}" in output


def _outcome(text: str) -> Outcome:
    finding = Finding(rule="KV-ID-05", title=f"First change by {text}", severity="low", score=20,
                      evidence={"caller": text}, mitre=("T1078.004",), remediation=None)
    return Outcome(event_id=text, outcome="processed", reason=text, vault=f"/subscriptions/x/{text}",
                   resource=f"/subscriptions/x/providers/{text}/r", risk=20, severity="low", findings=[finding],
                   actions=[ActionResult(handler="notify_webhook", status="applied", detail=text, rules=("KV-ID-05",))])


def _rendered(draw: Any) -> str:
    out = io.StringIO()
    draw(out)
    return out.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=MARKUP_SHAPED)
def test_every_table_prints_markup_shaped_text_literally(text: str) -> None:
    """The outcome table (replay, live replay, redrive), the summary, backfill's and the doctor's."""
    def outcomes(out: io.StringIO) -> None:
        target = console(out)
        print_table(target, outcomes_table([_outcome(text)], text, wide=True), wide=True)
        print_tokens(target, summary_tokens({"events": 1, "outcomes": {text: 1}, "findings": {text: 1},
                                             "actions": {text: {"applied": 1}}}))

    backfill = {"window": {"since": text, "until": text}, "mode": "dry run",
                "vaults": {text: {"events": 1, "findings": {text: 2}, "max_risk": 20}},
                "summary": {"events": 1, "outcomes": {text: 1}, "findings": {}, "actions": {}},
                "records": {"read": 1, "delivered": 1, "unfinished": 0, "unwatched": 0}}
    check = SimpleNamespace(subscription=text, check=text, ok=False, rule=None, detail=text, fix=text)
    for printed in (_rendered(outcomes), _rendered(lambda out: _print_backfill(backfill, out)),
                    _rendered(lambda out: _print_doctor([check], False, out))):
        assert text in printed


# ---- item 5: the terminal's width, full ids, tokens kept whole, a resource column ---------------


@pytest.mark.parametrize("columns", [60, 100, 140])
def test_tables_follow_the_columns_of_the_terminal(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    output = _replay(*map(str, sorted(SCENARIOS.glob("0[1-3]*.yaml"))))
    widths = {len(line) for line in output.splitlines()}
    assert max(widths) <= columns
    assert columns in widths  # the tables use the width they are given


def test_wide_prints_every_event_id_and_resource_id_whole_and_json_never_cuts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    path = str(SCENARIOS / "13-own-deployment-changed.yaml")
    records = [json.loads(line) for line in _replay(path, "--json").splitlines()][:-1]
    text = _replay(path, "--wide")
    table_lines = text.splitlines()
    for record in records:
        assert len(record["event_id"]) == 36
        assert any(record["event_id"] in line and record["resource"] in line for line in table_lines)


def test_the_summary_breaks_between_tokens_only(monkeypatch: pytest.MonkeyPatch) -> None:
    everything = sorted(map(str, SCENARIOS.glob("*.yaml")))
    *_, summary = (json.loads(line) for line in _replay(*everything, "--json").splitlines())
    for columns in (80, 120, 180):
        monkeypatch.setenv("COLUMNS", str(columns))
        lines = _replay(*everything).splitlines()
        for rule, count in summary["summary"]["findings"].items():
            assert any(f"{rule} x{count}" in line for line in lines), (columns, rule)
        for handler, statuses in summary["summary"]["actions"].items():
            token = f"{handler} " + " ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
            assert any(token in line for line in lines), (columns, token)


def test_a_record_that_is_not_a_vaults_names_its_resource_in_a_resource_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    path = str(SCENARIOS / "13-own-deployment-changed.yaml")
    [first, *_] = [json.loads(line) for line in _replay(path, "--json").splitlines()]
    assert first["vault"] is None and "/Microsoft.Web/sites/" in first["resource"]
    text = _replay(path)
    header = next(line for line in text.splitlines() if " event " in line)
    assert re.search(r"\bvault\b.*\bresource\b", header)
    site = first["resource"].rsplit("/", 1)[-1]
    row = next(line for line in text.splitlines() if first["event_id"][:8] in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[cells.index("processed") + 1] == "-"  # the vault column: no vault, not the app's name
    assert cells[cells.index("processed") + 2].startswith("sites/")
    assert site.startswith(cells[cells.index("processed") + 2].removeprefix("sites/"))
